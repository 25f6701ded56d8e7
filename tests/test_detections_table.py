"""Detection table: schema, validation, and the official -> table converter (CLI)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from _detections_fixtures import write_config

from extractors.detections import convert
from extractors.detections.official import (
    DetectionFileError,
    FrameDetections,
    HandBox,
    ObjectBox,
    write_official_detections,
)
from extractors.detections.table import (
    COLUMNS,
    boxes_from_frames,
    empty_boxes,
    read_detection_table,
    write_detection_table,
)


def _frames(n: int) -> list[FrameDetections]:
    out = []
    for i in range(n):
        hands = (HandBox(0.1, 0.2, 0.3, 0.4, 0.9, i % 2, 3, 0.5, -0.25),) if i % 3 else ()
        objects = (ObjectBox(0.25, 0.25, 0.5, 0.75, 0.6), ObjectBox(0.0, 0.0, 1.0, 1.0, 0.02)) if i % 2 else ()
        out.append(FrameDetections(i + 1, hands, objects))
    return out


def test_round_trip_and_order(tmp_path):
    boxes = boxes_from_frames(_frames(6))
    path = tmp_path / "v.parquet"
    shuffled = boxes.sample(frac=1.0, random_state=0)
    written = write_detection_table(path, shuffled, video_id="v", n_frames=6, n_object_classes=0,
                                    producer={"source": "test"})
    table = read_detection_table(path, video_id="v", n_frames=6)
    assert list(table.boxes.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(table.boxes, written.boxes)
    assert table.producer == {"source": "test"} and table.n_object_classes == 0
    f = table.boxes["frame"].to_numpy()
    assert (np.diff(f) >= 0).all()
    # Within a frame: hands first, then objects by descending score.
    fr2 = table.boxes[table.boxes["frame"] == 2]
    assert list(fr2["kind"]) == ["hand", "object", "object"] and fr2["score"].iloc[1] > fr2["score"].iloc[2]
    assert table.objects()["offset_x"].isna().all() and not table.hands()["offset_x"].isna().any()
    assert len(boxes) == len(table.hands()) + len(table.objects())


def test_empty_table(tmp_path):
    write_detection_table(tmp_path / "e.parquet", empty_boxes(), video_id="e", n_frames=3, n_object_classes=5)
    t = read_detection_table(tmp_path / "e.parquet")
    assert len(t.boxes) == 0 and t.n_frames == 3 and t.n_object_classes == 5


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("x2", 1.5, r"outside \[0, 1\]"),
        ("x1", 0.45, "x1 > x2"),
        ("frame", 9, "frame outside 1..6"),
        ("score", -0.1, "score"),
        ("label", 3, "hands must have label -1"),
        ("side", 2, "hand side"),
        ("state", 7, "hand state"),
        ("offset_x", 1.5, "hand offset"),
        ("kind", "face", "kind must be"),
    ],
)
def test_validation_names_file_and_row(tmp_path, column, value, message):
    boxes = boxes_from_frames(_frames(6))
    row = int(np.flatnonzero(boxes["kind"] == "hand")[0])
    boxes.loc[row, column] = value
    path = tmp_path / "bad.parquet"
    with pytest.raises(DetectionFileError, match=rf"bad\.parquet: row {row} .*{message}"):
        write_detection_table(path, boxes, video_id="v", n_frames=6, n_object_classes=0)
    assert not path.exists()


def test_object_label_range(tmp_path):
    boxes = boxes_from_frames(_frames(4))
    obj = boxes["kind"] == "object"
    boxes.loc[obj, "label"] = 2
    write_detection_table(tmp_path / "ok.parquet", boxes, video_id="v", n_frames=4, n_object_classes=3)
    with pytest.raises(DetectionFileError, match=r"label outside -1..1"):
        write_detection_table(tmp_path / "bad.parquet", boxes, video_id="v", n_frames=4, n_object_classes=2)


def test_reader_checks_video_frames_and_corruption(tmp_path):
    path = tmp_path / "v.parquet"
    write_detection_table(path, boxes_from_frames(_frames(4)), video_id="v", n_frames=4, n_object_classes=0)
    with pytest.raises(DetectionFileError, match=r"v\.parquet: detections are for video 'v', expected 'w'"):
        read_detection_table(path, video_id="w")
    with pytest.raises(DetectionFileError, match=r"cover 4 frames, but the video has 5"):
        read_detection_table(path, n_frames=5)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DetectionFileError, match=r"v\.parquet: not a readable Parquet"):
        read_detection_table(path)
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(DetectionFileError, match=r"other\.parquet: metadata 'format'"):
        read_detection_table(tmp_path / "other.parquet")


def test_convert_cli_checks_video_table(tmp_path, capsys, caplog):
    config = write_config(tmp_path)
    pkl = tmp_path / "P02_101.pkl"
    write_official_detections(pkl, "P02_101", _frames(100))  # video table: 50 fps * 2 s
    out = tmp_path / "P02_101.parquet"
    with caplog.at_level(logging.INFO):
        assert convert.main(["--config", str(config), "--video-id", "P02_101", "--input", str(pkl),
                             "--out", str(out)]) == 0
    table = read_detection_table(out, video_id="P02_101", n_frames=100)
    assert table.producer["source"] == "official-epic-100-hand-object"
    assert len(table.boxes) == len(boxes_from_frames(_frames(100)))
    assert "100 frames" in caplog.text

    def error(*args: str) -> str:
        """The one stderr line of a refused conversion (exit status 1)."""
        capsys.readouterr()
        assert convert.main(["--config", str(config), "--out", str(out), *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("python -m extractors.detections.convert: error: ") and err.count("\n") == 1, err
        return err

    # Wrong frame count against the video table, and against an explicit --n-frames.
    short = tmp_path / "short.pkl"
    write_official_detections(short, "P02_101", _frames(90))
    assert f"{short}: holds 90 frames, but the video table gives" in error("--video-id", "P02_101", "--input", str(short))
    assert f"{short}: holds 90 frames, but the video has 91" in error("--video-id", "P02_101", "--input", str(short),
                                                                       "--n-frames", "91")
    # A file of another video.
    assert f"{pkl}: frame 1 is for video 'P02_101', expected 'P01_01'" in error("--video-id", "P01_01",
                                                                                "--input", str(pkl))
    # A corrupt pickle.
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"garbage")
    assert f"{bad}: " in error("--video-id", "P02_101", "--input", str(bad))
    # The earlier good output is untouched by the failed runs.
    assert read_detection_table(out).n_frames == 100


def test_frame_count_tolerance():
    convert.check_frame_count(convert.Path("x"), 6060, fps=59.94, duration=100.0, tolerance=0.02)
    with pytest.raises(DetectionFileError, match="x: holds 6200 frames"):
        convert.check_frame_count(convert.Path("x"), 6200, fps=59.94, duration=100.0, tolerance=0.02)


def test_fast_official_path_matches_dataclass_path(tmp_path):
    from extractors.detections.official import read_official_columns
    from extractors.detections.table import _sorted, boxes_from_official

    pkl = tmp_path / "v.pkl"
    write_official_detections(pkl, "v", _frames(9))
    cols = read_official_columns(pkl, video_id="v", n_frames=9)
    assert cols.video_id == "v" and cols.n_frames == 9
    pd.testing.assert_frame_equal(_sorted(boxes_from_official(cols)), _sorted(boxes_from_frames(_frames(9))))
