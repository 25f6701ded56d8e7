"""Generate the whole demo dataset: videos, annotations, class files and hand-object detections.

Output layout under ``out_dir``::

    annotations/EPIC_100_verb_classes.csv, EPIC_100_noun_classes.csv, EPIC_100_video_info.csv
    annotations/UDA_annotations/EPIC_100_uda_<split>[_timestamps].csv
    videos/<video_id>.MP4                (H.264 + AAC, 60 fps source, 50 fps target)
    hand-objects/<video_id>.pkl          (official EPIC-100 hand-object format)
    target_test_labels.csv               (answers of target_test, for scoring only)
    source_test_labels.csv               (answers of source_test, when the size has one)
    demo_manifest.json                   (written last: what was generated, with sha256 sums)

Every random choice comes from the seed through one ``SeedSequence`` per video (keyed by the
video id), with separate streams for the plan, the pictures, the sound and the detections, so a
video does not change when another is added and the same seed gives the same dataset.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from epic_demo import annotations as ann
from epic_demo.audio import SAMPLE_RATE, soundtrack
from epic_demo.detections import noisy_detections
from epic_demo.encode import Mp4Writer
from epic_demo.scene import Scene, Segment, plan_segments
from epic_demo.spec import NOUNS, SIZES, VERBS, VideoSpec, plan_videos
from extractors.detections.official import write_official_detections
from m3em.epic import annotations as official
from m3em.epic.annotations import LABELLED_SPLITS
from m3em.epic.atomic import atomic_write_text

MANIFEST = "demo_manifest.json"
FORMAT = "epic-demo/1"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The ``demo:`` section of config.yaml."""

    enabled: bool
    seed: int
    size: str
    out_dir: Path


@dataclasses.dataclass(frozen=True)
class VideoRng:
    """Independent random streams of one video."""

    plan: np.random.Generator
    scene: np.random.Generator
    audio: np.random.Generator
    detections: np.random.Generator

    @classmethod
    def for_video(cls, seed: int, video_id: str) -> VideoRng:
        # crc32 is stable across runs and platforms (Python's hash() of a str is not).
        ss = np.random.SeedSequence([seed, zlib.crc32(video_id.encode("ascii"))])
        return cls(*(np.random.default_rng(s) for s in ss.spawn(4)))


def video_path(out_dir: Path, video_id: str) -> Path:
    return out_dir / "videos" / f"{video_id}.MP4"


def detections_path(out_dir: Path, video_id: str) -> Path:
    return out_dir / "hand-objects" / f"{video_id}.pkl"


def expected_outputs(out_dir: str | Path, size: str) -> list[Path]:
    """Every file ``generate_dataset(out_dir, size, ...)`` writes (for Snakemake outputs)."""
    out_dir = Path(out_dir)
    preset = SIZES[size]
    videos = plan_videos(preset)
    files = [out_dir / "annotations" / n for n in (official.VERB_CLASSES_FILE, official.NOUN_CLASSES_FILE, official.VIDEO_INFO_FILE)]
    files += [official.split_file(out_dir / "annotations", s) for s in preset.videos]
    files += [out_dir / f"{s}_labels.csv" for s in preset.videos if s.endswith("_test")]
    files += [video_path(out_dir, v.video_id) for v in videos]
    files += [detections_path(out_dir, v.video_id) for v in videos]
    files.append(out_dir / MANIFEST)
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render_video(out_dir: Path, video: VideoSpec, segments: tuple[Segment, ...], rng: VideoRng,
                 progress: Callable[[int], object] | None = None) -> None:
    """Render, encode and detect one video: writes its MP4 and its hand-object pickle."""
    scene = Scene(video, segments, rng.scene)
    audio = soundtrack(video, segments, rng.audio)
    fps = video.domain.fps
    frames = []
    with Mp4Writer(video_path(out_dir, video.video_id), width=video.width, height=video.height, fps=fps,
                   audio=audio, sample_rate=SAMPLE_RATE) as writer:
        for n in range(1, video.n_frames + 1):
            img, truth = scene.render(n)
            writer.write(img)
            frames.append(noisy_detections(n, truth, video.width, video.height, video.domain.miss_rate,
                                           rng.detections))
            if progress is not None:
                progress(1)
    write_official_detections(detections_path(out_dir, video.video_id), video.video_id, frames)


def generate_dataset(out_dir: str | Path, size: str, seed: int, *, jobs: int = 1, show_progress: bool = True) -> dict:
    """Write the demo dataset of ``size`` (tiny | default | large) under ``out_dir``.

    ``jobs`` videos are rendered in parallel processes (the output is the same for any ``jobs``).

    Returns:
        The manifest (also written to ``out_dir/demo_manifest.json``, last).
    """
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {sorted(SIZES)}")
    if seed < 0:
        raise ValueError(f"demo seed must be >= 0, got {seed}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out_dir = Path(out_dir)
    preset = SIZES[size]
    videos = plan_videos(preset)
    t0 = time.perf_counter()
    _remove_stale(out_dir, set(expected_outputs(out_dir, size)))
    rngs = {v.video_id: VideoRng.for_video(seed, v.video_id) for v in videos}
    plans = {v.video_id: plan_segments(v, rngs[v.video_id].plan) for v in videos}

    adir = out_dir / "annotations"
    ann.write_class_files(adir)
    ann.write_video_info(adir, videos)
    for split in preset.videos:
        members = [(v, plans[v.video_id]) for v in videos if v.split == split]
        labelled = split in LABELLED_SPLITS
        ann.write_split(official.split_file(adir, split), members, labelled)
        if split.endswith("_test"):  # the hidden answers, kept apart from the annotation directory
            ann.write_split(out_dir / f"{split}_labels.csv", members, labelled=True)

    total = sum(v.n_frames for v in videos)
    with tqdm(total=total, desc=f"demo {size}", unit="frame", disable=not show_progress) as bar:
        if jobs == 1:
            for v in videos:
                render_video(out_dir, v, plans[v.video_id], rngs[v.video_id], bar.update)
        else:
            # Videos are independent (own random streams), so the result does not depend on jobs.
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = {pool.submit(render_video, out_dir, v, plans[v.video_id], rngs[v.video_id]): v
                           for v in videos}
                for fut in concurrent.futures.as_completed(futures):
                    fut.result()  # re-raises a worker's error
                    bar.update(futures[fut].n_frames)

    files = sorted(p for p in expected_outputs(out_dir, size) if p.name != MANIFEST)
    manifest = {
        "format": FORMAT,
        "seed": seed,
        "size": size,
        "width": preset.width,
        "height": preset.height,
        "audio_sample_rate": SAMPLE_RATE,
        "verbs": [v.key for v in VERBS],
        "nouns": [n.key for n in NOUNS],
        "videos": {
            v.video_id: {
                "split": v.split, "domain": v.domain.name, "participant_id": v.participant_id,
                "fps": v.domain.fps, "n_frames": v.n_frames, "duration": float(v.seconds),
                "n_segments": len(plans[v.video_id]),
            }
            for v in videos
        },
        "files": {str(p.relative_to(out_dir)): _sha256(p) for p in files},
    }
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    manifest["seconds"] = time.perf_counter() - t0  # reported to the caller, not written (determinism)
    return manifest


def _remove_stale(out_dir: Path, keep: set[Path]) -> None:
    """Delete files an earlier demo run wrote (per its manifest) that this run will not rewrite.

    Otherwise a split file of a larger earlier size would still be read with this run's video
    table. Only files listed in our own manifest are touched.
    """
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{manifest}: not a demo manifest ({exc}); remove it or choose another out_dir") from exc
    if old.get("format") != FORMAT:
        raise ValueError(f"{manifest}: unknown manifest format {old.get('format')!r}")
    manifest.unlink()
    for rel in old.get("files", {}):
        path = out_dir / rel
        if path not in keep and path.exists():
            path.unlink()
