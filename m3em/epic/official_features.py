"""The organisers' pre-extracted pooled EPIC-100 UDA features (reference/epic_data.md section 3.5).

Each split is one pickle ``<official_features_dir>/<split>.pkl`` holding::

    {'features': {'RGB': ndarray[N, 25, 1024], 'Flow': ..., 'Audio': ...},
     'narration_ids': [N ids]}

The official TA3N loader concatenates ``data['features'].values()`` in the pickle's insertion
order, an order nobody has verified; here every modality is fetched by key and the key set is
checked (a missing or unknown modality is an error naming it), so the order in the file never
matters. The pickle is read with :func:`m3em.epic.safe_pickle.safe_load` (numpy/pandas classes only).

Of the 25 stored clips per segment the models see P (``features.positions``): the TSN centres of
P equal chunks (:func:`stored_clip_positions`; for P = 5 ``[2, 7, 12, 17, 22]``, the official
loader's ``int(2.5 + 5x)``). :func:`export_feature_files` writes them in the
project's feature contract (one file per (video, stream); maps ``1 x 1`` for the visual streams),
so the models read official and self-extracted features alike::

    python -m m3em.epic.official_features --config config.yaml --split source_train \\
        --pickle official/source_train.pkl --features-dir results/features_official
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import DataConfig, InputsConfig
from m3em.epic.errors import InputError
from m3em.epic.features import (
    FeaturesConfig,
    feature_path,
    segment_positions,
    select_positions,
    write_features,
)
from m3em.epic.safe_pickle import safe_load
from m3em.epic.streams import SPATIAL_STREAMS

#: Number of clips per segment in the official files (TBN's 25 test segments).
N_STORED = 25
#: The project's stream for each official modality (TBN features).
STREAM_OF_MODALITY: dict[str, str] = {"RGB": "tbn_rgb", "Flow": "tbn_flow", "Audio": "tbn_audio"}

log = logging.getLogger("m3em.epic.official_features")


class OfficialFeaturesError(ValueError, InputError):
    """An official feature pickle that does not have the expected layout; names file and key."""


@dataclasses.dataclass(frozen=True)
class OfficialFeaturesConfig:
    """The ``official_features:`` config section.

    Attributes:
        modalities: the modality keys every pickle must hold (exactly), in output order.
    """

    modalities: tuple[str, ...] = ("RGB", "Flow", "Audio")


def stored_clip_positions(n_positions: int) -> tuple[int, ...]:
    """0-based indices of the P stored clips (of :data:`N_STORED`) the models see:
    :func:`m3em.epic.features.select_positions`, the centres of P equal chunks, as for a feature
    file storing more positions than P (P = 5 gives the official loader's ``(2, 7, 12, 17, 22)``)."""
    if not 1 <= n_positions <= N_STORED:
        raise OfficialFeaturesError(f"features.positions = {n_positions}: the official features store {N_STORED} "
                                    "clips per segment")
    return tuple(int(i) for i in select_positions(N_STORED, n_positions))


@dataclasses.dataclass(frozen=True)
class OfficialFeatures:
    """Selected official features of one split.

    Attributes:
        narration_ids: ``(N,)`` ids in row order.
        features: modality -> float32 ``(N, P, D)`` (``D`` = 1024 for TBN).
        positions: the ``P`` stored-clip indices kept.
        file_modality_order: the modality keys in the pickle's own order (for the record).
        source: the pickle.
    """

    narration_ids: tuple[str, ...]
    features: Mapping[str, np.ndarray]
    positions: tuple[int, ...]
    file_modality_order: tuple[str, ...]
    source: Path

    def __len__(self) -> int:
        return len(self.narration_ids)

    def row_of(self) -> dict[str, int]:
        return {nid: i for i, nid in enumerate(self.narration_ids)}

    def select(self, narration_ids: Sequence[str]) -> OfficialFeatures:
        """The rows of ``narration_ids`` in that order; every id must be present."""
        rows = self.row_of()
        missing = [n for n in narration_ids if n not in rows]
        if missing:
            raise OfficialFeaturesError(f"{self.source}: {len(missing)} narration id(s) have no features, "
                                        f"e.g. {missing[:5]}")
        idx = np.fromiter((rows[n] for n in narration_ids), dtype=np.int64, count=len(narration_ids))
        return dataclasses.replace(self, narration_ids=tuple(narration_ids),
                                   features={m: a[idx] for m, a in self.features.items()})


def official_features_path(features_dir: str | Path, split: str) -> Path:
    """``<dir>/<split>.pkl``, the file names the official scripts use."""
    return Path(features_dir) / f"{split}.pkl"


def _ids(raw: object, path: Path) -> tuple[str, ...]:
    if isinstance(raw, (pd.Series, pd.Index)):
        raw = raw.tolist()
    elif isinstance(raw, np.ndarray):
        if raw.ndim != 1:
            raise OfficialFeaturesError(f"{path}: 'narration_ids' must be 1-d, got shape {raw.shape}")
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)):
        raise OfficialFeaturesError(f"{path}: 'narration_ids' must be a list, got {type(raw).__name__}")
    if not all(isinstance(x, str) and x for x in raw):
        raise OfficialFeaturesError(f"{path}: 'narration_ids' must be non-empty strings")
    if len(set(raw)) != len(raw):
        seen: set[str] = set()
        dups = [x for x in raw if x in seen or seen.add(x)]
        raise OfficialFeaturesError(f"{path}: duplicate narration id(s) {dups[:5]}")
    return tuple(raw)


def load_official_features(
    path: str | Path,
    *,
    modalities: Sequence[str] = ("RGB", "Flow", "Audio"),
    positions: Sequence[int] = (2, 7, 12, 17, 22),
) -> OfficialFeatures:
    """Load one official pickle and keep ``positions`` of each modality.

    Args:
        path: the ``.pkl``.
        modalities: the modality keys the file must hold, exactly (missing or unknown keys are
            errors); the output keeps this order.
        positions: 0-based stored-clip indices to keep.

    Returns:
        :class:`OfficialFeatures` with float32 ``(N, len(positions), D)`` per modality.

    Raises:
        OfficialFeaturesError: wrong layout, naming the file and the key.
        m3em.epic.safe_pickle.UnsafePickleError: the pickle names a non-data class (nothing is run).
    """
    path = Path(path)
    if not path.exists():
        raise OfficialFeaturesError(f"{path}: official feature file not found")
    data = safe_load(path)
    if not isinstance(data, Mapping):
        raise OfficialFeaturesError(f"{path}: expected a dict with 'features' and 'narration_ids', "
                                    f"got {type(data).__name__}")
    for key in ("features", "narration_ids"):
        if key not in data:
            raise OfficialFeaturesError(f"{path}: key {key!r} missing (have {sorted(map(str, data))})")
    feats = data["features"]
    if not isinstance(feats, Mapping):
        raise OfficialFeaturesError(f"{path}: 'features' must be a dict keyed by modality, got {type(feats).__name__}")
    ids = _ids(data["narration_ids"], path)
    file_order = tuple(str(k) for k in feats)
    missing = [m for m in modalities if m not in feats]
    unknown = [k for k in file_order if k not in modalities]
    if missing or unknown:
        raise OfficialFeaturesError(
            f"{path}: modality keys {list(file_order)} do not match the expected {list(modalities)}: "
            + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                    f"unknown {unknown}" if unknown else "") if p)
        )
    pos = np.asarray(positions, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for m in modalities:
        arr = feats[m]
        if not isinstance(arr, np.ndarray) or arr.ndim != 3:
            shape = getattr(arr, "shape", type(arr).__name__)
            raise OfficialFeaturesError(f"{path}: features[{m!r}] must be an array [N, T, D], got {shape}")
        if arr.dtype.kind not in "fiu":
            raise OfficialFeaturesError(f"{path}: features[{m!r}] must hold real numbers, got dtype {arr.dtype}")
        if arr.shape[0] != len(ids):
            raise OfficialFeaturesError(f"{path}: features[{m!r}] has {arr.shape[0]} rows but there are "
                                        f"{len(ids)} narration ids")
        if pos.size and (pos.min() < 0 or pos.max() >= arr.shape[1]):
            raise OfficialFeaturesError(f"{path}: positions {list(positions)} outside the {arr.shape[1]} stored "
                                        f"clips of features[{m!r}]")
        sel = np.ascontiguousarray(arr[:, pos, :], dtype=np.float32)
        if not np.isfinite(sel).all():
            bad = np.flatnonzero(~np.isfinite(sel).all(axis=(1, 2)))
            raise OfficialFeaturesError(f"{path}: features[{m!r}] contain NaN or inf for narration id(s) "
                                        f"{[ids[i] for i in bad[:5]]}")
        out[m] = sel
    return OfficialFeatures(ids, out, tuple(int(p) for p in positions), file_order, path)


def export_feature_files(
    feats: OfficialFeatures,
    segments: pd.DataFrame,
    features_dir: str | Path,
    *,
    stream_of_modality: Mapping[str, str] = STREAM_OF_MODALITY,
    progress: bool = True,
) -> list[Path]:
    """Write the selected features in the feature contract, one file per (video, stream).

    Visual streams become ``[n, P, D, 1, 1]`` maps (the consensus over positions is then trivial,
    DESIGN section 3), audio stays ``[n, P, D]``. The recorded frame numbers are the TBN test
    positions (25 per segment) at the kept indices.

    Args:
        feats: loaded features; must cover every segment.
        segments: the split's annotation table (``narration_id, video_id, start_frame, stop_frame``).
        features_dir: root of the feature files.
        stream_of_modality: modality -> stream name.

    Returns:
        The files written.
    """
    written = []
    sel = feats.select(segments["narration_id"].astype(str).tolist())
    pos = np.asarray(feats.positions)
    frames_all = np.stack([
        segment_positions(int(a), int(b), N_STORED)[pos]
        for a, b in zip(segments["start_frame"], segments["stop_frame"])
    ]) if len(segments) else np.zeros((0, len(pos)), dtype=np.int64)
    rows_by_video = segments.reset_index(drop=True).groupby("video_id", sort=True).indices
    jobs = [(m, v, r) for m in sel.features for v, r in rows_by_video.items()]
    for modality, video, rows in tqdm(jobs, desc="official features", disable=not progress):
        stream = stream_of_modality[modality]
        arr = sel.features[modality][rows]
        if stream in SPATIAL_STREAMS:
            arr = arr[:, :, :, None, None]
        out = feature_path(features_dir, stream, str(video))
        write_features(out, arr, [sel.narration_ids[i] for i in rows], frames_all[rows], stream=stream,
                       video_id=str(video),
                       producer={"source": "official_pooled_features", "file": str(feats.source),
                                 "modality": modality, "positions": list(feats.positions)})
        written.append(out)
    return written


@dataclasses.dataclass(frozen=True)
class OfficialFeaturesJobConfig:
    """The config sections ``python -m m3em.epic.official_features`` reads."""

    data: DataConfig
    inputs: InputsConfig
    official_features: OfficialFeaturesConfig
    features: FeaturesConfig = FeaturesConfig()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.epic.official_features",
                                description="Convert an official pooled-feature pickle into feature files.")
    p.add_argument("--config", type=Path, required=True,
                   help="config.yaml (official_features:, features.positions, data.annotations_dir)")
    p.add_argument("--split", required=True, help="annotation split the pickle holds, e.g. source_train")
    p.add_argument("--pickle", type=Path, default=None,
                   help="the pickle (default: <inputs.official_features_dir>/<split>.pkl)")
    p.add_argument("--features-dir", type=Path, required=True, help="root of the feature files to write")
    p.add_argument("--annotations", type=Path, default=None, help="annotation directory (default: data.annotations_dir)")
    return p


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, OfficialFeaturesJobConfig)
    ocfg = job.official_features
    pickle_path = args.pickle
    if pickle_path is None:
        root = job.inputs.official_features_dir
        if root is None:
            raise OfficialFeaturesError(f"{args.config}: no --pickle and inputs.official_features_dir is null")
        pickle_path = official_features_path(root, args.split)
    feats = load_official_features(pickle_path, modalities=ocfg.modalities, positions=stored_clip_positions(job.features.positions))
    segments = EpicAnnotations.open(args.annotations or job.data.annotations_dir).split(args.split, labelled=False)
    written = export_feature_files(feats, segments, args.features_dir)
    log.info("%s: %d segments -> %d feature files under %s", pickle_path, len(segments), len(written),
             args.features_dir)


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.epic.official_features", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
