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

The features are ``<features.features_dir>/<stream>/<video>.safetensors`` with
``features.positions`` (P) positions per segment, the files the extraction writes (or the
official pooled pickles of ``inputs.official_features_dir``).

Layout, as torchvision's reference scripts: :func:`run_training` sets up (data, model, optimiser,
resume) and loops over epochs, calling :func:`train_one_epoch` and :func:`evaluate` and writing
the epoch's checkpoint and metrics row with the writers of :mod:`m3em.runtime`.

Multi-GPU: ``torchrun --nproc-per-node G -m m3em.train ...`` runs DistributedDataParallel
(:func:`m3em.runtime.distributed_run`); each global batch is split across the ranks and rank 0
writes the files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from m3em.checkpoint import (
    check_architecture,
    git_revision,
    load_checkpoint,
    load_model_state,
    plain,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from m3em.data import ArraySplit, FeatureDataError, FeatureSplit, ModalityInput, epoch_batches, make_loader
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError, DataConfig, InputsConfig
from m3em.epic.errors import InputError
from m3em.epic.features import FeaturesConfig
from m3em.epic.official_features import OfficialFeaturesConfig
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
from m3em.runtime import DistributedContext, barrier, data_parallel, distributed_run, write_metrics_csv

log = logging.getLogger("m3em.train")


@dataclasses.dataclass(frozen=True)
class BetaConfig:
    """GRL coefficients per discriminator level (reference: relation 0.75, video 0.75, frame 0.5)."""

    relation: float = 0.75
    video: float = 0.75
    frame: float = 0.5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` config section (defaults: the EPIC-100 TA3N script).

    Where the features are and how many positions per segment (P) the model reads are the
    ``features:`` section's (``features_dir``, ``positions``): the trainer reads what the
    extraction writes.

    Two quirks of the reference are options whose defaults reproduce it, so a run matches the
    released baseline unless asked otherwise:

    * ``dann_warmup_rate = 1.0``: the EPIC fork's GRL warm-up is ``2/(1+exp(-1.0 p))-1`` (the DANN
      paper and the original TA3N use 10), so the coefficient only reaches ~0.46; with
      ``dann_progress_one_based`` the progress ``p = (step + epoch * n) / (epochs * n)`` counts
      epochs from 1 as the reference does (p starts at 1/epochs and ends above 1).
    * ``position_jitter = False``: the reference builds its training loader with
      ``test_mode=True``, i.e. the same centre positions every epoch (no temporal augmentation).
    """

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
    seed: int = 1
    device: str = "cpu"
    num_workers: int = 0
    check_finite: bool = True
    evaluate_each_epoch: bool = True
    standardise_features: bool = False
    standardise_max_segments: int = 2048


@dataclasses.dataclass(frozen=True)
class TrainJobConfig:
    """The config sections ``python -m m3em.train`` and ``python -m m3em.predict`` read
    (:func:`m3em.epic.cli.load_job_config`).

    ``models`` stays the validated mapping of model name -> section: :func:`m3em.models.model_config`
    builds one model's dataclasses from it (``models.<name>`` plus the shared ``models.ta3n``).
    """

    data: DataConfig
    models: Mapping[str, Mapping[str, Any]]
    train: TrainConfig
    inputs: InputsConfig = InputsConfig()
    features: FeaturesConfig = FeaturesConfig()
    official_features: OfficialFeaturesConfig = OfficialFeaturesConfig()


class TrainingError(RuntimeError, InputError):
    """A run that cannot start or continue; the message says why."""


def trn_positions(features: FeaturesConfig) -> int:
    """P, the positions per segment the model reads (``features.positions``; TRN-m needs 2 or more)."""
    if features.positions < 2:
        raise ConfigError(f"features.positions: TRN-m needs at least 2 positions, got {features.positions}")
    return features.positions


def modality_inputs(model_name: str, mcfg: ModelConfig) -> list[ModalityInput]:
    """What each modality of ``models.<model_name>`` reads: its stream and channel count."""
    return [ModalityInput(n, m.stream, m.channels, f"models.{model_name}.modalities.{n}") for n, m in mcfg.modalities.items()]


def open_split(
    job: TrainJobConfig,
    annotations: EpicAnnotations,
    split: str,
    model_name: str,
    mcfg: ModelConfig,
    *,
    labelled: bool,
    jitter: bool = False,
) -> FeatureSplit | ArraySplit:
    """The clips of ``split`` for the modalities of ``mcfg``, from feature files or official pickles.

    Items: ``({modality: (P, c[, h, w])}, verb, noun, index)`` with ``P = features.positions``.
    """
    table = annotations.split(split, labelled=labelled)
    mods = modality_inputs(model_name, mcfg)
    positions = trn_positions(job.features)
    official_dir = job.inputs.official_features_dir
    if official_dir is None:
        return FeatureSplit(job.features.features_dir, table, mods, positions=positions, labelled=labelled,
                            jitter=jitter, seed=job.train.seed, split_name=split)
    from m3em.epic.official_features import (
        STREAM_OF_MODALITY,
        load_official_features,
        official_features_path,
        stored_clip_positions,
    )

    key_of_stream = {s: k for k, s in STREAM_OF_MODALITY.items()}
    for m in mods:
        if m.stream not in key_of_stream:
            raise FeatureDataError(
                f"{official_features_path(official_dir, split)}: the official features have no "
                f"modality for {m.where}.stream = {m.stream!r} (they hold {sorted(STREAM_OF_MODALITY.values())})"
            )
    path = official_features_path(official_dir, split)
    clips = stored_clip_positions(positions)  # which of the 25 stored clips are the P positions
    off = load_official_features(path, modalities=job.official_features.modalities, positions=clips)
    missing = [m.where for m in mods if key_of_stream[m.stream] not in off.features]
    if missing:
        raise ConfigError(f"official_features.modalities {list(job.official_features.modalities)} lacks the "
                          f"modality of {missing}")
    arrays = {m.name: off.features[key_of_stream[m.stream]] for m in mods}
    return ArraySplit(arrays, off.narration_ids, table, positions=positions, labelled=labelled,
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


def write_training_metrics(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``metrics.csv`` of a run: :data:`METRIC_COLUMNS`, floats to 6 significant digits."""
    write_metrics_csv(path, rows, METRIC_COLUMNS, float_format=".6g")


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@dataclasses.dataclass(frozen=True)
class TrainingSplits:
    """The clips one run reads: labelled source, unlabelled target, labelled validation (or None
    when ``train.evaluate_each_epoch`` is off), and the class counts of the annotations."""

    source: FeatureSplit | ArraySplit
    target: FeatureSplit | ArraySplit
    val: FeatureSplit | ArraySplit | None
    n_verbs: int
    n_nouns: int


def open_training_splits(job: TrainJobConfig, model_name: str, mcfg: ModelConfig, *, progress: bool) -> TrainingSplits:
    """Open the splits of ``data.splits`` and run every check that can fail before the first step
    (same feature sizes in every split, no empty domain, finite features when ``train.check_finite``)."""
    tc, splits = job.train, job.data.splits
    annotations = EpicAnnotations.open(job.data.annotations_dir)
    source = open_split(job, annotations, splits.source_train, model_name, mcfg, labelled=True, jitter=tc.position_jitter)
    target = open_split(job, annotations, splits.target_train, model_name, mcfg, labelled=False, jitter=tc.position_jitter)
    val = open_split(job, annotations, splits.validation, model_name, mcfg, labelled=True) if tc.evaluate_each_epoch else None
    for ds in (source, target, val):
        if ds is not None and ds.shapes != source.shapes:
            raise FeatureDataError(f"feature sizes differ between splits: {source.shapes} vs {ds.shapes}")
    if len(source) == 0 or len(target) == 0:
        raise FeatureDataError(f"split {splits.source_train} or {splits.target_train} has no segments")
    if tc.check_finite:
        for ds in (source, target, val):
            if ds is not None:
                ds.check_finite(progress=progress)
    return TrainingSplits(source, target, val, len(annotations.verbs), len(annotations.nouns))


def make_optimizer(model: nn.Module, tc: TrainConfig) -> tuple[list[nn.Parameter], torch.optim.SGD,
                                                               torch.optim.lr_scheduler.MultiStepLR]:
    """The trainable parameters, SGD (Nesterov) over them and the reference's step schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay, nesterov=tc.nesterov)
    # Reference: at the start of 1-based epoch e the lr is divided by lr_decay if e in lr_steps.
    # MultiStepLR counts 0-based epochs, hence the -1.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[s - 1 for s in tc.lr_steps], gamma=1.0 / tc.lr_decay)
    return params, optimizer, scheduler


def restore(ckpt_path: Path, metrics_path: Path, *, resume: bool, model: ActionModel, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, arch_desc: Mapping[str, Any],
            ctx: DistributedContext) -> tuple[int, int, list[dict[str, Any]]]:
    """Continue from ``ckpt_path`` (``resume``) or check that a fresh run overwrites nothing.

    Restores the weights, optimiser, schedule and RNG states and rewrites ``metrics.csv`` from the
    checkpoint's rows: a kill after the checkpoint's rename but before the csv's loses no row.

    Returns:
        ``(first epoch to train (1-based), optimisation steps so far, metrics rows so far)``.
    """
    if resume and not ckpt_path.exists():
        if ctx.is_main:
            log.info("%s not found: starting from epoch 1", ckpt_path)
        resume = False
    if not resume:
        if ckpt_path.exists() and ctx.is_main:
            raise TrainingError(f"{ckpt_path} exists: pass --resume to continue it, or use a fresh --out-dir")
        return 1, 0, []
    ckpt = load_checkpoint(ckpt_path)
    check_architecture(ckpt_path, ckpt["architecture"], arch_desc)
    load_model_state(ckpt_path, model, ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    start_epoch, global_step = int(ckpt["epoch"]) + 1, int(ckpt["global_step"])
    # Checkpoints written before the 'metrics' key existed fall back to the csv.
    rows = list(ckpt["metrics"]) if "metrics" in ckpt else [
        r for r in _read_metrics(metrics_path) if int(r["epoch"]) < start_epoch]
    if ctx.is_main:
        write_training_metrics(metrics_path, rows)
    return start_epoch, global_step, rows


def train_one_epoch(net: nn.Module, params: Sequence[nn.Parameter], optimizer: torch.optim.Optimizer,
                    source: FeatureSplit | ArraySplit, target: FeatureSplit | ArraySplit, *, epoch: int,
                    steps_per_epoch: int, method: Method, mcfg: ModelConfig, tc: TrainConfig, ctx: DistributedContext,
                    desc: str, progress: bool) -> dict[str, Any]:
    """One epoch of domain-adaptive SGD over ``steps_per_epoch`` zipped source/target batches.

    The batch orders come from ``(train.seed, epoch)`` (source) and ``(train.seed + 1, epoch)``
    (target), split across the ranks, so a resumed run sees the same batches. Per step: the
    source clips (and, unless source-only, the target clips) through ``net``, the TA3N losses,
    backward, gradient clipping, an optimiser step.

    Returns:
        The epoch's metrics row so far: ``epoch``, ``lr``, ``steps``, the mean losses and domain
        accuracy (NaN for source-only), and the source top-1 accuracies (%) of the logits seen in
        training.

    Raises:
        TrainingError: the loss became non-finite.
    """
    device = ctx.device
    net.train()
    source.set_epoch(epoch)
    target.set_epoch(epoch)
    src_loader = make_loader(source, epoch_batches(len(source), tc.batch_size_source, tc.seed, epoch, shuffle=True,
                                                   rank=ctx.rank, world=ctx.world_size)[:steps_per_epoch], tc.num_workers,
                             pin_memory=device.type == "cuda")
    tgt_loader = make_loader(target, epoch_batches(len(target), tc.batch_size_target, tc.seed + 1, epoch, shuffle=True,
                                                   rank=ctx.rank, world=ctx.world_size)[:steps_per_epoch], tc.num_workers,
                             pin_memory=device.type == "cuda")
    total_steps = tc.epochs * steps_per_epoch
    # The late-fusion methods share the M3EM model's loss weights, so the ablations differ from
    # m3em only in SMR/CMC.
    lam_y, lam_d = (mcfg.lambda_y, mcfg.lambda_d) if method.late_fusion else (1.0, 1.0)
    sums = {"loss": 0.0, "loss_y": 0.0, "loss_adv": 0.0, "loss_ent": 0.0, "domain_acc": 0.0}
    src_logits, src_labels = [], []
    steps = 0
    bar = tqdm(zip(src_loader, tgt_loader), total=steps_per_epoch, desc=desc, disable=not progress, leave=False)
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
        terms = compute_losses(out, n_src, s_verb, s_noun, gamma=tc.gamma, lambda_y=lam_y, lambda_d=lam_d)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        steps += 1
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
    sv, sn, sa = top1(torch.cat([a for a, _ in src_logits]), torch.cat([b for _, b in src_logits]),
                      torch.cat([a for a, _ in src_labels]), torch.cat([b for _, b in src_labels]))
    row: dict[str, Any] = {"epoch": epoch, "lr": lr, "steps": steps, **{k: v / max(steps, 1) for k, v in sums.items()},
                           "source_verb_top1": sv, "source_noun_top1": sn, "source_action_top1": sa}
    if method is Method.SOURCE_ONLY:
        row["domain_acc"] = float("nan")
    return row


def evaluate(model: ActionModel, val: FeatureSplit | ArraySplit | None, source: FeatureSplit | ArraySplit,
             tc: TrainConfig, device: torch.device) -> dict[str, float]:
    """End-of-epoch metrics (eval mode; the training mode is restored).

    Returns:
        ``target_val_{verb,noun,action}_top1`` (%) on ``val`` when given, then the M3EM instruments
        (:func:`m3em_instruments`) on ``val``, or on the source training clips without it.
    """
    out: dict[str, float] = {}
    if val is not None:
        idx, v_logits, n_logits = predict_logits(model, val, tc.batch_size_eval, device, tc.num_workers)
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        out["target_val_verb_top1"], out["target_val_noun_top1"], out["target_val_action_top1"] = top1(
            v_logits, n_logits, torch.tensor(val.verb)[idx_t], torch.tensor(val.noun)[idx_t])
    out.update(m3em_instruments(model, val if val is not None else source, tc.batch_size_eval, device, tc.num_workers))
    return out


def config_record(job: TrainJobConfig, model_name: str) -> dict[str, Any]:
    """The resolved config sections a run used, defaults filled in (the checkpoint's ``config``)."""
    return {f"models.{model_name}": plain(job.models[model_name]), "models.ta3n": plain(job.models.get("ta3n", {})),
            "train": plain(job.train), "features": {"features_dir": str(job.features.features_dir),
                                                    "positions": job.features.positions},
            "data": plain(job.data)}


def write_final_model(ckpt_path: Path, final_path: Path) -> None:
    """``model.pt``, the rule's output: the last epoch's checkpoint, written once training has finished."""
    if not ckpt_path.exists():
        raise TrainingError(f"{ckpt_path}: no epoch was trained")
    final = load_checkpoint(ckpt_path)
    save_training_checkpoint(final_path, {k: v for k, v in final.items() if k != "format"})
    log.info("wrote %s", final_path)


def run_training(
    job: TrainJobConfig,
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
        job: the config sections (:class:`TrainJobConfig`).
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
    mcfg, arch = model_config(job.models, model_name)
    if method.value not in mcfg.methods:
        raise ConfigError(f"models.{model_name}.methods: {method.value!r} is not one of {list(mcfg.methods)}")
    tc = job.train
    positions = trn_positions(job.features)
    with distributed_run(tc.device, "train.device") as ctx:
        if tc.batch_size_source < ctx.world_size or tc.batch_size_target < ctx.world_size:
            raise ConfigError(f"train.batch_size_*: a global batch must give every one of the {ctx.world_size} ranks a sample")
        torch.manual_seed(tc.seed)
        if ctx.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)

        data = open_training_splits(job, model_name, mcfg, progress=progress and ctx.is_main)
        model = build_model(mcfg, arch, method, n_verbs=data.n_verbs, n_nouns=data.n_nouns, num_frames=positions,
                            dropout_i=tc.dropout_i, dropout_v=tc.dropout_v, spatial=data.source.spatial,
                            standardise=tc.standardise_features)
        if model.standardiser is not None:
            # Statistics of the labelled source split only (the target domain's are never looked at).
            model.standardiser.set_statistics(feature_statistics(data.source, tc.standardise_max_segments))
        model.to(ctx.device)
        arch_desc = architecture(model_name, method, mcfg, arch, data.n_verbs, data.n_nouns, positions,
                                 data.source.shapes, tc.standardise_features)
        params, optimizer, scheduler = make_optimizer(model, tc)
        net = data_parallel(model, ctx, find_unused_parameters=method is Method.SOURCE_ONLY)

        ckpt_path, final_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "model.pt", out_dir / "metrics.csv"
        start_epoch, global_step, rows = restore(ckpt_path, metrics_path, resume=resume, model=model,
                                                 optimizer=optimizer, scheduler=scheduler, arch_desc=arch_desc, ctx=ctx)
        steps_per_epoch = min(math.ceil(len(data.source) / tc.batch_size_source),
                              math.ceil(len(data.target) / tc.batch_size_target))
        if max_steps is not None:
            steps_per_epoch = min(steps_per_epoch, max_steps)
        record, revision = config_record(job, model_name), git_revision()

        for epoch in range(start_epoch, tc.epochs + 1):
            t0 = time.time()
            row = train_one_epoch(net, params, optimizer, data.source, data.target, epoch=epoch,
                                  steps_per_epoch=steps_per_epoch, method=method, mcfg=mcfg, tc=tc, ctx=ctx,
                                  desc=f"{model_name}/{method.value} epoch {epoch}", progress=progress and ctx.is_main)
            global_step += row["steps"]
            scheduler.step()
            if ctx.is_main:
                row.update(evaluate(model, data.val, data.source, tc, ctx.device))
            row["seconds"] = time.time() - t0
            rows.append(row)
            if ctx.is_main:
                save_training_checkpoint(ckpt_path, {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "global_step": global_step,
                    "rng": rng_state(),
                    "model_name": model_name,
                    "method": method.value,
                    "architecture": arch_desc,
                    "config": record,
                    "git_revision": revision,
                    "metrics": [dict(r) for r in rows],
                })
                write_training_metrics(metrics_path, rows)
                log.info("%s/%s epoch %d: %s", model_name, method.value, epoch, ", ".join(
                    f"{k}={row[k]:.4g}" for k in ("loss", "domain_acc", "source_verb_top1", "target_val_verb_top1") if k in row))
            if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < tc.epochs:
                if ctx.is_main:
                    log.info("stopped after epoch %d: %s (continue with --resume)", epoch, ckpt_path)
                return ckpt_path
        if ctx.is_main:
            write_final_model(ckpt_path, final_path)
        barrier(ctx)
    return final_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="config.yaml (models:, train:, features:, data:, inputs:)")
    p.add_argument("--model", required=True, help="model name, a key of models: (A, B, C, D)")
    p.add_argument("--method", required=True, choices=[m.value for m in Method], help=" | ".join(m.value for m in Method))
    p.add_argument("--out-dir", type=Path, required=True, help="run directory (checkpoint.pt, metrics.csv, model.pt)")
    p.add_argument("--max-steps", type=int, default=None, help="at most N optimisation steps per epoch")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt if it exists")
    p.add_argument("--stop-after-epoch", type=int, default=None, help="stop after this epoch (resume later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, TrainJobConfig)
    run_training(job, args.model, args.method, args.out_dir, max_steps=args.max_steps, resume=args.resume,
                 stop_after_epoch=args.stop_after_epoch, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.train", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
