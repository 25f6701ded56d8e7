"""The demo's annotation files: its videos and segments as records of the one official-layout
writer (:mod:`m3em.epic.annotations`, "Writing the official layout")."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from epic_demo.scene import Segment
from epic_demo.spec import NOUNS, VERBS, VideoSpec
from m3em.epic import annotations as official


def narration_records(video: VideoSpec, segments: Sequence[Segment]) -> list[official.NarrationRecord]:
    """The records of one video's segments (``narration_id = <video_id>_<i>``), labels included."""
    return [
        official.NarrationRecord(
            narration_id=f"{video.video_id}_{i}", video_id=video.video_id, start_frame=seg.start_frame,
            stop_frame=seg.stop_frame, fps=video.domain.fps, narration_offset=seg.narration_offset,
            verb=VERBS[seg.verb].key, verb_class=seg.verb, noun=NOUNS[seg.noun].key, noun_class=seg.noun,
        )
        for i, seg in enumerate(segments)
    ]


def write_split(path: Path, videos: Sequence[tuple[VideoSpec, Sequence[Segment]]], labelled: bool) -> None:
    """Write one split file (labelled layout or ``*_timestamps`` layout)."""
    official.write_split(path, [r for video, segs in videos for r in narration_records(video, segs)], labelled)


def write_class_files(annotations_dir: Path) -> None:
    """The demo's verb and noun class files."""
    def records(classes):
        return [official.ClassRecord(c.key, tuple(c.instances), c.category) for c in classes]

    official.write_class_files(annotations_dir, records(VERBS), records(NOUNS))


def write_video_info(annotations_dir: Path, videos: Sequence[VideoSpec]) -> None:
    """The demo's video table (exact frame rates and durations)."""
    official.write_video_info(annotations_dir, [
        official.VideoRecord(v.video_id, float(v.seconds), float(v.domain.fps), v.width, v.height) for v in videos
    ])
