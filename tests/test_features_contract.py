"""The feature-file contract and the atomic writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3em.epic.atomic import atomic_output
from m3em.epic.features import FeatureFile, FeatureFileError, feature_path, segment_positions, write_features


def test_round_trip_spatial(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 8, 3, 3)).astype(np.float32)
    frames = np.tile(np.arange(1, 6), (4, 1))
    path = feature_path(tmp_path, "tbn_rgb", "P01_01")
    write_features(path, x, ["a", "b", "c", "d"], frames, stream="tbn_rgb", video_id="P01_01",
                   producer={"backbone": "tbn"})
    ff = FeatureFile(path)
    assert ff.shape == (4, 5, 8, 3, 3) and ff.stream == "tbn_rgb" and ff.video_id == "P01_01"
    assert ff[2].dtype == np.float16
    np.testing.assert_allclose(ff[ff.row_of["c"]], x[2], atol=2e-3)
    np.testing.assert_array_equal(ff.frames, frames)
    assert ff.producer == {"backbone": "tbn"}


@pytest.mark.parametrize(
    ("stream", "shape", "ids", "message"),
    [
        ("tbn_rgb", (2, 5, 8), ["a", "b"], "needs 5-d features"),
        ("object", (2, 5, 8, 1, 1), ["a", "b"], "needs 3-d features"),
        ("object", (3, 5, 8), ["a", "b"], "features must be"),
        ("object", (2, 5, 8), ["a", "a"], "duplicate narration ids"),
        ("nope", (2, 5, 8), ["a", "b"], "unknown stream"),
    ],
)
def test_writer_rejects_bad_input(tmp_path: Path, stream, shape, ids, message) -> None:
    with pytest.raises(FeatureFileError, match=message):
        write_features(tmp_path / "f.safetensors", np.zeros(shape), ids, np.ones(shape[:2]), stream=stream,
                       video_id="v")
    assert not list(tmp_path.iterdir()), "nothing may be left behind"


def test_writer_rejects_nan_and_fp16_overflow(tmp_path: Path) -> None:
    x = np.zeros((1, 2, 3))
    x[0, 1, 2] = np.nan
    with pytest.raises(FeatureFileError, match="NaN or inf"):
        write_features(tmp_path / "f.safetensors", x, ["a"], np.ones((1, 2)), stream="object", video_id="v")
    x[0, 1, 2] = 1e6  # beyond fp16 range
    with pytest.raises(FeatureFileError, match="NaN or inf"):
        write_features(tmp_path / "f.safetensors", x, ["a"], np.ones((1, 2)), stream="object", video_id="v")


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="feature file not found"):
        FeatureFile(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(FeatureFileError, match="junk.safetensors: not a readable safetensors file"):
        FeatureFile(junk)


def test_segment_positions_tsn_centres() -> None:
    np.testing.assert_array_equal(segment_positions(1, 100, 5), [11, 31, 51, 71, 91])
    # Short segments repeat frames but stay inside the segment.
    pos = segment_positions(10, 12, 5)
    assert pos.min() >= 10 and pos.max() <= 12 and np.all(np.diff(pos) >= 0)
    # A flow stack of 5 frames starting at each position stays inside long segments.
    pos = segment_positions(1, 50, 5, new_length=5)
    assert pos.max() + 4 <= 50


def test_atomic_output_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("complete")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_output_uses_normal_permissions(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "p.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644


def _raw_file(path: Path, features: np.ndarray, **meta_overrides: str) -> Path:
    """A feature file written past :func:`write_features` (as another tool or a broken copy would)."""
    from safetensors.numpy import save_file

    meta = {"format": "m3em-features/1", "stream": "object", "video_id": "v", "narration_ids": '["a", "b"]',
            "frames": "[[1, 2], [3, 4]]", "producer": "{}", **meta_overrides}
    save_file({"features": features}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("dtype", [np.int8, np.float32, np.uint16])
def test_reader_refuses_dtypes_other_than_fp16(tmp_path: Path, dtype) -> None:
    path = _raw_file(tmp_path / "f.safetensors", np.ones((2, 2, 3), dtype=dtype))
    with pytest.raises(FeatureFileError, match=r"f\.safetensors: tensor 'features' is .*the contract is F16"):
        FeatureFile(path)
    assert FeatureFile(_raw_file(tmp_path / "ok.safetensors", np.ones((2, 2, 3), np.float16))).shape == (2, 2, 3)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"narration_ids": '["a", "b"'}, "metadata 'narration_ids' is not valid JSON"),
        ({"frames": "[[1, 2], [3, 4]"}, "metadata 'frames' is not valid JSON"),
        ({"producer": "{backbone}"}, "metadata 'producer' is not valid JSON"),
        ({"narration_ids": '{"a": 1}'}, "metadata 'narration_ids' must be a JSON list of strings"),
        ({"narration_ids": "[1, 2]"}, "metadata 'narration_ids' must be a JSON list of strings"),
        ({"producer": "[1]"}, "metadata 'producer' must be a JSON object"),
        ({"frames": '[["x", 2], [3, 4]]'}, "metadata 'frames' is not a list of frame-number lists"),
        ({"frames": "[[1, 2, 3], [3, 4, 5]]"}, r"metadata 'frames' has shape \(2, 3\), features have \(2, 2\)"),
    ],
)
def test_reader_metadata_errors_name_the_file(tmp_path: Path, meta, message) -> None:
    path = _raw_file(tmp_path / "meta.safetensors", np.ones((2, 2, 3), np.float16), **meta)
    with pytest.raises(FeatureFileError, match=r"meta\.safetensors: " + message):
        FeatureFile(path)


_KILLED_WRITER = """
import os, signal, sys
from m3em.epic.atomic import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup runs, as with an OOM kill
"""


def test_rerun_removes_temporaries_of_a_killed_writer(tmp_path: Path) -> None:
    import subprocess
    import sys

    from workflow_util import REPO as REPO_ROOT

    target = tmp_path / "P01_01.tar"
    other = tmp_path / ".P01_02.tar.tmp.keep.tar"  # another output's temporary: not ours to remove
    other.write_text("x")
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], cwd=REPO_ROOT, check=False)
    assert proc.returncode == -9
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".P01_01.tar.tmp.")]
    assert len(left) == 1 and not target.exists()
    # A directory temporary is removed the same way.
    (tmp_path / ".P01_01.tar.tmp.dir.tar").mkdir()
    (tmp_path / ".P01_01.tar.tmp.dir.tar" / "member").write_text("x")
    with atomic_output(target) as tmp:
        tmp.write_text("complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".P01_02.tar.tmp.keep.tar", "P01_01.tar"]
    assert target.read_text() == "complete"


def test_a_file_without_segments_reads_back(tmp_path):
    """A video with no segment of the run's splits gives an empty file that reads back (frames (0, P))."""
    import numpy as np

    from m3em.epic.features import FeatureFile, write_features

    path = tmp_path / "object" / "V.safetensors"
    write_features(path, np.zeros((0, 5, 7), np.float16), [], np.zeros((0, 5), np.int64), stream="object", video_id="V")
    ff = FeatureFile(path)
    assert len(ff) == 0 and ff.frames.shape == (0, 5)
