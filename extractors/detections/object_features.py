"""Object features of model B (stream ``object``): per-frame detection-score vectors.

Recipe (RULSTM's object branch): the vector of a frame is, per object class, the **sum of the
scores** of that frame's detections of the class. It is taken at the ``P`` TSN positions of every
segment (:func:`m3em.epic.features.segment_positions`) and written as ``[n_segments, P, D]`` with
:func:`m3em.epic.features.write_features`.

Two explicit modes (``detections.object_features.mode``), never chosen silently:

* ``class_scores``: ``D`` = the object vocabulary (``detections.object_classes``); needs a
  table with labelled objects (a class-aware detector, ``n_object_classes == D``). A
  class-agnostic table is an error.
* ``agnostic``: for class-agnostic tables (the official EPIC boxes, the demo): ``D = 7``
  channels, the summed scores of :data:`AGNOSTIC_CHANNELS`: all objects, all hands, and hands per
  contact state (official ``HandState`` 0..4; hands of unknown state count only in ``hand``).

With ``detections.frame_step = k > 1`` the detector saw frames 1, 1+k, ...; a sampled frame then
takes the vector of the nearest processed frame (``frame_step`` is read from the table's
producer metadata).

CLI: ``python -m extractors.detections.object_features --config config.yaml --video-id V
--detections V.parquet --out <features_dir>/object/V.safetensors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from extractors.detections.cli import object_class_count, open_annotations, run_video_command, video_parser
from extractors.detections.config import DetectionsConfig, ObjectFeatureMode
from extractors.detections.official import DetectionFileError, HandState
from extractors.detections.table import DetectionTable, read_detection_table
from m3em.epic.annotations import video_segments
from m3em.epic.cli import load_job_config
from m3em.epic.config import DataConfig
from m3em.epic.features import segments_frames, write_features

log = logging.getLogger("extractors.detections.object_features")
#: The module run by ``python -m`` (``__name__`` is then ``__main__``).
COMMAND = "extractors.detections.object_features"

AGNOSTIC_CHANNELS: tuple[str, ...] = ("object", "hand", *(f"hand_{s.name.lower()}" for s in HandState))


def frame_vectors(
    table: DetectionTable, frame_numbers: np.ndarray, *, mode: ObjectFeatureMode, n_classes: int,
    score_threshold: float, source: str = "<table>",
) -> np.ndarray:
    """Per-frame object vectors.

    Args:
        table: the video's detections.
        frame_numbers: ``(N,)`` 1-based frames.
        mode: see the module docstring.
        n_classes: the object vocabulary size (``class_scores``); ignored for ``agnostic``.
        score_threshold: boxes with a lower score are ignored.
        source: file name for errors.

    Returns:
        ``(N, D)`` float32, ``D = n_classes`` or ``len(AGNOSTIC_CHANNELS)``.
    """
    frames = np.asarray(frame_numbers, dtype=np.int64)
    b = table.boxes[table.boxes["score"] >= score_threshold]
    uniq, inverse = np.unique(frames, return_inverse=True)
    row = pd.Index(uniq).get_indexer(b["frame"].to_numpy(np.int64))
    b, row = b[row >= 0], row[row >= 0]
    score = b["score"].to_numpy(np.float64)
    is_obj = (b["kind"] == "object").to_numpy()
    if mode is ObjectFeatureMode.CLASS_SCORES:
        if table.n_object_classes != n_classes:
            what = "class-agnostic (no class-aware object detector)" if table.n_object_classes == 0 else (
                f"labelled over {table.n_object_classes} classes")
            raise DetectionFileError(
                f"{source}: object features mode class_scores needs objects labelled over the {n_classes} classes "
                f"of the object vocabulary, but the table is {what}; run a class-aware object detector or set "
                "detections.object_features.mode: agnostic"
            )
        out = np.zeros((len(uniq), n_classes))
        label = b["label"].to_numpy(np.int64)
        keep = is_obj & (label >= 0)
        np.add.at(out, (row[keep], label[keep]), score[keep])
    else:
        out = np.zeros((len(uniq), len(AGNOSTIC_CHANNELS)))
        np.add.at(out[:, 0], row[is_obj], score[is_obj])
        np.add.at(out[:, 1], row[~is_obj], score[~is_obj])
        state = b["state"].to_numpy(np.int64)
        known = ~is_obj & (state >= 0)
        np.add.at(out, (row[known], 2 + state[known]), score[known])
    return out[inverse].astype(np.float32)


def segment_features(
    table: DetectionTable, segments: pd.DataFrame, *, mode: ObjectFeatureMode, n_classes: int,
    score_threshold: float, n_positions: int, source: str = "<table>",
) -> tuple[np.ndarray, np.ndarray]:
    """``features (n_segments, P, D)`` float32 and ``frames (n_segments, P)`` of the sampled frames."""
    frames = segments_frames(segments, n_positions)
    if len(frames) and frames.max() > table.n_frames:
        raise DetectionFileError(f"{source}: segments reach frame {frames.max()} but the table covers {table.n_frames}")
    step = int(table.producer.get("frame_step", 1))
    # Nearest processed frame (1, 1+step, ...), kept inside the video.
    processed = 1 + np.minimum(np.round((frames - 1) / step).astype(np.int64) * step, ((table.n_frames - 1) // step) * step)
    vec = frame_vectors(table, processed.reshape(-1), mode=mode, n_classes=n_classes,
                        score_threshold=score_threshold, source=source)
    return vec.reshape(*frames.shape, vec.shape[1]), frames


@dataclasses.dataclass(frozen=True)
class ObjectFeaturesJobConfig:
    """The config sections ``python -m extractors.detections.object_features`` reads."""

    data: DataConfig
    detections: DetectionsConfig


def _parser() -> argparse.ArgumentParser:
    parser = video_parser(COMMAND, __doc__, config_help="config.yaml (detections:, data.annotations_dir)")
    parser.add_argument("--detections", required=True, type=Path, help="the video's detection table (.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="feature file (<features_dir>/object/<video>.safetensors)")
    return parser


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, ObjectFeaturesJobConfig)
    ann = open_annotations(job.data)
    n_classes = object_class_count(job.detections, ann)
    table = read_detection_table(args.detections, video_id=args.video_id)
    segments = video_segments(ann, args.video_id)
    of = job.detections.object_features
    feats, frames = segment_features(table, segments, mode=of.mode, n_classes=n_classes,
                                     score_threshold=of.score_threshold, n_positions=of.n_positions,
                                     source=str(args.detections))
    channels = list(AGNOSTIC_CHANNELS) if of.mode is ObjectFeatureMode.AGNOSTIC else n_classes
    write_features(args.out, feats, list(segments["narration_id"]), frames, stream="object", video_id=args.video_id,
                   producer={"recipe": "sum of detection scores per class (RULSTM)", "mode": of.mode.value,
                             "channels": channels, "score_threshold": of.score_threshold,
                             "detections": args.detections.name, "detections_producer": dict(table.producer)})
    log.info("%s: %d segments x %d positions x %d channels", args.out, *feats.shape)


def main(argv: Sequence[str] | None = None) -> int:
    return run_video_command(COMMAND, _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
