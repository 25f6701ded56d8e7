"""Model B's object stream from RULSTM's EPIC-100 object LMDB (a small LMDB in the release's key format)."""

from __future__ import annotations

import lmdb
import numpy as np
import pytest
from _detections_fixtures import SEGMENTS, write_config

from extractors.detections import rulstm_objects as ro
from extractors.detections.official import DetectionFileError
from m3em.epic.features import FeatureFile, segment_positions


def _value(video: str, frame30: int) -> np.ndarray:
    """A recognisable vector: channel c of 30 fps frame f of video v."""
    base = 1000.0 * (1 + sum(map(ord, video)) % 7)
    return (base + frame30 + np.arange(352) / 1000.0).astype(np.float32)


def _write_lmdb(path, frames: dict[str, range], *, skip: tuple[str, int] | None = None, short: bool = False):
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for video, rng in frames.items():
            for f in rng:
                if skip == (video, f):
                    continue
                value = _value(video, f)
                txn.put(f"{video}_frame_{f:010d}.jpg".encode(), (value[:351] if short else value).tobytes())
    env.close()
    return path


def test_frame_mapping_matches_rulstm_boundaries():
    # 60 fps: RULSTM's 30 fps frame is n // 2 (P01_11_1: 93..147 -> 46..73; P01_14_263: 56431 -> 28215).
    np.testing.assert_array_equal(ro.rulstm_frame([1, 93, 147, 19636, 56431], 60.0), [1, 46, 73, 9818, 28215])
    # 50 fps: floor(0.6 n), at least 1.
    np.testing.assert_array_equal(ro.rulstm_frame([1, 2, 5, 407, 630], 50.0), [1, 1, 3, 244, 378])
    assert ro.rulstm_key("P01_11", 46) == "P01_11_frame_0000000046.jpg"


def test_cli_writes_object_stream_at_the_segment_positions(tmp_path):
    config = write_config(tmp_path, decode={"annotation_fps": "epic_release"},
                          detections={"object_features": {"mode": "agnostic", "score_threshold": 0.0, "n_positions": 5}})
    db = _write_lmdb(tmp_path / "obj", {"P02_101": range(1, 61), "P01_01": range(1, 41)})
    for video, fps in (("P02_101", 50.0), ("P01_01", 60.0)):
        out = tmp_path / "features" / "object" / f"{video}.safetensors"
        assert ro.main(["--config", str(config), "--video-id", video, "--lmdb", str(db), "--out", str(out)]) == 0
        ff = FeatureFile(out)
        segs = sorted((s, n, e) for n, v, _, s, e in SEGMENTS if v == video)
        assert ff.narration_ids == [n for _, n, _ in segs] and ff.shape == (len(segs), 5, 352)
        for i, (s, _, e) in enumerate(segs):
            pos = segment_positions(s, e, 5)
            np.testing.assert_array_equal(ff.frames[i], pos)  # annotation numbers, as the other streams
            expected = np.stack([_value(video, int(np.maximum(1, (n * 30) // int(fps)))) for n in pos])
            np.testing.assert_allclose(np.asarray(ff[i], np.float32), expected.astype(np.float16), rtol=1e-3)
        assert ff.producer["channels"] == 352 and ff.producer["annotation_fps"] == fps


def test_missing_key_and_bad_values_name_the_lmdb_and_key(tmp_path):
    frames = np.array([2, 30, 60])  # 50 fps -> 30 fps frames 1, 18, 36
    db = _write_lmdb(tmp_path / "gap", {"P02_101": range(1, 61)}, skip=("P02_101", 18))
    with pytest.raises(DetectionFileError, match=r"gap: key 'P02_101_frame_0000000018\.jpg' not found"):
        ro.read_rulstm_objects(db, "P02_101", ro.rulstm_frame(frames, 50.0))
    with pytest.raises(DetectionFileError, match=r"gap: key 'P02_999_frame_0000000001\.jpg' not found"):
        ro.read_rulstm_objects(db, "P02_999", [1])
    short = _write_lmdb(tmp_path / "short", {"P02_101": range(1, 3)}, short=True)
    with pytest.raises(DetectionFileError, match=r"short: key 'P02_101_frame_0000000001\.jpg' holds 1404 bytes"):
        ro.read_rulstm_objects(short, "P02_101", [1])
    with pytest.raises(DetectionFileError, match=r"nowhere: not an LMDB directory"):
        ro.read_rulstm_objects(tmp_path / "nowhere", "P02_101", [1])
    vec = ro.read_rulstm_objects(db, "P02_101", [1, 36, 1])
    np.testing.assert_array_equal(vec, np.stack([_value("P02_101", 1), _value("P02_101", 36), _value("P02_101", 1)]))
