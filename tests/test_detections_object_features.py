"""Object features (stream ``object``): per-class score sums at the segment positions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _detections_fixtures import N_NOUNS, SEGMENTS, write_config

from extractors.detections import object_features as of
from extractors.detections.config import ObjectFeatureMode
from extractors.detections.official import DetectionFileError
from extractors.detections.table import COLUMNS, write_detection_table
from m3em.epic.features import FeatureFile, segment_positions


def _boxes(rows):
    """rows: (frame, kind, score, label, state)."""
    data = {c: [] for c in COLUMNS}
    for frame, kind, score, label, state in rows:
        hand = kind == "hand"
        for c, v in zip(COLUMNS, (frame, kind, 0.1, 0.1, 0.2, 0.2, score, label, 0 if hand else -1, state,
                                  0.0 if hand else np.nan, 0.0 if hand else np.nan)):
            data[c].append(v)
    return pd.DataFrame(data).astype({"frame": "int32", "score": "float32", "label": "int32", "side": "int8",
                                      "state": "int8", "x1": "float32", "y1": "float32", "x2": "float32",
                                      "y2": "float32", "offset_x": "float32", "offset_y": "float32"})


ROWS = [(2, "object", 0.5, 1, -1), (2, "object", 0.25, 1, -1), (2, "object", 0.125, 3, -1),
        (2, "hand", 0.75, -1, 3), (2, "hand", 0.5, -1, -1), (5, "object", 0.5, 0, -1), (5, "hand", 1.0, -1, 4)]


def test_class_scores_and_agnostic_vectors(tmp_path):
    table = write_detection_table(tmp_path / "v.parquet", _boxes(ROWS), video_id="v", n_frames=6, n_object_classes=4)
    v = of.frame_vectors(table, np.array([2, 5, 1, 2]), mode=ObjectFeatureMode.CLASS_SCORES, n_classes=4,
                         score_threshold=0.0)
    np.testing.assert_allclose(v, [[0, 0.75, 0, 0.125], [0.5, 0, 0, 0], [0, 0, 0, 0], [0, 0.75, 0, 0.125]])
    v = of.frame_vectors(table, np.array([2]), mode=ObjectFeatureMode.CLASS_SCORES, n_classes=4, score_threshold=0.2)
    np.testing.assert_allclose(v, [[0, 0.75, 0, 0]])
    a = of.frame_vectors(table, np.array([2, 5]), mode=ObjectFeatureMode.AGNOSTIC, n_classes=4, score_threshold=0.0)
    assert a.shape == (2, len(of.AGNOSTIC_CHANNELS)) == (2, 7)
    # [object, hand, no_contact, self, other_person, portable, stationary]
    np.testing.assert_allclose(a, [[0.875, 1.25, 0, 0, 0, 0.75, 0], [0.5, 1.0, 0, 0, 0, 0, 1.0]])


def test_class_scores_refuses_agnostic_or_mismatched_tables(tmp_path):
    boxes = _boxes(ROWS)
    boxes.loc[boxes["kind"] == "object", "label"] = -1
    table = write_detection_table(tmp_path / "a.parquet", boxes, video_id="v", n_frames=6, n_object_classes=0)
    with pytest.raises(DetectionFileError, match=r"a\.parquet: .*class-agnostic.*mode: agnostic"):
        of.frame_vectors(table, np.array([2]), mode=ObjectFeatureMode.CLASS_SCORES, n_classes=4,
                         score_threshold=0.0, source=str(tmp_path / "a.parquet"))
    table = write_detection_table(tmp_path / "b.parquet", _boxes(ROWS), video_id="v", n_frames=6, n_object_classes=5)
    with pytest.raises(DetectionFileError, match="labelled over 5 classes"):
        of.frame_vectors(table, np.array([2]), mode=ObjectFeatureMode.CLASS_SCORES, n_classes=4, score_threshold=0.0)


def test_frame_step_uses_nearest_processed_frame(tmp_path):
    table = write_detection_table(tmp_path / "v.parquet", _boxes([(1, "object", 0.5, 0, -1), (4, "object", 0.25, 0, -1)]),
                                  video_id="v", n_frames=5, n_object_classes=1, producer={"frame_step": 3})
    segs = pd.DataFrame({"narration_id": ["a"], "start_frame": [1], "stop_frame": [5]})
    feats, frames = of.segment_features(table, segs, mode=ObjectFeatureMode.CLASS_SCORES, n_classes=1,
                                        score_threshold=0.0, n_positions=5)
    assert frames.tolist() == [[1, 2, 3, 4, 5]]
    # processed frames 1 and 4: 1,2 -> 1; 3,4,5 -> 4
    np.testing.assert_allclose(feats[0, :, 0], [0.5, 0.5, 0.25, 0.25, 0.25])


def test_cli_writes_object_stream(tmp_path, capsys):
    config = write_config(tmp_path, detections={"object_features": {"mode": "class_scores", "score_threshold": 0.0,
                                                                    "n_positions": 5}})
    rows = [(f, "object", 0.5, f % N_NOUNS, -1) for f in range(1, 101)]
    det = tmp_path / "P02_101.parquet"
    write_detection_table(det, _boxes(rows), video_id="P02_101", n_frames=100, n_object_classes=N_NOUNS)
    out = tmp_path / "features" / "object" / "P02_101.safetensors"
    assert of.main(["--config", str(config), "--video-id", "P02_101", "--detections", str(det), "--out", str(out)]) == 0
    ff = FeatureFile(out)
    segs = sorted((s, n, e) for n, v, _, s, e in SEGMENTS if v == "P02_101")
    assert ff.stream == "object" and ff.video_id == "P02_101"
    assert ff.narration_ids == [n for _, n, _ in segs]          # all splits, ordered by start frame
    for i, (s, _, e) in enumerate(segs):
        pos = segment_positions(s, e, 5)
        np.testing.assert_array_equal(ff.frames[i], pos)
        expected = np.zeros((5, N_NOUNS))
        expected[np.arange(5), pos % N_NOUNS] = 0.5
        np.testing.assert_allclose(np.asarray(ff[i], dtype=np.float64), expected)
    assert ff.producer["mode"] == "class_scores"
    # Agnostic table in class_scores mode: explicit error naming the file.
    agn = tmp_path / "agn.parquet"
    write_detection_table(agn, _boxes([(1, "object", 0.5, -1, -1)]), video_id="P02_101", n_frames=100,
                          n_object_classes=0)
    capsys.readouterr()
    assert of.main(["--config", str(config), "--video-id", "P02_101", "--detections", str(agn), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"python -m extractors.detections.object_features: error: {agn}: object features mode "
                          "class_scores needs objects labelled") and err.count("\n") == 1


def test_video_without_segments_gives_empty_features(tmp_path):
    table = write_detection_table(tmp_path / "v.parquet", _boxes(ROWS), video_id="v", n_frames=6, n_object_classes=4)
    segs = pd.DataFrame({"narration_id": [], "start_frame": [], "stop_frame": []})
    feats, frames = of.segment_features(table, segs, mode=ObjectFeatureMode.AGNOSTIC, n_classes=4,
                                        score_threshold=0.0, n_positions=5)
    assert feats.shape == (0, 5, 7) and frames.shape == (0, 5)
