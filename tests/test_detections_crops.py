"""Crops: geometric properties (hypothesis), borrowing, smoothing, flow mapping, file I/O, CLI."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from _detections_fixtures import write_config
from hypothesis import given, settings
from hypothesis import strategies as st

from extractors.detections import crops as crops_mod
from extractors.detections.config import CropsConfig, FlowBox
from extractors.detections.crops import compute_crops, crops_for_table, read_crops, write_crops
from extractors.detections.official import DetectionFileError, FrameDetections, HandBox, ObjectBox
from extractors.detections.table import boxes_from_frames, write_detection_table

EPS = 1e-12


@st.composite
def box_sets(draw):
    n_frames = draw(st.integers(1, 30))
    k = draw(st.integers(0, 25))
    frames = np.array(draw(st.lists(st.integers(1, n_frames), min_size=k, max_size=k)), dtype=np.int64)
    coords = np.array(draw(st.lists(st.tuples(*[st.floats(0, 1)] * 4), min_size=k, max_size=k)), dtype=np.float64)
    coords = coords.reshape(-1, 4)
    boxes = np.stack([np.minimum(coords[:, 0], coords[:, 2]), np.minimum(coords[:, 1], coords[:, 3]),
                      np.maximum(coords[:, 0], coords[:, 2]), np.maximum(coords[:, 1], coords[:, 3])], axis=1)
    cfg = CropsConfig(margin=draw(st.floats(0, 1)), min_size=draw(st.floats(0.01, 1)),
                      smoothing_window=draw(st.integers(1, 9)), borrow_window=draw(st.integers(0, 10)))
    return frames, boxes, n_frames, cfg


@settings(max_examples=150, deadline=None)
@given(box_sets())
def test_crop_properties(data):
    frames, boxes, n_frames, cfg = data
    crops, source = compute_crops(frames, boxes, n_frames, cfg)
    assert crops.shape == (n_frames, 4) and source.shape == (n_frames,)
    # Inside the frame and non-empty.
    assert (crops >= 0).all() and (crops <= 1).all()
    # At least the minimum size on both axes.
    assert (crops[:, 2] - crops[:, 0] >= cfg.min_size - 1e-9).all()
    assert (crops[:, 3] - crops[:, 1] >= cfg.min_size - 1e-9).all()
    # Contains every kept box of its frame.
    c = crops[frames - 1]
    assert (c[:, 0] <= boxes[:, 0] + EPS).all() and (c[:, 1] <= boxes[:, 1] + EPS).all()
    assert (c[:, 2] >= boxes[:, 2] - EPS).all() and (c[:, 3] >= boxes[:, 3] - EPS).all()
    # Frames with a box are "detected"; others borrowed or full.
    detected = np.zeros(n_frames, bool)
    detected[frames - 1] = True
    assert ((source == 0) == detected).all()
    assert (crops[source == 2] == [0, 0, 1, 1]).all()


def test_margin_min_size_and_shift():
    cfg = CropsConfig(margin=0.5, min_size=0.3, smoothing_window=1, borrow_window=0)
    # 0.2 wide box at the left border: margin 0.1 each side -> [0, 0.5]; height 0.1 -> 0.2 -> min 0.3.
    crops, _ = compute_crops(np.array([1]), np.array([[0.0, 0.45, 0.2, 0.55]]), 1, cfg)
    np.testing.assert_allclose(crops[0], [0.0, 0.35, 0.3, 0.65])
    # Small box at the bottom-right corner: grown to min size, shifted back inside.
    crops, _ = compute_crops(np.array([1]), np.array([[0.95, 0.95, 1.0, 1.0]]), 1, cfg)
    np.testing.assert_allclose(crops[0], [0.7, 0.7, 1.0, 1.0])


def test_union_borrow_and_full_frame():
    cfg = CropsConfig(margin=0.0, min_size=0.1, smoothing_window=1, borrow_window=2)
    frames = np.array([3, 3, 10])
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.6, 0.7, 0.8], [0.4, 0.4, 0.6, 0.6]])
    crops, source = compute_crops(frames, boxes, 14, cfg)
    np.testing.assert_allclose(crops[2], [0.1, 0.1, 0.7, 0.8])            # union of frame 3
    assert list(source) == [1, 1, 0, 1, 1, 2, 2, 1, 1, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(crops[0], crops[2])                        # frame 1 borrows frame 3
    np.testing.assert_allclose(crops[8], crops[9])                        # frame 9 borrows frame 10
    np.testing.assert_allclose(crops[5], [0, 0, 1, 1])                    # frame 6: nothing within 2
    # Tie (frames 5 <- 3 and 7): the earlier frame wins.
    crops, source = compute_crops(np.array([3, 7]), boxes[[0, 2]], 9, CropsConfig(
        margin=0.0, min_size=0.1, smoothing_window=1, borrow_window=2))
    np.testing.assert_allclose(crops[4], crops[2])


def test_smoothing_only_grows_and_damps_jitter():
    n = 21
    rng = np.random.default_rng(0)
    centres = 0.5 + rng.choice([-0.1, 0.1], size=n)
    boxes = np.stack([centres - 0.05, np.full(n, 0.4), centres + 0.05, np.full(n, 0.6)], axis=1)
    frames = np.arange(1, n + 1)
    raw, _ = compute_crops(frames, boxes, n, CropsConfig(margin=0.0, min_size=0.1, smoothing_window=1))
    smooth, _ = compute_crops(frames, boxes, n, CropsConfig(margin=0.0, min_size=0.1, smoothing_window=7))
    assert (smooth[:, :2] <= raw[:, :2] + EPS).all() and (smooth[:, 2:] >= raw[:, 2:] - EPS).all()
    # The smoothed left edge moves less from frame to frame than the raw one.
    assert np.abs(np.diff(smooth[:, 0])).mean() < np.abs(np.diff(raw[:, 0])).mean()


def _table(tmp_path, n=12):
    frames = [FrameDetections(i + 1) for i in range(n)]
    frames[2] = FrameDetections(3, (HandBox(0.1, 0.5, 0.2, 0.7, 0.9, 0, 3, 0.1, 0.0),),
                                (ObjectBox(0.3, 0.3, 0.4, 0.4, 0.8), ObjectBox(0.8, 0.8, 0.9, 0.9, 0.3)))
    frames[8] = FrameDetections(9, (HandBox(0.6, 0.6, 0.9, 0.9, 0.4, 1, 0, 0.0, 0.0),), ())  # below 0.5
    path = tmp_path / "v.parquet"
    return write_detection_table(path, boxes_from_frames(frames), video_id="v", n_frames=n, n_object_classes=0), path


def test_thresholds_and_crop_table_io(tmp_path):
    table, _ = _table(tmp_path)
    cfg = CropsConfig(margin=0.0, min_size=0.1, smoothing_window=1, borrow_window=3)
    ct = crops_for_table(table, cfg)
    # Low-score boxes (object 0.3, hand 0.4) are not part of the crop.
    np.testing.assert_allclose(ct.boxes([3])[0], [0.1, 0.3, 0.4, 0.7], rtol=1e-6)
    assert list(ct.source[:7]) == ["borrowed"] * 2 + ["detected"] + ["borrowed"] * 3 + ["full"]
    out = tmp_path / "v.crops.parquet"
    write_crops(out, ct, cfg)
    back = read_crops(out, video_id="v", n_frames=12)
    np.testing.assert_array_equal(back.boxes_array, ct.boxes_array)
    assert back.boxes([1, 12, 3]).shape == (3, 4)
    with pytest.raises(IndexError, match="1..12"):
        back.boxes([13])
    with pytest.raises(DetectionFileError, match=r"crops\.parquet: crops are for video 'v', expected 'w'"):
        read_crops(out, video_id="w")
    with pytest.raises(DetectionFileError, match=r"crops\.parquet: crops cover 12 frames"):
        read_crops(out, n_frames=13)
    with pytest.raises(DetectionFileError, match="not found"):
        read_crops(tmp_path / "missing.parquet")


def test_flow_boxes_and_pixels(tmp_path):
    table, _ = _table(tmp_path)
    ct = crops_for_table(table, CropsConfig(margin=0.0, min_size=0.1, smoothing_window=1, borrow_window=0))
    # Flow frame 2 with stride 2, dilation 3 pairs RGB 3 and 6: first -> crop of 3; union with full frame 6.
    np.testing.assert_array_equal(ct.flow_boxes([2], stride=2, dilation=3, mode=FlowBox.FIRST), ct.boxes([3]))
    np.testing.assert_array_equal(ct.flow_boxes([2], stride=2, dilation=3, mode=FlowBox.UNION), [[0, 0, 1, 1]])
    # Stride 1 dilation 1, last flow frame clamps its second RGB frame to the video.
    assert ct.flow_boxes([12], stride=1, dilation=1).shape == (1, 4)
    px = ct.pixel_boxes([3, 7], 456, 256)
    assert px.dtype == np.int64 and (px[:, 2] > px[:, 0]).all() and (px[:, 3] > px[:, 1]).all()
    assert px[0].tolist() == [45, 76, 183, 180] and px[1].tolist() == [0, 0, 456, 256]


def test_crops_cli(tmp_path, capsys, caplog):
    config = write_config(tmp_path, crops={"smoothing_window": 3})
    _, det = _table(tmp_path)
    out = tmp_path / "out" / "v.crops.parquet"
    with caplog.at_level(logging.INFO):
        assert crops_mod.main(["--config", str(config), "--video-id", "v", "--detections", str(det),
                               "--out", str(out)]) == 0
    ct = read_crops(out, video_id="v")
    assert ct.n_frames == 12 and "12 frames" in caplog.text
    capsys.readouterr()
    assert crops_mod.main(["--config", str(config), "--video-id", "x", "--detections", str(det), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"python -m extractors.detections.crops: error: {det}: detections are for "
                                       "video 'v', expected 'x'\n")


def test_draw_cli_writes_png(tmp_path):
    import io
    import tarfile

    import cv2

    from extractors.detections import draw

    n = 100  # video table: P02_101 is 50 fps * 2 s
    frames = [FrameDetections(i + 1) for i in range(n)]
    frames[9] = FrameDetections(10, (HandBox(0.1, 0.5, 0.3, 0.9, 0.9, 0, 3, 0.1, 0.0),),
                                (ObjectBox(0.4, 0.4, 0.6, 0.6, 0.8), ObjectBox(0.7, 0.1, 0.8, 0.2, 0.1)))
    det = tmp_path / "P02_101.parquet"
    table = write_detection_table(det, boxes_from_frames(frames), video_id="P02_101", n_frames=n, n_object_classes=0)
    cfg = CropsConfig()
    crops = tmp_path / "P02_101.crops.parquet"
    write_crops(crops, crops_for_table(table, cfg), cfg)
    archive = tmp_path / "P02_101.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(1, n + 1):
            _, buf = cv2.imencode(".jpg", np.full((64, 112, 3), 90, np.uint8))
            info = tarfile.TarInfo(f"frame_{i:010d}.jpg")
            info.size = len(buf)
            tar.addfile(info, io.BytesIO(buf.tobytes()))
    config = write_config(tmp_path, decode={"height": 64})
    out = tmp_path / "check.png"
    assert draw.main(["--config", str(config), "--video-id", "P02_101", "--frames-archive", str(archive),
                      "--detections", str(det), "--crops", str(crops), "--out", str(out), "--frames", "10", "50",
                      "--columns", "2"]) == 0
    img = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert img.shape == (64, 2 * 112 + 2, 3)
    left = img[:, :112].reshape(-1, 3)
    for colour in (draw.CROP_COLOUR, draw.HAND_COLOURS[0], draw.OBJECT_COLOUR, draw.WEAK_COLOUR):
        assert (np.abs(left.astype(int) - colour).sum(1) < 30).any(), colour
    # Frame 50 has no box within the borrow window: only the full-frame crop is drawn.
    right = img[:, 114:].reshape(-1, 3)
    assert not (np.abs(right.astype(int) - draw.HAND_COLOURS[0]).sum(1) < 30).any()


def test_frame_step_needs_a_borrow_window(tmp_path):
    frames = [FrameDetections(i + 1) for i in range(20)]
    frames[0] = FrameDetections(1, (HandBox(0.1, 0.1, 0.3, 0.3, 0.9, 0, 0, 0.0, 0.0),), ())
    table = write_detection_table(tmp_path / "v.parquet", boxes_from_frames(frames), video_id="v", n_frames=20,
                                  n_object_classes=0, producer={"frame_step": 10})
    with pytest.raises(ValueError, match="borrow_window must be at least 5"):
        crops_for_table(table, CropsConfig(borrow_window=4))
    ct = crops_for_table(table, CropsConfig(borrow_window=5))
    assert list(ct.source[:7]) == ["detected"] + ["borrowed"] * 5 + ["full"]
