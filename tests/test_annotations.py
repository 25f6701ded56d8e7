"""EPIC annotation I/O: the common schema, the reader's error cases, the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest

from m3em.epic.annotations import (
    BASE_COLUMNS,
    LABEL_COLUMNS,
    SPLITS,
    AnnotationError,
    EpicAnnotations,
    read_annotation_file,
    read_classes,
    read_video_info,
)
from m3em.epic.safe_pickle import UnsafePickleError, safe_load

LABELLED_CSV = "UDA_annotations/EPIC_100_uda_source_train.csv"


def test_slices_read_into_common_schema(epic_slice: Path) -> None:
    ann = EpicAnnotations.open(epic_slice)
    assert len(ann.verbs) == 97 and len(ann.nouns) == 300
    assert ann.verbs.keys[0] == "take" and ann.nouns.keys[0] == "tap"
    for split in SPLITS:
        df = ann.split(split)
        labelled = split in {"source_train", "source_val", "target_val"}
        assert tuple(df.columns) == BASE_COLUMNS + (LABEL_COLUMNS if labelled else ())
        assert len(df) == 40
        assert df["start_frame"].dtype == "int64"
    first = ann.split("source_train").iloc[0]
    assert (first.narration_id, first.start_frame, first.stop_frame, first.verb_class, first.noun_class) == (
        "P01_01_0", 8, 202, 3, 3,
    )
    assert ann.fps("P01_101") == 50.0


def test_pickle_and_csv_give_the_same_frame(epic_slice: Path) -> None:
    for stem in ("EPIC_100_uda_target_val", "EPIC_100_uda_target_test_timestamps"):
        a = read_annotation_file(epic_slice / "UDA_annotations" / f"{stem}.pkl")
        b = read_annotation_file(epic_slice / "UDA_annotations" / f"{stem}.csv")
        pd.testing.assert_frame_equal(a, b)


def test_full_official_files(official_epic: Path) -> None:
    """Row counts of the complete official files, CSV and (where shipped) pickle."""
    ann = EpicAnnotations.open(official_epic)
    expected = {
        "source_train": 16115, "target_train": 26115, "target_val": 7906,
        "target_test": 5909, "source_val": 5002, "source_test": 4298,
    }
    for split, n in expected.items():
        assert len(ann.split(split)) == n, split
    assert len(ann.verbs) == 97 and len(ann.nouns) == 300
    uda = official_epic / "UDA_annotations"
    for pkl in sorted(uda.glob("*.pkl")):
        from_pkl = read_annotation_file(pkl, n_verbs=97, n_nouns=300, video_ids=ann.videos.index)
        from_csv = read_annotation_file(pkl.with_suffix(".csv"))
        pd.testing.assert_frame_equal(from_pkl, from_csv)


def _broken_copy(epic_slice: Path, tmp_path: Path, edit) -> Path:
    df = pd.read_csv(epic_slice / LABELLED_CSV)
    df = edit(df)
    out = tmp_path / "broken.csv"
    df.to_csv(out, index=False)
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.drop(columns=["stop_frame"]), "missing column(s) ['stop_frame']"),
        (lambda d: d.assign(stop_frame=d.stop_frame.where(d.index != 3, 1)), "row 5 (narration_id P01_01_100): stop_frame is before start_frame"),
        (lambda d: d.assign(verb_class=d.verb_class.where(d.index != 2, 97)), "row 4 (narration_id P01_01_10): verb_class 97 out of range [0, 97)"),
        (lambda d: d.assign(noun_class=d.noun_class.where(d.index != 0, -1)), "noun_class -1 out of range"),
        (lambda d: d.assign(narration_id=d.narration_id.where(d.index != 7, "P01_01_0")), "row 9 (narration_id P01_01_0): duplicate narration_id"),
        (lambda d: d.assign(video_id=d.video_id.where(d.index != 1, "P99_99")), "row 3 (narration_id P01_01_1): video_id 'P99_99' is not in the video table"),
        (lambda d: d.assign(start_frame=d.start_frame.astype(object).where(d.index != 4, "x")), "start_frame must be an integer"),
        (lambda d: d.assign(narration_id=d.narration_id.where(d.index != 2, "")), "row 4 (narration_id nan): narration_id is empty"),
        (lambda d: d.assign(narration_id=d.narration_id.where(d.index != 2, "  ")), "row 4 (narration_id   ): narration_id is empty"),
        (lambda d: d.assign(participant_id=d.participant_id.where(d.index != 6, None)), "row 8 (narration_id P01_01_103): participant_id is empty"),
        (lambda d: d.assign(start_timestamp=d.start_timestamp.where(d.index != 3, "00:00:7.5")), "row 5 (narration_id P01_01_100): start_timestamp '00:00:7.5' is not a timestamp"),
        (lambda d: d.assign(stop_timestamp=d.stop_timestamp.where(d.index != 1, "soon")), "row 3 (narration_id P01_01_1): stop_timestamp 'soon' is not a timestamp"),
        (lambda d: d.assign(stop_timestamp=d.stop_timestamp.where(d.index != 1, "00:61:00.00")), "stop_timestamp '00:61:00.00' is not a timestamp"),
    ],
)
def test_reader_names_file_and_row(epic_slice: Path, tmp_path: Path, edit, message: str) -> None:
    path = _broken_copy(epic_slice, tmp_path, edit)
    videos = read_video_info(epic_slice / "EPIC_100_video_info.csv")
    with pytest.raises(AnnotationError) as err:
        read_annotation_file(path, n_verbs=97, n_nouns=300, video_ids=videos.index)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_file_and_missing_split(tmp_path: Path, epic_slice: Path) -> None:
    with pytest.raises(AnnotationError, match="annotation file not found"):
        read_annotation_file(tmp_path / "nope.csv")
    shutil.copytree(epic_slice, tmp_path / "ann")
    (tmp_path / "ann/UDA_annotations/EPIC_100_uda_target_val.csv").unlink()
    (tmp_path / "ann/UDA_annotations/EPIC_100_uda_target_val.pkl").unlink()
    with pytest.raises(AnnotationError, match="no annotation file for split 'target_val'"):
        EpicAnnotations.open(tmp_path / "ann").split("target_val")


def test_class_file_must_be_contiguous(tmp_path: Path, epic_slice: Path) -> None:
    df = pd.read_csv(epic_slice / "EPIC_100_verb_classes.csv").drop(index=5)
    df.to_csv(tmp_path / "verbs.csv", index=False)
    with pytest.raises(AnnotationError, match=r"verbs.csv: class ids must be 0..95 in order; row 7 has id 6"):
        read_classes(tmp_path / "verbs.csv")


def test_video_info_parses_resolution(epic_slice: Path) -> None:
    videos = read_video_info(epic_slice / "EPIC_100_video_info.csv")
    assert videos.loc["P01_101", ["width", "height", "fps"]].tolist() == [1920, 1080, 50.0]
    assert len(videos) == 700


class _Boom:
    """Unpickling this would call os.system."""

    def __reduce__(self):
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "EPIC_100_uda_target_val.pkl"
    evil.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle (posix|os)\.system"):
        safe_load(evil)
    with pytest.raises(AnnotationError, match="refusing to unpickle"):
        read_annotation_file(evil)
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_corrupt_pickle_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(AnnotationError, match="bad.pkl"):
        read_annotation_file(bad)
