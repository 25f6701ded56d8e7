"""Model B's object stream from the RULSTM EPIC-KITCHENS-100 object features (an LMDB).

The RULSTM release (repository ``fpv-iplab/rulstm``) ships, for EPIC-KITCHENS-100, per-frame
object-detector scores of a Faster R-CNN trained on EPIC's object annotations: an LMDB (the
``obj`` features) whose values are 352 float32 numbers (one per object class) and whose keys are
``<video_id>_frame_<%010d>.jpg`` over the video's frames resampled to 30 fps (1-based). Its
``RULSTM/dataset.py`` reads a value as ``np.frombuffer(value, 'float32')``.

Frames taken: the same ``P`` TSN positions per segment as the detection-based object stream
(:func:`m3em.epic.annotations.video_segments`,
:func:`m3em.epic.features.segment_positions`), in annotation frame numbers; each is mapped to the 30 fps
numbering by :func:`rulstm_frame`.

The mapping. RULSTM's EPIC-100 segment lists (``RULSTM/data/ek100/{training,validation}.csv``)
give each narration's start and end in its 30 fps frames; compared with the official annotation
files over the 59,435 narrations both hold, every one of them (start and end) equals
``max(1, floor(30 * t))`` with ``t`` the official timestamp in seconds. Annotation frame ``n`` of a
video annotated at ``fps`` is ``floor(fps * t)``, so we map ``n`` to ``max(1, floor(30 * n / fps))``:
exact on all 25,414 narrations of the 60 fps videos (the 30 fps frame is ``n // 2``); on the
50 fps videos (PXX_1YY) it matches 89 % of the boundaries and is one 30 fps frame early on the
rest (the 50 fps frame number has lost the part of the timestamp that decides them).

CLI: ``python -m extractors.detections.rulstm_objects --config config.yaml --video-id V
--lmdb <inputs.official_object_features_dir> --out <features_dir>/object/V.safetensors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from extractors.detections.cli import open_annotations, run_video_command, video_fps, video_parser
from extractors.detections.config import DetectionsConfig
from extractors.detections.official import DetectionFileError
from extractors.video import DecodeConfig
from m3em.epic.annotations import video_segments
from m3em.epic.cli import load_job_config
from m3em.epic.config import DataConfig
from m3em.epic.features import segments_frames, write_features

log = logging.getLogger("extractors.detections.rulstm_objects")
#: The module run by ``python -m`` (``__name__`` is then ``__main__``).
COMMAND = "extractors.detections.rulstm_objects"

#: Values per frame in the RULSTM EPIC-100 object LMDB (its detector's object classes).
RULSTM_OBJECT_CHANNELS = 352
#: The frame rate RULSTM resampled the videos to before extracting features.
RULSTM_FPS = 30


def rulstm_frame(frame_numbers: np.ndarray, fps: float) -> np.ndarray:
    """RULSTM's 1-based 30 fps frame of each 1-based annotation frame (see the module docstring).

    Args:
        frame_numbers: ``(N,)`` annotation frame numbers.
        fps: the video's annotation frame rate (60 or 50 for EPIC).

    Returns:
        ``(N,)`` int64, ``max(1, floor(30 * n / fps))``.
    """
    n = np.asarray(frame_numbers, dtype=np.int64)
    return np.maximum(1, np.floor(n * float(RULSTM_FPS) / float(fps)).astype(np.int64))


def rulstm_key(video_id: str, frame30: int) -> str:
    """The LMDB key of ``video_id``'s 30 fps frame ``frame30``."""
    return f"{video_id}_frame_{int(frame30):010d}.jpg"


def read_rulstm_objects(lmdb_dir: str | Path, video_id: str, frames30: np.ndarray) -> np.ndarray:
    """The object vectors of ``frames30`` (RULSTM 30 fps numbers) from the LMDB at ``lmdb_dir``.

    Returns:
        ``(N, 352)`` float32.

    Raises:
        DetectionFileError: the LMDB is missing, a key is absent, or a value is not 352 finite
            float32 numbers; the message names the LMDB and the key.
    """
    import lmdb  # only this input path needs it

    lmdb_dir = Path(lmdb_dir)
    if not (lmdb_dir / "data.mdb").is_file():
        raise DetectionFileError(f"{lmdb_dir}: not an LMDB directory (no data.mdb); "
                                 "inputs.official_object_features_dir must be RULSTM's EPIC-100 obj LMDB")
    frames30 = np.asarray(frames30, dtype=np.int64)
    uniq, inverse = np.unique(frames30, return_inverse=True)
    out = np.empty((len(uniq), RULSTM_OBJECT_CHANNELS), dtype=np.float32)
    env = lmdb.open(str(lmdb_dir), readonly=True, lock=False, readahead=False, subdir=True)
    try:
        with env.begin() as txn:
            for i, f in enumerate(uniq.tolist()):
                key = rulstm_key(video_id, f)
                value = txn.get(key.encode("utf-8"))
                if value is None:
                    raise DetectionFileError(f"{lmdb_dir}: key {key!r} not found (video {video_id}, 30 fps frame {f})")
                if len(value) != 4 * RULSTM_OBJECT_CHANNELS:
                    raise DetectionFileError(f"{lmdb_dir}: key {key!r} holds {len(value)} bytes, expected "
                                             f"{RULSTM_OBJECT_CHANNELS} float32 values ({4 * RULSTM_OBJECT_CHANNELS} bytes)")
                vec = np.frombuffer(value, dtype="<f4")
                if not np.isfinite(vec).all():
                    raise DetectionFileError(f"{lmdb_dir}: key {key!r} holds NaN or inf")
                out[i] = vec
    finally:
        env.close()
    return out[inverse]


def segment_objects(
    lmdb_dir: str | Path, video_id: str, segments, *, fps: float, n_positions: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``features (n_segments, P, 352)`` float32 and ``frames (n_segments, P)`` (annotation numbers).

    Args:
        segments: ``narration_id, start_frame, stop_frame`` rows (annotation frame numbers).
        fps: the video's annotation frame rate.
        n_positions: P.
    """
    frames = segments_frames(segments, n_positions)
    vec = read_rulstm_objects(lmdb_dir, video_id, rulstm_frame(frames.reshape(-1), fps))
    return vec.reshape(*frames.shape, RULSTM_OBJECT_CHANNELS), frames


@dataclasses.dataclass(frozen=True)
class RulstmObjectsJobConfig:
    """The config sections ``python -m extractors.detections.rulstm_objects`` reads."""

    data: DataConfig
    detections: DetectionsConfig
    decode: DecodeConfig


def _parser() -> argparse.ArgumentParser:
    parser = video_parser(COMMAND, __doc__,
                          config_help="config.yaml (detections.object_features, decode.annotation_fps, data.annotations_dir)")
    parser.add_argument("--lmdb", required=True, type=Path, help="RULSTM's EPIC-100 obj LMDB directory")
    parser.add_argument("--out", required=True, type=Path, help="feature file (<features_dir>/object/<video>.safetensors)")
    return parser


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, RulstmObjectsJobConfig)
    ann = open_annotations(job.data)
    fps = video_fps(ann, args.video_id, job.decode)
    segments = video_segments(ann, args.video_id)
    feats, frames = segment_objects(args.lmdb, args.video_id, segments, fps=fps,
                                    n_positions=job.detections.object_features.n_positions)
    write_features(args.out, feats, list(segments["narration_id"]), frames, stream="object", video_id=args.video_id,
                   producer={"recipe": "RULSTM EPIC-100 object-detector scores (obj LMDB)",
                             "channels": RULSTM_OBJECT_CHANNELS, "lmdb": str(args.lmdb), "annotation_fps": fps,
                             "frame_mapping": "max(1, floor(30 * n / annotation_fps))"})
    log.info("%s: %d segments x %d positions x %d channels", args.out, *feats.shape)


def main(argv: Sequence[str] | None = None) -> int:
    return run_video_command(COMMAND, _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
