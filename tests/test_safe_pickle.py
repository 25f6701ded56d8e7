"""The restricted unpickler against crafted pickles: each is refused with the file's name, nothing runs,
nothing is read out of bounds, and nothing allocates past the cap."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from workflow_util import REPO as REPO_ROOT

from m3em.epic import safe_pickle
from m3em.epic.annotations import AnnotationError, read_annotation_file
from m3em.epic.safe_pickle import UnsafePickleError, safe_load, safe_loads

PICKLES = REPO_ROOT / "tests" / "data" / "pickles"
FRAME = pd.DataFrame({"narration_id": ["P01_01_0", "P01_01_1"], "participant_id": ["P01", "P01"],
                      "video_id": ["P01_01", "P01_01"], "start_frame": [1, 50], "stop_frame": [40, 90],
                      "start_timestamp": ["00:00:00.00", "00:00:01.00"], "stop_timestamp": ["00:00:00.80", "00:00:01.80"]})


def _long(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("indexed", [False, True])
def test_dataframes_of_this_pandas_round_trip(tmp_path, protocol, indexed):
    # pandas 3 (the pinned version) writes pandas.RangeIndex, Arrow string columns, pandas.Index.
    df = FRAME.set_index("narration_id") if indexed else FRAME
    path = tmp_path / "EPIC_100_uda_target_test_timestamps.pkl"
    path.write_bytes(pickle.dumps(df, protocol=protocol))
    back = safe_load(path)
    pd.testing.assert_frame_equal(back, df)
    pd.testing.assert_frame_equal(read_annotation_file(path), read_annotation_file(_csv(tmp_path, FRAME)))


def _csv(tmp_path, df):
    path = tmp_path / "same.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["pandas2_labelled_protocol4.pkl", "pandas2_indexed_protocol2.pkl"])
def test_pickles_written_by_pandas_2_load(tmp_path, name):
    # Written by tests/data/pickles/make_pandas2_pickles.py under pandas 2.2.3 (object-dtype strings,
    # pandas.core.* names, categoricals); the docstring there says how to regenerate them.
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_pandas2_pickles", PICKLES / "make_pandas2_pickles.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    expected = maker.expected_frame()
    back = safe_load(PICKLES / name)
    if back.index.name == "narration_id":
        back = back.reset_index()
    assert list(back.columns) == list(expected.columns) and len(back) == 3
    assert back["narration_id"].tolist() == expected["narration_id"].tolist()
    assert back["verb"].tolist() == ["open", "take", "wash"] and back["all_noun_classes"].tolist() == [[8], [13], [5]]
    csv = tmp_path / "same.csv"
    expected.to_csv(csv, index=False)
    pd.testing.assert_frame_equal(read_annotation_file(PICKLES / name, n_verbs=97, n_nouns=300),
                                  read_annotation_file(csv, n_verbs=97, n_nouns=300))


def test_categorical_series_and_feature_dicts_round_trip():
    cat = pd.DataFrame({"c": pd.Categorical(["a", "b", "a"]), "x": [1.0, 2.0, 3.0]})
    pd.testing.assert_frame_equal(safe_loads(pickle.dumps(cat)), cat)
    feats = {"features": {"RGB": np.arange(12, dtype=np.float32).reshape(2, 6)}, "narration_ids": ["a", "b"]}
    back = safe_loads(pickle.dumps(feats, protocol=4))
    np.testing.assert_array_equal(back["features"]["RGB"], feats["features"]["RGB"])


def _lying_string_column() -> bytes:
    """A pandas-3 DataFrame pickle whose Arrow string column claims 127 bytes of a 5-byte buffer."""
    data = pickle.dumps(pd.DataFrame({"narration_id": ["ab", "cde"]}), protocol=2)
    good = b"\x02\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00"
    assert data.count(good) == 1
    return data.replace(good, b"\x02\x00\x00\x00\x00\x00\x00\x00\x7f\x00\x00\x00\x00\x00\x00\x00")


def test_arrow_buffers_that_lie_are_refused_not_read(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match=r"lying\.pkl: .*offsets run outside its 5-byte data buffer"):
        safe_loads(_lying_string_column(), "lying.pkl")
    # Reading it as an annotation file must fail with the name, not crash the process (it did: exit 139).
    path = tmp_path / "EPIC_100_uda_target_val.pkl"
    path.write_bytes(_lying_string_column())
    code = f"from m3em.epic.annotations import read_annotation_file\nread_annotation_file({str(path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "AnnotationError" in proc.stderr and str(path) in proc.stderr


def test_arrow_types_other_than_string_are_refused():
    data = pickle.dumps(pd.DataFrame({"narration_id": ["ab", "cde"]}), protocol=2)
    bad = data.replace(b"X\x0c\x00\x00\x00large_string", b"X\x0c\x00\x00\x00large_binary")
    with pytest.raises(UnsafePickleError, match="only string columns are admitted"):
        safe_loads(bad, "typ.pkl")


def test_fake_frames_from_admitted_names_are_errors_naming_the_file(tmp_path):
    # A DataFrame that never received its data (NEWOBJ without BUILD).
    empty = pickle.PROTO + b"\x02" + pickle.GLOBAL + b"pandas.core.frame\nDataFrame\n" + pickle.EMPTY_TUPLE \
        + pickle.NEWOBJ + pickle.STOP
    path = tmp_path / "EPIC_100_uda_source_val.pkl"
    path.write_bytes(empty)
    with pytest.raises(pickle.UnpicklingError, match=r"source_val\.pkl: .*DataFrame without data"):
        safe_load(path)
    with pytest.raises(AnnotationError, match=r"source_val\.pkl"):
        read_annotation_file(path)
    # A block manager with a state pandas no longer reads (pandas raises NotImplementedError).
    old_state = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"pandas.core.internals.managers\nBlockManager\n"
                 + pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.EMPTY_TUPLE + pickle.BUILD + pickle.STOP)
    with pytest.raises(pickle.UnpicklingError, match=r"old\.pkl: corrupt or unsupported pickle: NotImplementedError"):
        safe_loads(old_state, "old.pkl")
    # A block placed on a column the frame does not have.
    df = pd.DataFrame({"start_frame": [1, 2], "stop_frame": [3, 4]})
    blk = df._mgr.blocks[0]
    blk._mgr_locs = type(blk._mgr_locs)(np.array([0, 7]))
    with pytest.raises(pickle.UnpicklingError, match=r"placed.pkl: .*placed outside the 2 columns"):
        safe_loads(pickle.dumps(df), "placed.pkl")
    # Categorical codes beyond the categories (pandas would index out of bounds with them).
    cat = pd.Categorical(["a", "b"])
    cat._ndarray[:] = [0, 9]
    with pytest.raises(pickle.UnpicklingError, match=r"codes.pkl: .*categorical codes outside \[-1, 2\)"):
        safe_loads(pickle.dumps(pd.DataFrame({"c": cat})), "codes.pkl")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        # bytearray(10**15): a petabyte from 40 bytes.
        (pickle.GLOBAL + b"__builtin__\nbytearray\n" + _long(10**15) + pickle.TUPLE1 + pickle.REDUCE,
         "bytearray"),
        # numpy's array reconstructor with a huge shape.
        (pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + pickle.GLOBAL + b"numpy\nndarray\n"
         + _long(10**12) + pickle.TUPLE1 + pickle.SHORT_BINBYTES + b"\x01b" + pickle.TUPLE3 + pickle.REDUCE,
         "array shape"),
        # A list materialised from a lazy RangeIndex of 10**15 rows.
        (pickle.GLOBAL + b"builtins\nlist\n" + pickle.GLOBAL + b"pandas.core.indexes.base\n_new_Index\n"
         + pickle.GLOBAL + b"pandas\nRangeIndex\n" + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + b"\x04stop"
         + _long(10**15) + pickle.SETITEM + pickle.TUPLE2 + pickle.REDUCE + pickle.TUPLE1 + pickle.REDUCE,
         "RangeIndex"),
        # ndarray.__new__ with a shape.
        (pickle.GLOBAL + b"numpy\nndarray\n" + _long(10**12) + pickle.TUPLE1 + pickle.NEWOBJ, "NEWOBJ"),
    ],
)
def test_allocation_is_capped(payload, message):
    data = pickle.PROTO + b"\x02" + payload + pickle.STOP
    with pytest.raises(UnsafePickleError, match=r"big\.pkl: .*" + message):
        safe_loads(data, "big.pkl")


def test_repeated_copies_of_one_buffer_hit_the_cap():
    # 1 MiB held once, copied by bytearray() again and again through the memo.
    chunk = b"x" * 2**20
    n = safe_pickle.allocation_cap(2**20) // 2**20 + 2
    data = (pickle.PROTO + b"\x02" + pickle.MARK + pickle.BINBYTES + len(chunk).to_bytes(4, "little") + chunk
            + pickle.BINPUT + b"\x00" + pickle.POP
            + (pickle.GLOBAL + b"__builtin__\nbytearray\n" + pickle.BINGET + b"\x00" + pickle.TUPLE1 + pickle.REDUCE
               + pickle.POP) * n + pickle.POP_MARK + pickle.NONE + pickle.STOP)
    with pytest.raises(UnsafePickleError, match=r"copies\.pkl: bytearray\(\) would take the unpickled data past"):
        safe_loads(data, "copies.pkl")


def test_state_is_never_set_on_a_class():
    # BUILD on the DataFrame class itself would patch pandas for the whole process.
    data = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"pandas.core.frame\nDataFrame\n" + pickle.NONE
            + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + b"\x06to_csv" + pickle.NONE + pickle.SETITEM
            + pickle.TUPLE2 + pickle.BUILD + pickle.STOP)
    with pytest.raises(UnsafePickleError, match="BUILD on 'DataFrame' is not admitted"):
        safe_loads(data, "patch.pkl")
    assert callable(pd.DataFrame.to_csv)


def test_refused_detectron2_weights_name_the_file(tmp_path):
    from extractors.detections.detectron2_backend import DetectorConfigError, _load_checkpoint

    path = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": pd.Timestamp("2020-01-01").to_pydatetime().date()}, path)
    with pytest.raises(DetectorConfigError, match=r"model_final\.pth: not a weights-only torch checkpoint"):
        _load_checkpoint(path)
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DetectorConfigError, match=r"junk\.pth"):
        _load_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(DetectorConfigError, match=r"evil\.pkl: cannot load detector weights.*refusing"):
        (tmp_path / "evil.pkl").write_bytes(pickle.dumps(subprocess.run))
        _load_checkpoint(tmp_path / "evil.pkl")
