"""The feature-file contract between the extractors and the models (DESIGN section 3).

One file per (video, stream): ``<features_dir>/<stream>/<video_id>.safetensors`` holding

* tensor ``features``: fp16, ``[n_segments, P, C, h, w]`` for spatial streams or
  ``[n_segments, P, D]`` for vector streams, rows in the order of ``narration_ids``;
* metadata (strings): ``format`` (``m3em-features/1``), ``stream``, ``video_id``,
  ``narration_ids`` (JSON list), ``frames`` (JSON list of the P sampled 1-based frame numbers per
  segment), and ``producer`` (JSON: backbone, weights, decoder; whatever the writer records).

safetensors is memory-mapped: readers take one segment at a time and never load a split into RAM.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from m3em.epic.atomic import atomic_output
from m3em.epic.errors import InputError
from m3em.epic.streams import EXTRACTED_STREAMS, SPATIAL_STREAMS, STREAMS

FORMAT = "m3em-features/1"



@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """The ``features:`` section: where the feature files are and P, read by extraction and training
    alike, plus how ``extractors.extract`` computes them (batch, device, precision, streams)."""

    features_dir: Path = Path("results/features")
    positions: int = 5
    batch_size: int = 512
    device: str = "cuda"
    num_workers: int = 8
    autocast: str = "bf16"
    channels_last: bool = True
    streams: tuple[str, ...] = EXTRACTED_STREAMS


class FeatureFileError(ValueError, InputError):
    """A feature file that breaks the contract; the message names the file and the key."""


def feature_path(features_dir: str | Path, stream: str, video_id: str) -> Path:
    """Where the features of ``stream`` for ``video_id`` live."""
    if stream not in STREAMS:
        raise FeatureFileError(f"unknown stream {stream!r}; known: {list(STREAMS)}")
    return Path(features_dir) / stream / f"{video_id}.safetensors"


def segment_positions(start_frame: int, stop_frame: int, n_positions: int, new_length: int = 1) -> np.ndarray:
    """TSN-style test sampling: the centre of each of ``n_positions`` equal chunks of a segment.

    Matches TBN's ``_get_test_indices``: ``tick = (n - new_length + 1) / P``, offset
    ``int(tick/2 + tick*x)``. Segments shorter than ``P`` frames repeat frames (EPIC has target
    segments of 5 frames).

    Args:
        start_frame, stop_frame: 1-based inclusive frame range of the segment.
        n_positions: P.
        new_length: frames consumed from each position (5 for a TBN flow stack), kept inside the
            segment when it is long enough.

    Returns:
        int64 array ``(P,)`` of 1-based frame numbers, non-decreasing, within the segment.
    """
    n = stop_frame - start_frame + 1
    usable = max(n - new_length + 1, 1)
    tick = usable / n_positions
    offsets = np.array([int(tick / 2.0 + tick * x) for x in range(n_positions)], dtype=np.int64)
    return start_frame + np.minimum(offsets, usable - 1)


def select_positions(stored: int, wanted: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Which of ``stored`` positions to use for ``wanted``: the centre of each of ``wanted`` chunks
    (a feature file, or an official pickle, may store more positions than the P a model reads).

    With ``rng`` a random position inside each chunk is taken instead (temporal jitter, not in
    the reference).
    """
    if stored < wanted:
        raise ValueError(f"{stored} stored positions cannot give {wanted}")
    if stored == wanted:
        return np.arange(wanted)
    tick = stored / wanted
    if rng is None:
        return np.array([int(tick / 2.0 + tick * x) for x in range(wanted)], dtype=np.int64)
    starts = np.array([int(tick * x) for x in range(wanted)] + [stored])
    return np.array([rng.integers(starts[x], max(starts[x + 1], starts[x] + 1)) for x in range(wanted)], dtype=np.int64)


def segments_frames(segments, n_positions: int) -> np.ndarray:
    """``(n_segments, P)`` sampled frames (:func:`segment_positions`) of the rows of ``segments``
    (a DataFrame with ``start_frame`` / ``stop_frame``); ``(0, P)`` when there are none."""
    if len(segments) == 0:
        return np.zeros((0, n_positions), dtype=np.int64)
    return np.stack([segment_positions(int(s), int(e), n_positions)
                     for s, e in zip(segments["start_frame"], segments["stop_frame"])])


def write_features(
    path: str | Path,
    features: np.ndarray,
    narration_ids: Sequence[str],
    frames: np.ndarray,
    *,
    stream: str,
    video_id: str,
    producer: Mapping[str, Any] | None = None,
) -> None:
    """Write one (video, stream) feature file atomically.

    Args:
        path: destination (normally :func:`feature_path`).
        features: ``[n_segments, P, ...]``; cast to fp16. Must be finite.
        narration_ids: one id per row.
        frames: ``[n_segments, P]`` sampled 1-based frame numbers.
        stream: stream name (one of :data:`STREAMS`).
        video_id: the video.
        producer: JSON-serialisable description of what made the features.
    """
    path = Path(path)
    if stream not in STREAMS:
        raise FeatureFileError(f"{path}: unknown stream {stream!r}")
    features = np.asarray(features)
    if features.ndim < 3 or features.shape[0] != len(narration_ids):
        raise FeatureFileError(
            f"{path}: features must be [n_segments={len(narration_ids)}, P, ...], got {features.shape}"
        )
    expected_ndim = 5 if stream in SPATIAL_STREAMS else 3
    if features.ndim != expected_ndim:
        raise FeatureFileError(f"{path}: stream {stream} needs {expected_ndim}-d features, got {features.shape}")
    frames = np.asarray(frames, dtype=np.int64)
    if frames.shape != features.shape[:2]:
        raise FeatureFileError(f"{path}: frames shape {frames.shape} != features {features.shape[:2]}")
    with np.errstate(over="ignore"):  # overflow is detected just below
        half = features.astype(np.float16)
    if not np.isfinite(half).all():
        raise FeatureFileError(f"{path}: features contain NaN or inf (or overflow fp16)")
    if len(set(narration_ids)) != len(narration_ids):
        raise FeatureFileError(f"{path}: duplicate narration ids")
    metadata = {
        "format": FORMAT,
        "stream": stream,
        "video_id": video_id,
        "narration_ids": json.dumps(list(map(str, narration_ids))),
        "frames": json.dumps(frames.tolist()),
        "producer": json.dumps(dict(producer or {}), sort_keys=True),
    }
    with atomic_output(path) as tmp:
        save_file({"features": np.ascontiguousarray(half)}, str(tmp), metadata=metadata)


class FeatureFile:
    """Lazy, memory-mapped reader of one feature file.

    ``ff[i]`` returns the ``(P, ...)`` float16 array of row ``i``; ``ff.row_of[nid]`` maps a
    narration id to its row.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FeatureFileError(f"{self.path}: feature file not found")
        try:
            self._handle = safe_open(str(self.path), framework="np")
        except Exception as exc:
            raise FeatureFileError(f"{self.path}: not a readable safetensors file: {exc}") from exc
        meta = self._handle.metadata() or {}
        if meta.get("format") != FORMAT:
            raise FeatureFileError(f"{self.path}: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
        for key in ("stream", "video_id", "narration_ids", "frames"):
            if key not in meta:
                raise FeatureFileError(f"{self.path}: metadata key {key!r} missing")
        if "features" not in self._handle.keys():
            raise FeatureFileError(f"{self.path}: tensor 'features' missing")
        self.stream: str = meta["stream"]
        self.video_id: str = meta["video_id"]
        self.narration_ids: list[str] = self._json(meta, "narration_ids")
        if not isinstance(self.narration_ids, list) or not all(isinstance(n, str) for n in self.narration_ids):
            raise FeatureFileError(f"{self.path}: metadata 'narration_ids' must be a JSON list of strings")
        frames = self._json(meta, "frames")
        self.producer: dict = self._json(meta, "producer", "{}")
        if not isinstance(self.producer, dict):
            raise FeatureFileError(f"{self.path}: metadata 'producer' must be a JSON object")
        self._slice = self._handle.get_slice("features")
        dtype = self._slice.get_dtype()
        if dtype != "F16":  # the contract is fp16; other dtypes would be silently reinterpreted downstream
            raise FeatureFileError(f"{self.path}: tensor 'features' is {dtype}, the contract is F16 (float16)")
        self.shape: tuple[int, ...] = tuple(self._slice.get_shape())
        if len(self.shape) not in (3, 5):
            raise FeatureFileError(f"{self.path}: tensor 'features' has shape {self.shape}, expected "
                                   "[n_segments, P, D] or [n_segments, P, C, h, w]")
        if self.shape[0] != len(self.narration_ids):
            raise FeatureFileError(f"{self.path}: {self.shape[0]} rows but {len(self.narration_ids)} narration ids")
        try:
            self.frames = np.asarray(frames, dtype=np.int64)
            if self.frames.size == 0 and self.shape[0] == 0:
                self.frames = self.frames.reshape(0, self.shape[1])  # JSON keeps no shape for an empty list
        except (TypeError, ValueError, OverflowError) as exc:
            raise FeatureFileError(f"{self.path}: metadata 'frames' is not a list of frame-number lists: {exc}") from exc
        if self.frames.shape != self.shape[:2]:
            raise FeatureFileError(f"{self.path}: metadata 'frames' has shape {self.frames.shape}, "
                                   f"features have {self.shape[:2]}")
        self.row_of: dict[str, int] = {nid: i for i, nid in enumerate(self.narration_ids)}

    def _json(self, meta: Mapping[str, str], key: str, default: str | None = None) -> Any:
        try:
            return json.loads(meta[key] if default is None else meta.get(key, default))
        except json.JSONDecodeError as exc:
            raise FeatureFileError(f"{self.path}: metadata {key!r} is not valid JSON: {exc}") from exc

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> np.ndarray:
        return self._slice[row]

    def read(self) -> np.ndarray:
        """All rows at once (small files, tests)."""
        return self._handle.get_tensor("features")
