"""Writers of the demo's annotation files in the official EPIC-KITCHENS-100 CSV layout.

Same file names, columns and column order as the official release
(:data:`m3em.epic.annotations.OFFICIAL_LABELLED_COLUMNS` / ``OFFICIAL_TIMESTAMP_COLUMNS``), timestamps
formatted like the official ones (``00:00:03.37`` for start/stop, ``00:00:01.089`` for the
narration), list columns written like pandas writes Python lists (``['cup']``, ``[1]``). The CSV
module with ``\\n`` line ends makes the bytes depend on the rows only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from epic_demo.scene import Segment
from epic_demo.spec import NOUNS, VERBS, VideoSpec
from m3em.epic.annotations import (
    NOUN_CLASSES_FILE,
    OFFICIAL_LABELLED_COLUMNS,
    OFFICIAL_TIMESTAMP_COLUMNS,
    SPLIT_FILES,
    VERB_CLASSES_FILE,
    VIDEO_INFO_FILE,
)
from m3em.epic.atomic import atomic_write_text


def format_timestamp(seconds: float, decimals: int) -> str:
    """``HH:MM:SS.ss`` (2 decimals, start/stop) or ``HH:MM:SS.fff`` (3 decimals, narration)."""
    scale = 10**decimals
    ticks = int(round(seconds * scale))
    whole, frac = divmod(ticks, scale)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{frac:0{decimals}d}"


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def segment_rows(video: VideoSpec, segments: Sequence[Segment], labelled: bool) -> list[list[object]]:
    """The CSV rows of one video's segments (``narration_id = <video_id>_<i>``)."""
    fps = video.domain.fps
    rows = []
    for i, seg in enumerate(segments):
        start_s = (seg.start_frame - 1) / fps
        stop_s = (seg.stop_frame - 1) / fps
        verb, noun = VERBS[seg.verb], NOUNS[seg.noun]
        row: list[object] = [
            f"{video.video_id}_{i}", video.participant_id, video.video_id,
            format_timestamp(start_s + seg.narration_offset, 3),
            format_timestamp(start_s, 2), format_timestamp(stop_s, 2),
            seg.start_frame, seg.stop_frame,
        ]
        if labelled:
            row += [f"{verb.key} {noun.key}", verb.key, seg.verb, noun.key, seg.noun, f"['{noun.key}']", f"[{seg.noun}]"]
        rows.append(row)
    return rows


def write_split(path: Path, videos: Sequence[tuple[VideoSpec, Sequence[Segment]]], labelled: bool) -> None:
    """Write one split file (labelled layout or ``*_timestamps`` layout)."""
    header = OFFICIAL_LABELLED_COLUMNS if labelled else OFFICIAL_TIMESTAMP_COLUMNS
    rows = [r for video, segs in videos for r in segment_rows(video, segs, labelled)]
    atomic_write_text(path, _csv_text(header, rows))


def split_file(annotations_dir: Path, split: str) -> Path:
    """Where the official layout keeps a split's CSV."""
    return annotations_dir / "UDA_annotations" / f"{SPLIT_FILES[split]}.csv"


def write_class_files(annotations_dir: Path) -> None:
    """``EPIC_100_verb_classes.csv`` and ``EPIC_100_noun_classes.csv`` (id,key,instances,category)."""
    header = ("id", "key", "instances", "category")
    for name, classes in ((VERB_CLASSES_FILE, VERBS), (NOUN_CLASSES_FILE, NOUNS)):
        rows = [(i, c.key, str(list(c.instances)), c.category) for i, c in enumerate(classes)]
        atomic_write_text(annotations_dir / name, _csv_text(header, rows))


def write_video_info(annotations_dir: Path, videos: Sequence[VideoSpec]) -> None:
    """``EPIC_100_video_info.csv`` (video_id,duration,fps,resolution)."""
    rows = [(v.video_id, repr(float(v.seconds)), repr(float(v.domain.fps)), f"{v.width}x{v.height}") for v in videos]
    atomic_write_text(annotations_dir / VIDEO_INFO_FILE, _csv_text(("video_id", "duration", "fps", "resolution"), rows))
