"""Train one model (A-D) with one method (:class:`m3em.methods.Method`) on the feature files.

    python -m m3em.train --config config.yaml --model A --method m3em --out-dir results/train/A_m3em \\
        [--max-steps N] [--resume] [--stop-after-epoch K]

Each step takes a source batch (labelled) and a target batch (unlabelled), as the reference
zips its two loaders (an epoch is ``min`` of the two batch counts). SGD (Nesterov) with the
reference schedule (lr divided by ``lr_decay`` at the 1-based epochs in ``lr_steps``), gradient
clipping, the DANN warm-up of the GRL coefficients. Writes into ``--out-dir``:

* ``checkpoint.pt`` after every epoch (atomic; see :mod:`m3em.checkpoint`), used by ``--resume``;
  it also holds every epoch's metrics row, so the checkpoint is the one commit point of an epoch;
* ``metrics.csv``: one row per epoch (losses, domain accuracy, source and target-val top-1, and
  the M3EM instruments of :func:`m3em_instruments`: NaN for a method without SMR/CMC);
* ``model.pt`` once training has finished (same format): the rule's output.

Multi-GPU: ``torchrun --nproc-per-node G -m m3em.train ...`` runs DistributedDataParallel; each
global batch is split across the ranks and rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from m3em.checkpoint import (
    CheckpointError,
    check_architecture,
    git_revision,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from m3em.data import ArraySplit, FeatureDataError, FeatureSplit, ModalityInput, epoch_batches, make_loader
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.atomic import atomic_write_text
from m3em.epic.config import ConfigError, build_dataclass, load_config
from m3em.epic.errors import InputError
from m3em.models import (
    ActionModel,
    DomainBetas,
    Method,
    ModelConfig,
    TA3NArchConfig,
    build_model,
    compute_losses,
    consensus_pool_weights,
    dann_coefficient,
    model_config,
)
from m3em.runtime import resolve_device


@dataclasses.dataclass(frozen=True)
class BetaConfig:
    """GRL coefficients per discriminator level (reference: relation 0.75, video 0.75, frame 0.5)."""

    relation: float = 0.75
    video: float = 0.75
    frame: float = 0.5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` config section (defaults: the EPIC-100 TA3N script).

    Two quirks of the reference are options whose defaults reproduce it, so a run matches the
    released baseline unless asked otherwise:

    * ``dann_warmup_rate = 1.0``: the EPIC fork's GRL warm-up is ``2/(1+exp(-1.0 p))-1`` (the DANN
      paper and the original TA3N use 10), so the coefficient only reaches ~0.46; with
      ``dann_progress_one_based`` the progress ``p = (step + epoch * n) / (epochs * n)`` counts
      epochs from 1 as the reference does (p starts at 1/epochs and ends above 1).
    * ``position_jitter = False``: the reference builds its training loader with
      ``test_mode=True``, i.e. the same centre positions every epoch (no temporal augmentation).
    """

    features_dir: Path
    epochs: int = 30
    lr: float = 3e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_steps: tuple[int, ...] = (10, 20)
    lr_decay: float = 10.0
    grad_clip: float | None = 20.0
    batch_size_source: int = 128
    batch_size_target: int = 207
    batch_size_eval: int = 512
    betas: BetaConfig = BetaConfig()
    gamma: float = 0.003
    dropout_i: float = 0.5
    dropout_v: float = 0.5
    dann_warmup: bool = True
    dann_warmup_rate: float = 1.0
    dann_progress_one_based: bool = True
    position_jitter: bool = False
    positions: int = 5
    seed: int = 1
    device: str = "cpu"
    num_workers: int = 0
    check_finite: bool = True
    evaluate_each_epoch: bool = True
    standardise_features: bool = False
    standardise_max_segments: int = 2048


@dataclasses.dataclass(frozen=True)
class DataSources:
    """Where the clips come from (``data:``, ``inputs:``, ``official_features:`` at the boundary)."""

    annotations_dir: Path
    source_split: str
    target_split: str
    validation_split: str
    official_features_dir: Path | None
    official_positions: tuple[int, ...] | None


class TrainingError(RuntimeError, InputError):
    """A run that cannot start or continue; the message says why."""


def data_sources(cfg: Mapping[str, Any]) -> DataSources:
    """Read the data locations from the validated config (other sections' keys, read-only)."""
    splits = cfg["data"]["splits"]
    off = cfg.get("inputs", {}).get("official_features_dir")
    positions = None
    if off is not None and "official_features" in cfg:
        positions = tuple(cfg["official_features"].get("positions", ())) or None
    return DataSources(
        annotations_dir=Path(cfg["data"]["annotations_dir"]),
        source_split=splits["source_train"],
        target_split=splits["target_train"],
        validation_split=splits["validation"],
        official_features_dir=Path(off) if off is not None else None,
        official_positions=positions,
    )


def train_config(cfg: Mapping[str, Any]) -> TrainConfig:
    if "train" not in cfg:
        raise ConfigError("config: section 'train' missing")
    tc = build_dataclass(TrainConfig, cfg["train"], "train")
    if tc.positions < 2:
        raise ConfigError("train.positions: TRN-m needs at least 2 positions")
    return tc


def modality_inputs(model_name: str, mcfg: ModelConfig) -> list[ModalityInput]:
    return [ModalityInput(n, m.stream, m.channels, f"models.{model_name}.modalities.{n}") for n, m in mcfg.modalities.items()]


def open_split(
    sources: DataSources,
    annotations: EpicAnnotations,
    split: str,
    model_name: str,
    mcfg: ModelConfig,
    tc: TrainConfig,
    *,
    labelled: bool,
    jitter: bool = False,
) -> FeatureSplit | ArraySplit:
    """The clips of ``split`` for the modalities of ``mcfg``, from feature files or official pickles."""
    table = annotations.split(split, labelled=labelled)
    mods = modality_inputs(model_name, mcfg)
    if sources.official_features_dir is None:
        return FeatureSplit(tc.features_dir, table, mods, positions=tc.positions, labelled=labelled,
                            jitter=jitter, seed=tc.seed, split_name=split)
    from m3em.epic.official_features import STREAM_OF_MODALITY, load_official_features, official_features_path

    key_of_stream = {s: k for k, s in STREAM_OF_MODALITY.items()}
    for m in mods:
        if m.stream not in key_of_stream:
            raise FeatureDataError(
                f"{official_features_path(sources.official_features_dir, split)}: the official features have no "
                f"modality for {m.where}.stream = {m.stream!r} (they hold {sorted(STREAM_OF_MODALITY.values())})"
            )
    path = official_features_path(sources.official_features_dir, split)
    from m3em.data import select_positions

    positions = sources.official_positions or tuple(int(i) for i in select_positions(25, tc.positions))
    if len(positions) != tc.positions:
        raise ConfigError(f"official_features.positions has {len(positions)} entries but train.positions = {tc.positions}")
    off = load_official_features(path, modalities=tuple(STREAM_OF_MODALITY), positions=positions)
    arrays = {m.name: off.features[key_of_stream[m.stream]] for m in mods}
    return ArraySplit(arrays, off.narration_ids, table, positions=tc.positions, labelled=labelled,
                      channels={m.name: m.channels for m in mods}, split_name=split, source=str(path))


def architecture(model_name: str, method: Method, mcfg: ModelConfig, arch: TA3NArchConfig, n_verbs: int,
                 n_nouns: int, positions: int, shapes: Mapping[str, tuple[int, ...]],
                 standardise: bool = False) -> dict[str, Any]:
    """What determines the network's parameters, stored in the checkpoint and compared on load."""
    return {
        "model_name": model_name,
        "method": method.value,
        "modalities": {n: [m.stream, m.channels] for n, m in mcfg.modalities.items()},
        "map_sizes": {n: list(s[2:]) if len(s) == 4 else [1, 1] for n, s in shapes.items()},
        "branches": [[b.name, list(b.modalities)] for b in mcfg.branches] if method.late_fusion else [],
        "consensus_pair": list(mcfg.consensus_pair) if (method.cmc and mcfg.consensus_pair) else None,
        "smr_reduction": mcfg.smr_reduction if method.smr else None,
        # combine/pooling add no parameters but change the function the weights were trained for.
        "cmc": [mcfg.cmc_scales, mcfg.cmc_latent_channels, mcfg.cmc_combine, mcfg.cmc_pooling] if method.cmc else None,
        "ta3n": [arch.fc_dim, arch.num_bottleneck],
        "classes": [n_verbs, n_nouns],
        "positions": positions,
        "standardise_features": standardise,
    }


def feature_statistics(dataset, max_segments: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and std of each modality over (segments, positions, h, w).

    Uses the first ``max_segments`` segments of ``dataset`` (items ``({name: (P, c[, h, w])}, ...)``).
    A channel's std is floored at a tenth of the modality's mean std, so a channel that is
    (nearly) constant on the source split cannot blow up on the target split.

    Returns:
        ``{modality: (mean (c,), std (c,))}`` float32.
    """
    n = min(len(dataset), max_segments)
    if n == 0:
        raise FeatureDataError("feature statistics: the source split has no segments")
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for i in range(n):
        inputs = dataset[i][0]
        for name, x in inputs.items():
            x = np.asarray(x, dtype=np.float64)
            x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 0, 2).reshape(x.shape[1], -1)  # (c, P*h*w)
            sums[name] = sums.get(name, 0.0) + x.sum(axis=1)
            squares[name] = squares.get(name, 0.0) + (x * x).sum(axis=1)
            counts[name] = counts.get(name, 0) + x.shape[1]
    out = {}
    for name in sums:
        mean = sums[name] / counts[name]
        std = np.sqrt(np.maximum(squares[name] / counts[name] - mean * mean, 0.0))
        std = np.maximum(std, 0.1 * std.mean() + 1e-12)
        out[name] = (torch.from_numpy(mean).float(), torch.from_numpy(std).float())
    return out


def _to_device(inputs: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    # Features travel as fp16 (half the bytes through the loader) and become fp32 on the device.
    return {k: v.to(device, non_blocking=True).float() for k, v in inputs.items()}


@torch.no_grad()
def predict_logits(model: ActionModel, dataset, batch_size: int, device: torch.device, num_workers: int,
                   progress: bool = False, desc: str = "predict") -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Fused verb/noun logits ``(N, n_verbs)``, ``(N, n_nouns)`` for every clip, in dataset order."""
    was_training = model.training
    model.eval()
    loader = make_loader(dataset, epoch_batches(len(dataset), batch_size, 0, 0, shuffle=False), num_workers,
                         pin_memory=device.type == "cuda")
    idx, verbs, nouns = [], [], []
    for inputs, _, _, index in tqdm(loader, desc=desc, disable=not progress, leave=False):
        out = model(_to_device(inputs, device))
        verbs.append(out.verb.float().cpu())
        nouns.append(out.noun.float().cpu())
        idx.extend(index.tolist())
    model.train(was_training)
    n_v = model.branches[model.branch_specs[0].name].fc_classifier_video_verb_source.out_features
    n_n = model.branches[model.branch_specs[0].name].fc_classifier_video_noun_source.out_features
    return (idx, torch.cat(verbs) if verbs else torch.zeros(0, n_v), torch.cat(nouns) if nouns else torch.zeros(0, n_n))


def top1(verb: torch.Tensor, noun: torch.Tensor, verb_labels: torch.Tensor, noun_labels: torch.Tensor) -> tuple[float, float, float]:
    """Top-1 verb, noun and action accuracy in % (action top-1 = both right; the official action
    ranking by the product of the two softmaxes has the two argmaxes at rank 1)."""
    if len(verb_labels) == 0:
        return float("nan"), float("nan"), float("nan")
    v = verb.argmax(1) == verb_labels
    n = noun.argmax(1) == noun_labels
    return (100 * v.float().mean().item(), 100 * n.float().mean().item(), 100 * (v & n).float().mean().item())


#: The M3EM instruments (:func:`m3em_instruments`), in ``metrics.csv`` after the accuracies.
INSTRUMENT_COLUMNS = (
    "cmc_c_mean", "cmc_c_spread", "cmc_weight_entropy",
    "smr_self_gate_mean", "smr_self_gate_std", "smr_cross_gate_mean", "smr_cross_gate_std",
)
METRIC_COLUMNS = (
    "epoch", "lr", "steps", "loss", "loss_y", "loss_adv", "loss_ent", "domain_acc",
    "source_verb_top1", "source_noun_top1", "source_action_top1",
    "target_val_verb_top1", "target_val_noun_top1", "target_val_action_top1", *INSTRUMENT_COLUMNS, "seconds",
)


@torch.no_grad()
def m3em_instruments(model: ActionModel, dataset, batch_size: int, device: torch.device,
                     num_workers: int) -> dict[str, float]:
    """What M3EM does on ``dataset`` (eval mode), averaged over every frame of every clip.

    * ``cmc_c_mean``: mean of ``C`` over frames and positions.
    * ``cmc_c_spread``: per frame, the standard deviation of ``C`` over the ``h x w`` positions
      (population std), averaged over frames; 0 means pooling ignores where things are.
    * ``cmc_weight_entropy``: per frame, the entropy (nats) of the normalised pooling weights
      ``p = w / sum w`` with ``w = max(0, 1 + C)`` (:func:`m3em.models.consensus_pool_weights`),
      divided by ``log(h w)``; averaged over frames. In ``[0, 1]``: 1 = uniform (global average
      pooling), 0 = all weight on one position. For ``cmc_pooling: residual`` the same ``p``
      describes where the weight goes (that pooling does not normalise).
    * ``smr_{self,cross}_gate_{mean,std}``: mean and standard deviation over all gate values
      (frames x channels x modalities) of SMR's self and cross gates.

    Columns of a part the method does not have (no CMC, no SMR, no M3EM) are NaN.
    """
    out = dict.fromkeys(INSTRUMENT_COLUMNS, float("nan"))
    if model.m3em is None or (model.m3em.smr is None and model.m3em.cmc is None):
        return out
    was_training = model.training
    model.eval()
    loader = make_loader(dataset, epoch_batches(len(dataset), batch_size, 0, 0, shuffle=False), num_workers,
                         pin_memory=device.type == "cuda")
    # float64 running sums: value sum, square sum and count per quantity.
    acc = {k: [0.0, 0.0, 0] for k in ("c", "c_spread", "entropy", "self", "cross")}

    def add(key: str, x: torch.Tensor) -> None:
        x = x.double()
        acc[key][0] += x.sum().item()
        acc[key][1] += (x * x).sum().item()
        acc[key][2] += x.numel()

    for inputs, _, _, _ in loader:
        probe = model.probe(_to_device(inputs, device))
        if probe.consensus is not None:
            c = probe.consensus.flatten(1)  # (N, h*w)
            add("c", c)
            add("c_spread", c.std(dim=1, unbiased=False))
            w = consensus_pool_weights(c)
            p = w / w.sum(dim=1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny)
            ent = -torch.xlogy(p, p).sum(dim=1)
            add("entropy", ent / math.log(c.shape[1]) if c.shape[1] > 1 else torch.zeros_like(ent))
        for key, gates in (("self", probe.self_gates), ("cross", probe.cross_gates)):
            for g in gates.values():
                add(key, g)
    model.train(was_training)

    def mean(key: str) -> float:
        s, _, n = acc[key]
        return s / n if n else float("nan")

    def std(key: str) -> float:
        s, sq, n = acc[key]
        return math.sqrt(max(sq / n - (s / n) ** 2, 0.0)) if n else float("nan")

    out.update({"cmc_c_mean": mean("c"), "cmc_c_spread": mean("c_spread"), "cmc_weight_entropy": mean("entropy"),
                "smr_self_gate_mean": mean("self"), "smr_self_gate_std": std("self"),
                "smr_cross_gate_mean": mean("cross"), "smr_cross_gate_std": std("cross")})
    return out


def _write_metrics(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _init_distributed() -> tuple[int, int]:
    """Join the torchrun process group when launched with WORLD_SIZE > 1; return (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def run_training(
    cfg: Mapping[str, Any],
    model_name: str,
    method: Method | str,
    out_dir: str | Path,
    *,
    max_steps: int | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> Path:
    """Train and return the path of ``model.pt`` (or of ``checkpoint.pt`` when stopped early).

    Args:
        cfg: the validated config mapping (read here, at the boundary, section by section).
        model_name: ``A``..``D`` (a key of ``models:``).
        method: a :class:`Method` or its value (source_only, ta3n, ta3n_late, m3em_smr, m3em_cmc, m3em).
        out_dir: where checkpoint.pt, metrics.csv and model.pt go.
        max_steps: at most this many optimisation steps per epoch (quick runs, benchmarks).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (else start at epoch 1);
            without it an existing checkpoint is an error, so no run is overwritten by mistake.
        stop_after_epoch: stop after this epoch, leaving the checkpoint (e.g. a time-limited job).
        progress: show tqdm bars.
    """
    method = Method(method)
    out_dir = Path(out_dir)
    mcfg, arch = model_config(cfg["models"], model_name)
    if method.value not in mcfg.methods:
        raise ConfigError(f"models.{model_name}.methods: {method.value!r} is not one of {list(mcfg.methods)}")
    tc = train_config(cfg)
    sources = data_sources(cfg)
    rank, world = _init_distributed()
    device = resolve_device(tc.device, "train.device")
    if tc.batch_size_source < world or tc.batch_size_target < world:
        raise ConfigError(f"train.batch_size_*: a global batch must give every one of the {world} ranks a sample")

    torch.manual_seed(tc.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    # --- data: every check that can fail runs before the first step ---
    annotations = EpicAnnotations.open(sources.annotations_dir)
    n_verbs, n_nouns = len(annotations.verbs), len(annotations.nouns)
    source = open_split(sources, annotations, sources.source_split, model_name, mcfg, tc, labelled=True, jitter=tc.position_jitter)
    target = open_split(sources, annotations, sources.target_split, model_name, mcfg, tc, labelled=False, jitter=tc.position_jitter)
    val = open_split(sources, annotations, sources.validation_split, model_name, mcfg, tc, labelled=True) if tc.evaluate_each_epoch else None
    for ds in (source, target, val):
        if ds is not None and ds.shapes != source.shapes:
            raise FeatureDataError(f"feature sizes differ between splits: {source.shapes} vs {ds.shapes}")
    if len(source) == 0 or len(target) == 0:
        raise FeatureDataError(f"split {sources.source_split} or {sources.target_split} has no segments")
    if tc.check_finite:
        for ds in (source, target, val):
            if ds is not None:
                ds.check_finite(progress=progress and rank == 0)

    model = build_model(mcfg, arch, method, n_verbs=n_verbs, n_nouns=n_nouns, num_frames=tc.positions,
                        dropout_i=tc.dropout_i, dropout_v=tc.dropout_v, spatial=source.spatial,
                        standardise=tc.standardise_features)
    if model.standardiser is not None:
        # Statistics of the labelled source split only (the target domain's are never looked at).
        model.standardiser.set_statistics(feature_statistics(source, tc.standardise_max_segments))
    model.to(device)
    arch_desc = architecture(model_name, method, mcfg, arch, n_verbs, n_nouns, tc.positions, source.shapes,
                             tc.standardise_features)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay, nesterov=tc.nesterov)
    # Reference: at the start of 1-based epoch e the lr is divided by lr_decay if e in lr_steps.
    # MultiStepLR counts 0-based epochs, hence the -1.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[s - 1 for s in tc.lr_steps], gamma=1.0 / tc.lr_decay)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=method is Method.SOURCE_ONLY,
        )

    ckpt_path, final_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "model.pt", out_dir / "metrics.csv"
    start_epoch, global_step, rows = 1, 0, []
    if resume and not ckpt_path.exists():
        if rank == 0 and progress:
            tqdm.write(f"{ckpt_path} not found: starting from epoch 1")
        resume = False
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        check_architecture(ckpt_path, ckpt["architecture"], arch_desc)
        load_model_state(ckpt_path, model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start_epoch, global_step = int(ckpt["epoch"]) + 1, int(ckpt["global_step"])
        # The checkpoint carries the metrics rows of its epochs, so metrics.csv (a view of them) is
        # rewritten here: a kill after the checkpoint's rename but before the csv's loses no row.
        # Checkpoints written before that key existed fall back to the csv.
        rows = list(ckpt["metrics"]) if "metrics" in ckpt else [
            r for r in _read_metrics(metrics_path) if int(r["epoch"]) < start_epoch]
        if rank == 0:
            _write_metrics(metrics_path, rows)
    elif ckpt_path.exists() and rank == 0:
        raise TrainingError(f"{ckpt_path} exists: pass --resume to continue it, or use a fresh --out-dir")

    n_src_batches = math.ceil(len(source) / tc.batch_size_source)
    n_tgt_batches = math.ceil(len(target) / tc.batch_size_target)
    steps_per_epoch = min(n_src_batches, n_tgt_batches)
    if max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, max_steps)
    total_steps = tc.epochs * steps_per_epoch
    resolved = {f"models.{model_name}": dict(cfg["models"][model_name]), "models.ta3n": dict(cfg["models"].get("ta3n", {})),
                "train": dict(cfg["train"]), "data": dict(cfg["data"])}
    revision = git_revision()

    for epoch in range(start_epoch, tc.epochs + 1):
        t0 = time.time()
        net.train()
        source.set_epoch(epoch)
        target.set_epoch(epoch)
        # The two orders come from (seed, epoch) and (seed + 1, epoch): a resumed run sees the same batches.
        src_loader = make_loader(source, epoch_batches(len(source), tc.batch_size_source, tc.seed, epoch, shuffle=True,
                                                       rank=rank, world=world)[:steps_per_epoch], tc.num_workers,
                                 pin_memory=device.type == "cuda")
        tgt_loader = make_loader(target, epoch_batches(len(target), tc.batch_size_target, tc.seed + 1, epoch, shuffle=True,
                                                       rank=rank, world=world)[:steps_per_epoch], tc.num_workers,
                                 pin_memory=device.type == "cuda")
        sums = {"loss": 0.0, "loss_y": 0.0, "loss_adv": 0.0, "loss_ent": 0.0, "domain_acc": 0.0}
        src_logits, src_labels = [], []
        steps = 0
        bar = tqdm(zip(src_loader, tgt_loader), total=steps_per_epoch, desc=f"{model_name}/{method.value} epoch {epoch}",
                   disable=not (progress and rank == 0), leave=False)
        for i, ((s_in, s_verb, s_noun, _), (t_in, _, _, _)) in enumerate(bar):
            # DANN warm-up. Reference: p = (i + epoch * n) / (epochs * n) with 1-based epochs, so
            # p runs from 1/epochs to above 1 (kept by default: dann_progress_one_based).
            epoch_term = epoch if tc.dann_progress_one_based else epoch - 1
            p = (i + epoch_term * steps_per_epoch) / total_steps
            w = dann_coefficient(p, tc.dann_warmup_rate) if tc.dann_warmup else 1.0
            betas = DomainBetas(w * tc.betas.relation, w * tc.betas.video, w * tc.betas.frame)
            n_src = s_verb.shape[0]
            if method is Method.SOURCE_ONLY:
                # No domain term reads the target rows: skip their forward pass (the batches are
                # still drawn, so the steps per epoch equal the reference's zipped loaders).
                inputs = _to_device(s_in, device)
            else:
                inputs = _to_device({k: torch.cat([s_in[k], t_in[k]]) for k in s_in}, device)
            s_verb, s_noun = s_verb.to(device), s_noun.to(device)
            out = net(inputs, betas)
            # The late-fusion methods share the M3EM model's loss weights, so the ablations differ
            # from m3em only in SMR/CMC.
            lam_y, lam_d = (mcfg.lambda_y, mcfg.lambda_d) if method.late_fusion else (1.0, 1.0)
            terms = compute_losses(out, n_src, s_verb, s_noun, gamma=tc.gamma, lambda_y=lam_y, lambda_d=lam_d)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            steps += 1
            global_step += 1
            if not torch.isfinite(terms.total):
                raise TrainingError(f"epoch {epoch} step {i}: the loss is {terms.total.item()}")
            sums["loss"] += terms.total.item()
            sums["loss_y"] += terms.classification.item()
            sums["loss_adv"] += terms.adversarial.item()
            sums["loss_ent"] += terms.entropy.item()
            sums["domain_acc"] += terms.domain_accuracy
            src_logits.append((out.verb[:n_src].detach().cpu(), out.noun[:n_src].detach().cpu()))
            src_labels.append((s_verb.cpu(), s_noun.cpu()))
            bar.set_postfix(loss=f"{terms.total.item():.3f}")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        sv, sn, sa = top1(torch.cat([a for a, _ in src_logits]), torch.cat([b for _, b in src_logits]),
                          torch.cat([a for a, _ in src_labels]), torch.cat([b for _, b in src_labels]))
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "steps": steps, **{k: v / max(steps, 1) for k, v in sums.items()},
                               "source_verb_top1": sv, "source_noun_top1": sn, "source_action_top1": sa}
        if method is Method.SOURCE_ONLY:
            row["domain_acc"] = float("nan")
        if val is not None and rank == 0:
            idx, v_logits, n_logits = predict_logits(model, val, tc.batch_size_eval, device, tc.num_workers)
            idx_t = torch.as_tensor(idx, dtype=torch.long)
            row["target_val_verb_top1"], row["target_val_noun_top1"], row["target_val_action_top1"] = top1(
                v_logits, n_logits, torch.tensor(val.verb)[idx_t], torch.tensor(val.noun)[idx_t])
        if rank == 0:
            # On target-val when it is evaluated each epoch, else on the source training clips.
            row.update(m3em_instruments(model, val if val is not None else source, tc.batch_size_eval, device,
                                        tc.num_workers))
        row["seconds"] = time.time() - t0
        rows.append(row)
        if rank == 0:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "global_step": global_step,
                "rng": rng_state(),
                "model_name": model_name,
                "method": method.value,
                "architecture": arch_desc,
                "config": resolved,
                "git_revision": revision,
                "metrics": [dict(r) for r in rows],
            })
            _write_metrics(metrics_path, rows)
            if progress:
                tqdm.write(f"{model_name}/{method.value} epoch {epoch}: " + ", ".join(
                    f"{k}={row[k]:.4g}" for k in ("loss", "domain_acc", "source_verb_top1", "target_val_verb_top1") if k in row))
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < tc.epochs:
            return ckpt_path
    if rank == 0:
        if not ckpt_path.exists():
            raise TrainingError(f"{ckpt_path}: no epoch was trained (train.epochs = {tc.epochs})")
        data = load_checkpoint(ckpt_path)
        save_checkpoint(final_path, {k: v for k, v in data.items() if k != "format"})
    if dist.is_initialized():
        dist.barrier()
    return final_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m m3em.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="config.yaml (models:, train:, data:, inputs:)")
    p.add_argument("--model", required=True, help="model name, a key of models: (A, B, C, D)")
    p.add_argument("--method", required=True, choices=[m.value for m in Method], help=" | ".join(m.value for m in Method))
    p.add_argument("--out-dir", type=Path, required=True, help="run directory (checkpoint.pt, metrics.csv, model.pt)")
    p.add_argument("--max-steps", type=int, default=None, help="at most N optimisation steps per epoch")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt if it exists")
    p.add_argument("--stop-after-epoch", type=int, default=None, help="stop after this epoch (resume later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        path = run_training(cfg, args.model, args.method, args.out_dir, max_steps=args.max_steps, resume=args.resume,
                            stop_after_epoch=args.stop_after_epoch, progress=not args.no_progress)
    except (ConfigError, FeatureDataError, CheckpointError, TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
