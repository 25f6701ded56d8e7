"""Regenerate the pandas-2 annotation pickles of tests/test_safe_pickle.py.

The project's environment pins pandas 3, whose pickles the tests write on the fly; what pandas 2
writes (other global names, object-dtype string columns) needs files written by pandas 2. To
regenerate them, in a throw-away environment outside the repository::

    python -m venv /tmp/pandas2 && /tmp/pandas2/bin/pip install "pandas==2.2.3"
    /tmp/pandas2/bin/python tests/data/pickles/make_pandas2_pickles.py tests/data/pickles

The frame is the one ``expected_frame()`` returns (the test rebuilds it with the current pandas).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pandas as pd


def expected_frame() -> pd.DataFrame:
    """Three rows in the official labelled layout (the columns the project reads, plus categoricals)."""
    return pd.DataFrame({
        "narration_id": ["P01_01_0", "P01_01_1", "P01_101_7"],
        "participant_id": ["P01", "P01", "P01"],
        "video_id": ["P01_01", "P01_01", "P01_101"],
        "narration_timestamp": ["00:00:00.50", "00:00:01.10", "00:01:00.00"],
        "start_timestamp": ["00:00:00.00", "00:00:01.00", "00:00:59.50"],
        "stop_timestamp": ["00:00:00.80", "00:00:01.80", "00:01:02.25"],
        "start_frame": [1, 61, 2976],
        "stop_frame": [48, 108, 3112],
        "narration": ["open door", "take cup", "wash pan"],
        "verb": pd.Categorical(["open", "take", "wash"]),
        "verb_class": [3, 0, 2],
        "noun": pd.Categorical(["door", "cup", "pan"]),
        "noun_class": [8, 13, 5],
        "all_nouns": [["door"], ["cup"], ["pan"]],
        "all_noun_classes": [[8], [13], [5]],
    })


def main(out_dir: str) -> None:
    out = Path(out_dir)
    major = int(pd.__version__.split(".")[0])
    if major != 2:
        raise SystemExit(f"run this with pandas 2 (found {pd.__version__})")
    df = expected_frame()
    (out / "pandas2_labelled_protocol4.pkl").write_bytes(pickle.dumps(df, protocol=4))
    (out / "pandas2_indexed_protocol2.pkl").write_bytes(pickle.dumps(df.set_index("narration_id"), protocol=2))
    print(f"wrote 2 pickles with pandas {pd.__version__} into {out}")


if __name__ == "__main__":
    main(sys.argv[1])
