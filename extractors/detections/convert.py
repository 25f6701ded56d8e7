"""Convert an official EPIC-100 hand-object pickle into the project's detection table.

``python -m extractors.detections.convert --config config.yaml --video-id P01_01
--input P01_01.pkl --out P01_01.parquet [--n-frames N]``

The frame count is checked exactly against ``--n-frames`` (e.g. ``rgb_n_frames`` of
``EPIC_100_frame_counts.csv`` or the decoded frame count) when given, else against
``fps * duration`` of the video table (``data.annotations_dir``) within
``detections.frame_count_tolerance``. Objects of the official files are class-agnostic: the table
gets ``label = -1`` and ``n_object_classes = 0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from extractors.detections.cli import open_annotations, run_video_command, video_parser
from extractors.detections.config import DetectionsConfig
from extractors.detections.official import DetectionFileError, read_official_columns
from extractors.detections.table import DetectionTable, boxes_from_official, write_detection_table
from m3em.epic.cli import load_job_config
from m3em.epic.config import DataConfig

log = logging.getLogger("extractors.detections.convert")
#: The module run by ``python -m`` (``__name__`` is then ``__main__``).
COMMAND = "extractors.detections.convert"


def check_frame_count(path: Path, n_found: int, *, fps: float, duration: float, tolerance: float) -> None:
    """Compare a file's frame count with ``fps * duration`` of the video table."""
    expected = fps * duration
    if abs(n_found - expected) > max(1.0, tolerance * expected):
        raise DetectionFileError(
            f"{path}: holds {n_found} frames, but the video table gives fps*duration = {fps}*{duration} = "
            f"{expected:.0f} (tolerance {tolerance:.1%}); wrong video, or pass --n-frames"
        )


def convert_official(
    input_path: str | Path,
    out_path: str | Path,
    *,
    video_id: str,
    n_frames: int | None = None,
    fps: float | None = None,
    duration: float | None = None,
    tolerance: float = 0.02,
) -> DetectionTable:
    """Read an official pickle (checked against ``video_id`` and the frame count) and write the table.

    Exactly one of ``n_frames`` or (``fps``, ``duration``) must be given.
    """
    input_path = Path(input_path)
    if (n_frames is None) == (fps is None or duration is None):
        raise ValueError("give either n_frames or both fps and duration")
    cols = read_official_columns(input_path, video_id=video_id, n_frames=n_frames)
    if n_frames is None:
        check_frame_count(input_path, cols.n_frames, fps=fps, duration=duration, tolerance=tolerance)
    if not cols.n_frames:
        raise DetectionFileError(f"{input_path}: holds no frames")
    return write_detection_table(
        out_path, boxes_from_official(cols), video_id=video_id, n_frames=cols.n_frames, n_object_classes=0,
        producer={"source": "official-epic-100-hand-object", "input": input_path.name},
    )


@dataclasses.dataclass(frozen=True)
class ConvertJobConfig:
    """The config sections ``python -m extractors.detections.convert`` reads."""

    data: DataConfig
    detections: DetectionsConfig


def _parser() -> argparse.ArgumentParser:
    parser = video_parser(COMMAND, __doc__,
                          config_help="config.yaml (detections.frame_count_tolerance, data.annotations_dir)")
    parser.add_argument("--input", required=True, type=Path, help="official <video_id>.pkl")
    parser.add_argument("--out", required=True, type=Path, help="detection table (.parquet)")
    parser.add_argument("--n-frames", type=int, default=None,
                        help="exact RGB frame count of the video (default: check fps*duration of the video table)")
    return parser


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, ConvertJobConfig)
    if args.n_frames is not None:
        table = convert_official(args.input, args.out, video_id=args.video_id, n_frames=args.n_frames)
    else:
        ann = open_annotations(job.data)
        fps = ann.fps(args.video_id)
        duration = float(ann.videos.at[args.video_id, "duration"])
        table = convert_official(args.input, args.out, video_id=args.video_id, fps=fps, duration=duration,
                                 tolerance=job.detections.frame_count_tolerance)
    log.info("%s: %s", args.out, table.summary())


def main(argv: Sequence[str] | None = None) -> int:
    return run_video_command(COMMAND, _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
