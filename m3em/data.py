"""Feature datasets: clips of one annotation split, read from the feature files.

Two sources give the same items:

* :class:`FeatureSplit` reads the per-(video, stream) feature files of the contract in
  :mod:`m3em.epic.features` (fp16, memory-mapped; one segment is read at a time, a split is never held
  in RAM).
* :class:`ArraySplit` wraps in-memory arrays, e.g. the organisers' pooled EPIC-100 features
  (``[N, 25, 1024]`` per modality; then every map is 1x1 and M3EM's consensus is skipped).

Rows are joined to the annotations by narration id. Each item is ``(inputs, verb, noun, index)``
with ``inputs[modality]`` an array ``(P, c, h, w)`` (spatial) or ``(P, c)`` (vector; float16 from
feature files, the arrays' dtype from :class:`ArraySplit`), and
labels ``-1`` for unlabelled splits. When a file stores more positions than the model uses (the
official features store 25), ``P`` positions are picked TSN-style at the centre of ``P`` equal
chunks ([2, 7, 12, 17, 22] for 25 -> 5), exactly as the reference TA3N does in training *and*
testing (no temporal jitter; ``jitter=True`` is an option that departs from the reference).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from tqdm import tqdm

from m3em.epic.errors import InputError
from m3em.epic.features import FeatureFile, feature_path, select_positions
from m3em.epic.streams import SPATIAL_STREAMS


class FeatureDataError(ValueError, InputError):
    """Features that do not fit the annotations or the config; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class ModalityInput:
    """A modality as the data layer needs it: its name, stream, channel count and config key."""

    name: str
    stream: str
    channels: int
    where: str  # config key, e.g. "models.B.modalities.object", for error messages


def _common_shape(by_shape: dict[tuple[int, ...], list[Path]], stream: str) -> tuple[int, ...] | None:
    """The row shape all files of a stream share; otherwise an error naming the odd files.

    The shape most files have is taken as the norm, so the files named are the deviating ones;
    on a tie every group is named.
    """
    if len(by_shape) <= 1:
        return next(iter(by_shape), None)
    ranked = sorted(by_shape.items(), key=lambda kv: -len(kv[1]))
    norm, norm_paths = ranked[0]
    tie = len(ranked[1][1]) == len(norm_paths)
    odd = ranked if tie else ranked[1:]
    listed = "; ".join(f"{', '.join(map(str, paths[:3]))}{' ...' if len(paths) > 3 else ''} ({len(paths)} file(s)) "
                       f"have {shape}" for shape, paths in odd)
    if tie:
        raise FeatureDataError(f"files of stream {stream} disagree on the 'features' row shape: {listed}")
    raise FeatureDataError(f"{listed}: 'features' rows differ from the {len(norm_paths)} other file(s) of stream "
                           f"{stream}, which have {norm} (e.g. {norm_paths[0]})")


def _labels(annotations: pd.DataFrame, labelled: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(annotations)
    if labelled:
        return (annotations["verb_class"].to_numpy(np.int64), annotations["noun_class"].to_numpy(np.int64))
    return np.full(n, -1, np.int64), np.full(n, -1, np.int64)


class _ClipDataset(torch.utils.data.Dataset):
    """Common part: narration ids, labels, position choice."""

    narration_ids: list[str]
    verb: np.ndarray
    noun: np.ndarray
    positions: int
    jitter: bool
    seed: int
    epoch: int = 0
    spatial: dict[str, bool]
    shapes: dict[str, tuple[int, ...]]

    def set_epoch(self, epoch: int) -> None:
        """Epoch number for the jitter RNG (each (seed, epoch, item) has its own stream)."""
        self.epoch = epoch

    def _positions(self, stored: int, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.jitter else None
        return select_positions(stored, self.positions, rng)

    def __len__(self) -> int:
        return len(self.narration_ids)


class FeatureSplit(_ClipDataset):
    """The clips of one split, read from ``<features_dir>/<stream>/<video_id>.safetensors``.

    Args:
        features_dir: root of the feature files.
        annotations: the split's table (``narration_id``, ``video_id`` [, ``verb_class``, ``noun_class``]).
        modalities: what to read.
        positions: ``P``.
        labelled: whether labels are returned (else -1).
        jitter: random position within each chunk (only when files store more than ``P``).
        seed: seed of the jitter.
        split_name: for error messages.

    Every check that needs no feature values runs here, before any training: each file exists,
    holds every narration id of its video, has the configured channels and enough positions,
    and all files of a modality have one map size. :meth:`check_finite` reads the values.

    Memory: a process keeps at most ``max_open_files`` files memory-mapped (least recently used
    are unmapped), so its file-backed resident memory is bounded by that many files, whatever
    the size of the split; nothing else grows with the data.
    """

    def __init__(
        self,
        features_dir: str | Path,
        annotations: pd.DataFrame,
        modalities: Sequence[ModalityInput],
        *,
        positions: int,
        labelled: bool,
        jitter: bool = False,
        seed: int = 0,
        split_name: str = "<split>",
        max_open_files: int = 128,
    ) -> None:
        self.features_dir = Path(features_dir)
        self.max_open_files = max_open_files
        self.modalities = list(modalities)
        self.positions = positions
        self.jitter = jitter
        self.seed = seed
        self.split_name = split_name
        self.narration_ids = annotations["narration_id"].astype(str).tolist()
        self.verb, self.noun = _labels(annotations, labelled)
        videos = annotations["video_id"].astype(str).to_numpy()
        self.paths: dict[str, list[Path]] = {}
        self.file_index: dict[str, np.ndarray] = {}
        self.rows: dict[str, np.ndarray] = {}
        self.shapes = {}
        self.stored_positions: dict[str, int] = {}
        self._open: OrderedDict[Path, tuple] = OrderedDict()
        unique_videos = list(dict.fromkeys(videos))
        for m in self.modalities:
            paths, rows, fidx = [], np.empty(len(videos), np.int64), np.empty(len(videos), np.int64)
            by_shape: dict[tuple[int, ...], list[Path]] = {}
            for vi, video in enumerate(unique_videos):
                path = feature_path(self.features_dir, m.stream, video)
                if not path.exists():
                    raise FeatureDataError(
                        f"{path}: feature file not found for modality {m.name!r} ({m.where}.stream = {m.stream!r}) "
                        f"of split {split_name}"
                    )
                ff = FeatureFile(path)
                if ff.stream != m.stream:
                    raise FeatureDataError(f"{path}: metadata 'stream' is {ff.stream!r}, expected {m.stream!r}")
                fshape = ff.shape[1:]
                if len(fshape) not in (2, 4):
                    raise FeatureDataError(f"{path}: features have shape {ff.shape}, expected [n, P, C(, h, w)]")
                if fshape[1] != m.channels:
                    raise FeatureDataError(
                        f"{path}: 'features' has {fshape[1]} channels but {m.where}.channels = {m.channels}"
                    )
                if fshape[0] < positions:
                    raise FeatureDataError(f"{path}: 'features' stores {fshape[0]} positions, features.positions = {positions}")
                by_shape.setdefault(fshape, []).append(path)
                sel = np.flatnonzero(videos == video)
                for i in sel:
                    nid = self.narration_ids[i]
                    if nid not in ff.row_of:
                        raise FeatureDataError(
                            f"{path}: narration id {nid!r} of split {split_name} is missing from 'narration_ids'"
                        )
                    rows[i] = ff.row_of[nid]
                    fidx[i] = vi
                paths.append(path)
            shape = _common_shape(by_shape, m.stream)
            self.paths[m.name] = paths
            self.rows[m.name] = rows
            self.file_index[m.name] = fidx
            if shape is None:  # empty split
                shape = (positions, m.channels) + ((1, 1) if m.stream in SPATIAL_STREAMS else ())
            self.stored_positions[m.name] = shape[0]
            self.shapes[m.name] = (positions,) + tuple(shape[1:])
        self.spatial = {m.name: len(self.shapes[m.name]) == 4 and self.shapes[m.name][2] * self.shapes[m.name][3] > 1
                        for m in self.modalities}

    def __getstate__(self) -> dict:
        # Memory-mapped handles do not cross process boundaries: workers reopen what they read.
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def _rows_of(self, path: Path):
        """The memory-mapped ``features`` slice of ``path`` (validated at construction)."""
        entry = self._open.get(path)
        if entry is None:
            handle = safe_open(str(path), framework="np")
            entry = (handle, handle.get_slice("features"))  # the handle keeps the mapping alive
            self._open[path] = entry
            if len(self._open) > self.max_open_files:
                self._open.popitem(last=False)  # drops the mapping
        else:
            self._open.move_to_end(path)
        return entry[1]

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], int, int, int]:
        inputs = {}
        for m in self.modalities:
            rows = self._rows_of(self.paths[m.name][self.file_index[m.name][index]])
            row = rows[int(self.rows[m.name][index])]  # (P_stored, c[, h, w]) float16, one segment
            inputs[m.name] = np.ascontiguousarray(row[self._positions(row.shape[0], index)])
        return inputs, int(self.verb[index]), int(self.noun[index]), index

    def check_finite(self, chunk: int = 64, progress: bool = True) -> None:
        """Read every feature file once (``chunk`` rows at a time) and fail on NaN or inf.

        Raises:
            FeatureDataError: naming the file, the stream and the first bad narration id.
        """
        todo = [(m, p) for m in self.modalities for p in self.paths[m.name]]
        for m, path in tqdm(todo, desc=f"checking {self.split_name} features", disable=not progress, leave=False):
            ff = FeatureFile(path)
            for start in range(0, len(ff), chunk):
                block = np.stack([ff[i] for i in range(start, min(start + chunk, len(ff)))])
                ok = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
                if not ok.all():
                    bad = start + int(np.flatnonzero(~ok)[0])
                    raise FeatureDataError(
                        f"{path}: 'features' of stream {m.stream} contain NaN or inf "
                        f"(narration id {ff.narration_ids[bad]!r})"
                    )


class ArraySplit(_ClipDataset):
    """The clips of one split from in-memory arrays (e.g. the official pooled features).

    Args:
        arrays: per modality name, ``(N, P_stored, c)`` or ``(N, P_stored, c, h, w)`` arrays.
        narration_ids: the ``N`` ids of the array rows.
        annotations, positions, labelled, jitter, seed, split_name: as for :class:`FeatureSplit`.
        source: file the arrays came from, for error messages.
        channels: expected channels per modality (checked).
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        narration_ids: Sequence[str],
        annotations: pd.DataFrame,
        *,
        positions: int,
        labelled: bool,
        channels: Mapping[str, int] | None = None,
        jitter: bool = False,
        seed: int = 0,
        split_name: str = "<split>",
        source: str = "<arrays>",
    ) -> None:
        self.arrays = dict(arrays)
        self.positions = positions
        self.jitter = jitter
        self.seed = seed
        self.narration_ids = annotations["narration_id"].astype(str).tolist()
        self.verb, self.noun = _labels(annotations, labelled)
        row_of = {str(n): i for i, n in enumerate(narration_ids)}
        missing = [n for n in self.narration_ids if n not in row_of]
        if missing:
            raise FeatureDataError(
                f"{source}: narration id {missing[0]!r} of split {split_name} is missing from 'narration_ids' "
                f"({len(missing)} missing in all)"
            )
        self.rows = np.array([row_of[n] for n in self.narration_ids], dtype=np.int64)
        self.shapes = {}
        for name, arr in self.arrays.items():
            if arr.shape[0] != len(narration_ids) or arr.ndim not in (3, 5):
                raise FeatureDataError(
                    f"{source}: features of {name!r} have shape {arr.shape}, expected [{len(narration_ids)}, P, C(, h, w)]"
                )
            if channels is not None and arr.shape[2] != channels[name]:
                raise FeatureDataError(f"{source}: features of {name!r} have {arr.shape[2]} channels, expected {channels[name]}")
            if arr.shape[1] < positions:
                raise FeatureDataError(f"{source}: features of {name!r} store {arr.shape[1]} positions, need {positions}")
            self.shapes[name] = (positions,) + tuple(arr.shape[2:])
        self.spatial = {n: len(s) == 4 and s[2] * s[3] > 1 for n, s in self.shapes.items()}

    def check_finite(self, chunk: int = 64, progress: bool = True) -> None:
        """Fail on NaN or inf in the rows this split uses, naming the modality and narration id."""
        del progress
        for name, arr in self.arrays.items():
            for start in range(0, len(self.rows), chunk):
                block = np.asarray(arr[self.rows[start:start + chunk]])
                ok = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
                if not ok.all():
                    bad = start + int(np.flatnonzero(~ok)[0])
                    raise FeatureDataError(
                        f"features of {name!r} contain NaN or inf (narration id {self.narration_ids[bad]!r})"
                    )

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], int, int, int]:
        row = int(self.rows[index])
        inputs = {}
        for name, arr in self.arrays.items():
            clip = np.asarray(arr[row])
            # Kept in the arrays' dtype (float32 for the official pickles, as the reference reads them).
            inputs[name] = np.ascontiguousarray(clip[self._positions(clip.shape[0], index)])
        return inputs, int(self.verb[index]), int(self.noun[index]), index


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, *, shuffle: bool, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Index batches of one epoch: a permutation from ``(seed, epoch)`` (so a resumed run sees the
    same order), cut into global batches of ``batch_size``, each split across ``world`` ranks."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    # Every rank must get a non-empty share of every batch (or the ranks' step counts differ).
    batches = [b for b in batches if len(b) >= world]
    return [b[rank::world] for b in batches]


def collate_clips(items: Sequence[tuple[dict[str, np.ndarray], int, int, int]]) -> tuple[
        dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack items into ``({name: (B, P, ...) float16}, verb (B,), noun (B,), index (B,))``.

    Stacks with numpy (a plain copy): torch's generic collate stacks float16 on the CPU about 30x
    slower, which made it the loader's bottleneck.
    """
    inputs = {k: torch.from_numpy(np.stack([it[0][k] for it in items])) for k in items[0][0]}
    verb, noun, index = (torch.tensor([it[j] for it in items], dtype=torch.long) for j in (1, 2, 3))
    return inputs, verb, noun, index


def make_loader(dataset: torch.utils.data.Dataset, batches: list[list[int]], num_workers: int,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over precomputed index batches (no RNG of its own is consumed)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_clips,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
