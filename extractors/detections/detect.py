"""Detect hands and objects in every frame of a video with detectron2 and write the detection table.

``python -m extractors.detections.detect --config config.yaml --video-id P01_101
(--video videos/P01_101.MP4 | --frames-archive frames/P01_101.tar) --out P01_101.parquet``

Uses ``detections.hand_detector`` and/or ``detections.object_detector`` (at least one config
file must be set), ``detections.device`` / ``batch_size`` / ``frame_step``, and the frame reader
settings of the ``decode:`` section. Frames are read through :mod:`extractors.video`, so frame
numbers are the 1-based annotation frame numbers of every other stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from extractors.detections.cli import (
    object_class_count,
    open_annotations,
    run_video_command,
    video_fps,
    video_parser,
)
from extractors.detections.config import DetectionsConfig
from extractors.detections.detectron2_backend import (
    Detector,
    build_detector,
    detect_batches,
    load_detector_config,
    producer_info,
)
from extractors.detections.table import DetectionTable, write_detection_table
from extractors.video import DecodeConfig, FrameSource, iter_frame_batches, open_frames
from m3em.epic.cli import load_job_config
from m3em.epic.config import ConfigError, DataConfig
from m3em.runtime import resolve_device

log = logging.getLogger("extractors.detections.detect")
#: The module run by ``python -m`` (``__name__`` is then ``__main__``).
COMMAND = "extractors.detections.detect"


def load_detectors(cfg: DetectionsConfig, n_object_classes: int) -> tuple[Detector | None, Detector | None]:
    """Build the configured detectors (checking class counts against roles / the vocabulary)."""
    resolve_device(cfg.device, "detections.device")
    hand = obj = None
    hd, od = cfg.hand_detector, cfg.object_detector
    if hd.config_file is None and od.config_file is None:
        raise ConfigError("detections: neither hand_detector.config_file nor object_detector.config_file is set; "
                          "set one, or use official detections (inputs.official_detections_dir)")
    for det_cfg, name in ((hd, "hand_detector"), (od, "object_detector")):
        if (det_cfg.config_file is None) != (det_cfg.weights is None):
            raise ConfigError(f"detections.{name}: config_file and weights must be given together")
    if hd.config_file is not None:
        hand = build_detector(load_detector_config(hd.config_file), hd.weights, config_file=hd.config_file,
                              device=cfg.device, expected_classes=len(hd.class_roles),
                              score_threshold=min(hd.hand_score_threshold, hd.object_score_threshold))
    if od.config_file is not None:
        obj = build_detector(load_detector_config(od.config_file), od.weights, config_file=od.config_file,
                             device=cfg.device, expected_classes=n_object_classes, score_threshold=od.score_threshold)
    return hand, obj


def detect_video(
    source: FrameSource, out: str | Path, cfg: DetectionsConfig, *, hand: Detector | None, objects: Detector | None,
    n_object_classes: int, progress: bool = True,
) -> DetectionTable:
    """Run the detectors on frames ``1, 1+frame_step, ...`` of ``source`` and write the table."""
    numbers = np.arange(1, source.n_frames + 1, cfg.frame_step, dtype=np.int64)
    batches = iter_frame_batches(source, numbers, cfg.batch_size)
    n_batches = -(-len(numbers) // cfg.batch_size)
    bar = tqdm(batches, total=n_batches, desc=f"detect {source.video_id}", unit="batch", disable=not progress)
    hd = cfg.hand_detector
    boxes = detect_batches(bar, hand=hand, class_roles=hd.class_roles, hand_threshold=hd.hand_score_threshold,
                           hand_object_threshold=hd.object_score_threshold, objects=objects,
                           object_threshold=cfg.object_detector.score_threshold)
    return write_detection_table(
        out, boxes, video_id=source.video_id, n_frames=source.n_frames,
        n_object_classes=n_object_classes if objects is not None else 0,
        producer=producer_info(hand, objects, {"frame_step": cfg.frame_step, "frames": str(source.path),
                                               "frame_size": list(source.size)}),
    )


@dataclasses.dataclass(frozen=True)
class DetectJobConfig:
    """The config sections ``python -m extractors.detections.detect`` reads."""

    data: DataConfig
    detections: DetectionsConfig
    decode: DecodeConfig


def _parser() -> argparse.ArgumentParser:
    parser = video_parser(COMMAND, __doc__, config_help="config.yaml (detections:, decode:, data.annotations_dir)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", type=Path, help="the raw video file")
    src.add_argument("--frames-archive", type=Path, help="an official frame archive (tar of frame_%%010d.jpg)")
    parser.add_argument("--out", required=True, type=Path, help="detection table (.parquet)")
    return parser


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, DetectJobConfig)
    cfg, decode = job.detections, job.decode
    ann = open_annotations(job.data)
    n_object_classes = object_class_count(cfg, ann)
    fps = video_fps(ann, args.video_id, decode)
    source = open_frames(args.video_id, fps=fps, height=decode.height, video_path=args.video,
                         frames_archive=args.frames_archive, threads=decode.threads)
    hand, objects = load_detectors(cfg, n_object_classes)
    table = detect_video(source, args.out, cfg, hand=hand, objects=objects, n_object_classes=n_object_classes)
    log.info("%s: %s", args.out, table.summary())


def main(argv: Sequence[str] | None = None) -> int:
    return run_video_command(COMMAND, _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
