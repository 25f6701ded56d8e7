"""The generated demo dataset (tiny size): layout, annotation round trip, decoding, detections,
determinism, and the CLI's config handling."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import decord
import numpy as np
import pytest
import yaml

from epic_demo.__main__ import main
from epic_demo.encode import Mp4Writer
from epic_demo.generate import FORMAT, MANIFEST, _remove_stale, expected_outputs, generate_dataset
from epic_demo.spec import NOUNS, SIZES, VERBS, plan_videos
from extractors.detections.official import HandSide, read_official_detections
from m3em.epic.annotations import (
    OFFICIAL_LABELLED_COLUMNS,
    OFFICIAL_TIMESTAMP_COLUMNS,
    EpicAnnotations,
    format_timestamp,
    read_annotation_file,
    split_path,
)

REPO = Path(__file__).resolve().parents[1]
SEED = 3
TS2 = re.compile(r"^\d\d:\d\d:\d\d\.\d\d$")
TS3 = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    generate_dataset(out, "tiny", SEED, show_progress=False)
    return out


@pytest.fixture(scope="module")
def demo_again(tmp_path_factory) -> Path:
    """The same seed generated a second time, through the CLI, two videos at a time."""
    out = tmp_path_factory.mktemp("demo_again") / "demo"
    assert main(["--config", str(REPO / "config.yaml"), "--size", "tiny", "--seed", str(SEED), "--jobs", "2",
                 "--out-dir", str(out), "--no-progress"]) == 0
    return out


def test_layout_is_complete(demo: Path) -> None:
    expected = set(expected_outputs(demo, "tiny"))
    written = {p for p in demo.rglob("*") if p.is_file()}
    assert written == expected
    manifest = json.loads((demo / MANIFEST).read_text())
    assert manifest["seed"] == SEED and manifest["size"] == "tiny"
    assert set(manifest["files"]) == {str(p.relative_to(demo)) for p in expected if p.name != MANIFEST}


def test_annotations_round_trip(demo: Path) -> None:
    ann = EpicAnnotations.open(demo / "annotations")
    assert ann.verbs.keys == tuple(v.key for v in VERBS) and len(VERBS) >= 6
    assert ann.nouns.keys == tuple(n.key for n in NOUNS) and len(NOUNS) >= 8
    videos = {v.video_id: v for v in plan_videos(SIZES["tiny"])}
    assert set(ann.videos.index) == set(videos)
    for vid, v in videos.items():
        assert ann.fps(vid) == (60.0 if v.domain.name == "source" else 50.0)
        assert vid == (f"{v.participant_id}_0{vid[-1]}" if v.domain.name == "source" else f"{v.participant_id}_1{vid[-2:]}")
        assert (ann.videos.at[vid, "width"], ann.videos.at[vid, "height"]) == (128, 72)
    for split in SIZES["tiny"].videos:
        path = split_path(demo / "annotations", split)
        assert path.parent.name == "UDA_annotations" and path.suffix == ".csv"
        labelled = split in ("source_train", "source_val", "target_val")
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == (OFFICIAL_LABELLED_COLUMNS if labelled else OFFICIAL_TIMESTAMP_COLUMNS)
        for row in rows[1:]:
            rec = dict(zip(rows[0], row))
            assert TS3.match(rec["narration_timestamp"]) and TS2.match(rec["start_timestamp"])
            assert TS2.match(rec["stop_timestamp"])
            assert rec["participant_id"] == rec["video_id"].split("_")[0]
        df = ann.split(split)
        assert (df.groupby("video_id").size() >= 2).all()  # a run of segments in every video
        assert all(nid == f"{vid}_{i}" for vid, g in df.groupby("video_id") for i, nid in enumerate(g["narration_id"]))
        for r in df.itertuples():
            v = videos[r.video_id]
            assert v.split == split
            assert 1 <= r.start_frame < r.stop_frame <= v.n_frames
            # Timestamps are the times the frames show: frame n at (n - 1) / fps.
            assert r.start_timestamp == format_timestamp((r.start_frame - 1) / v.domain.fps, 2)
        if labelled:
            assert df["verb_class"].between(0, len(VERBS) - 1).all()
            assert df["noun_class"].between(0, len(NOUNS) - 1).all()
    answers = read_annotation_file(demo / "target_test_labels.csv", labelled=True, n_verbs=len(VERBS),
                                   n_nouns=len(NOUNS), video_ids=ann.videos.index)
    test = ann.split("target_test")
    assert list(answers["narration_id"]) == list(test["narration_id"])
    assert not (demo / "annotations" / "target_test_labels.csv").exists()


def test_videos_decode_at_stated_geometry(demo: Path) -> None:
    ann = EpicAnnotations.open(demo / "annotations")
    for v in plan_videos(SIZES["tiny"]):
        path = demo / "videos" / f"{v.video_id}.MP4"
        vr = decord.VideoReader(str(path), num_threads=1)
        duration = ann.videos.at[v.video_id, "duration"]
        assert len(vr) == v.n_frames == round(duration * ann.fps(v.video_id))
        assert vr.get_avg_fps() == pytest.approx(ann.fps(v.video_id))
        assert vr[0].shape == (72, 128, 3)
        ar = decord.AudioReader(str(path), sample_rate=24000, mono=True)
        # AAC frames are 1024 samples at 48 kHz: at most one extra frame of padding at 24 kHz.
        assert ar.shape[0] == 1
        assert duration * 24000 <= ar.shape[1] <= duration * 24000 + 1024
        audio = ar[:].asnumpy()[0]
        assert np.abs(audio).max() > 0.05  # the action sounds are there, not just room noise


def test_domains_differ_in_appearance(demo: Path) -> None:
    def mean_colour(vid: str) -> np.ndarray:
        vr = decord.VideoReader(str(demo / "videos" / f"{vid}.MP4"), num_threads=1)
        return vr.get_batch(list(range(0, len(vr), 25))).asnumpy().reshape(-1, 3).mean(0)

    src, tgt = mean_colour("P01_01"), mean_colour("P01_101")
    # Target: darker and bluer (colour cast), as in the later EPIC recordings' different camera.
    assert tgt.mean() < src.mean() - 10
    assert tgt[2] / tgt[0] > 1.2 * src[2] / src[0]


def test_detections_one_entry_per_frame(demo: Path) -> None:
    for v in plan_videos(SIZES["tiny"]):
        frames = read_official_detections(demo / "hand-objects" / f"{v.video_id}.pkl", video_id=v.video_id,
                                          n_frames=v.n_frames)
        right = [f for f in frames if any(h.side == HandSide.RIGHT for h in f.hands)]
        assert 0.75 * v.n_frames <= len(right) < v.n_frames  # realistic misses, but mostly found
        assert sum(len(f.objects) for f in frames) > v.n_frames  # the held object plus clutter


def test_same_seed_same_dataset(demo: Path, demo_again: Path) -> None:
    ann_files = sorted(p.relative_to(demo) for p in (demo / "annotations").rglob("*.csv"))
    assert ann_files
    for rel in ann_files:
        assert (demo / rel).read_bytes() == (demo_again / rel).read_bytes(), rel
    for v in plan_videos(SIZES["tiny"])[:2]:
        a = decord.VideoReader(str(demo / "videos" / f"{v.video_id}.MP4"), num_threads=1)
        b = decord.VideoReader(str(demo_again / "videos" / f"{v.video_id}.MP4"), num_threads=1)
        idx = list(range(len(a)))
        assert np.array_equal(a.get_batch(idx).asnumpy(), b.get_batch(idx).asnumpy())
    # The whole output, videos and pickles included, is byte-identical.
    files = json.loads((demo / MANIFEST).read_text())["files"]
    assert files == json.loads((demo_again / MANIFEST).read_text())["files"]


def test_disabled_demo_is_an_error(tmp_path: Path, capsys) -> None:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["demo"]["enabled"] = False
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path), "--out-dir", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith(f"python -m epic_demo: error: {path}: demo.enabled is false")
    assert not (tmp_path / "out").exists()


def test_timestamps_like_the_official_files() -> None:
    assert format_timestamp(3.37, 2) == "00:00:03.37"
    assert format_timestamp(1.0889, 3) == "00:00:01.089"
    assert format_timestamp(3725.5, 2) == "01:02:05.50"
    assert format_timestamp(59.999, 2) == "00:01:00.00"


def test_failed_encode_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "x.MP4"
    with pytest.raises(ValueError, match="expected \\(16, 32, 3\\) uint8"):
        with Mp4Writer(out, width=32, height=16, fps=50, audio=np.zeros(48000, np.float32), sample_rate=48000) as w:
            w.write(np.zeros((16, 32, 3), np.uint8))
            w.write(np.zeros((16, 30, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_stale_files_of_an_earlier_run_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / "annotations" / "UDA_annotations" / "EPIC_100_uda_source_test_timestamps.csv"
    kept = tmp_path / "annotations" / "EPIC_100_video_info.csv"
    foreign = tmp_path / "notes.txt"
    for p in (stale, kept, foreign):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    files = {str(p.relative_to(tmp_path)): "0" for p in (stale, kept)}
    (tmp_path / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}))
    _remove_stale(tmp_path, keep={kept})
    assert not stale.exists() and kept.exists() and foreign.exists()
    assert not (tmp_path / MANIFEST).exists()
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not a demo manifest"):
        _remove_stale(tmp_path, keep=set())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 7, 11])
def test_default_size_evaluates_on_at_least_150_segments(seed: int) -> None:
    """DESIGN section 6: the default demo's source_train and target_val hold >= 150 segments each,
    for any seed (the plan alone decides the counts; nothing is rendered here)."""
    from epic_demo.generate import VideoRng
    from epic_demo.scene import plan_segments

    counts: dict[str, int] = {}
    for v in plan_videos(SIZES["default"]):
        counts[v.split] = counts.get(v.split, 0) + len(plan_segments(v, VideoRng.for_video(seed, v.video_id).plan))
    assert counts["source_train"] >= 150 and counts["target_val"] >= 150, counts
    fps = {v.split: v.domain.fps for v in plan_videos(SIZES["default"])}
    assert fps["source_train"] == 30 and fps["target_val"] == 25  # fps_divisor 2 keeps the two rates apart
