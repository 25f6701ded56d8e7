"""What the per-video detection commands share: their arguments, annotations and frame rate.

``convert``, ``detect``, ``crops``, ``draw``, ``object_features`` and ``rulstm_objects`` each
handle one video: they take ``--config`` and ``--video-id``, read the config sections they
declare as a frozen dataclass (:func:`m3em.epic.cli.load_job_config`), look the video up in the
annotations of ``data.annotations_dir`` and run through :func:`m3em.epic.cli.run_entry_point`. Those
steps live here once instead of in each command.

Imports stay light (no OpenCV, no detectron2): the detection package is cheap to import.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.cli import run_entry_point
from m3em.epic.config import DataConfig

if TYPE_CHECKING:
    from extractors.detections.config import DetectionsConfig
    from extractors.video import DecodeConfig


def prog_of(module: str) -> str:
    """How a command names itself in usage and error lines: ``python -m <module>``."""
    return f"python -m {module}"


def video_parser(module: str, doc: str | None, *, config_help: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>`` with the ``--config`` and ``--video-id`` every command takes.

    Args:
        module: the command's module (``extractors.detections.crops``).
        doc: its module docstring; the first paragraph is the description.
        config_help: which config sections the command reads, for ``--help``.
    """
    parser = argparse.ArgumentParser(prog=prog_of(module), description=(doc or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help=config_help)
    parser.add_argument("--video-id", required=True, help="video id, e.g. P01_101")
    return parser


def run_video_command(module: str, parser: argparse.ArgumentParser,
                      body: Callable[[argparse.Namespace], None], argv: Sequence[str] | None) -> int:
    """:func:`m3em.epic.cli.run_entry_point` under the command's ``python -m`` name."""
    return run_entry_point(prog_of(module), parser, body, argv)


def open_annotations(data: DataConfig) -> EpicAnnotations:
    """The annotations of ``data.annotations_dir`` (video table, class files, splits)."""
    return EpicAnnotations.open(data.annotations_dir)


def video_fps(annotations: EpicAnnotations, video_id: str, decode: DecodeConfig) -> float:
    """The annotation frame rate of ``video_id``: the video table under ``decode.annotation_fps``."""
    from extractors.video import annotation_fps  # OpenCV: only the commands that read frames need it

    return annotation_fps(video_id, annotations.fps(video_id), decode.annotation_fps)


def object_class_count(detections: DetectionsConfig, annotations: EpicAnnotations) -> int:
    """``detections.object_classes``: the size of the noun vocabulary (``nouns``) or the number given."""
    if detections.object_classes == "nouns":
        return len(annotations.nouns)
    return int(detections.object_classes)
