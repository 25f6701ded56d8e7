"""Fine-tune TBN or I3D on the labelled source split (verb and noun heads).

    python -m extractors.finetune --config config.yaml --backbone tbn \
        --out results/finetune/tbn/checkpoint.pt [--init CKPT] [--resume]
    torchrun --nproc-per-node 4 -m extractors.finetune ...      # DistributedDataParallel

Sampling (``extractors.backbones.inputs``): each labelled segment gives K TSN positions (one
random frame per chunk); TBN binds modalities with the temporal binding window (flow and audio
positions drawn independently and shuffled across the K segments, RGB the anchor). TBN: one RGB
frame, a 5-pair flow stack and a spectrogram per position, mid-fusion, average consensus. I3D:
one clip of ``backbones.i3d.clip_length`` frames per position for each of RGB and flow, logits
averaged over streams and positions. Loss: ``0.5 * (CE_verb + CE_noun)`` (TBN ``train.py``).

Optimiser: SGD (momentum, weight decay), TBN's parameter groups (flow stream at ``flow_lr``),
MultiStepLR (``lr_steps`` = completed epochs), gradient clipping, TBN's partial BN (pretrained
weights only: on random weights it freezes nearly every BN layer at mean 0 / var 1 and the
activations shrink layer by layer to nothing, so it is refused). On GPU: autocast (bf16 where
supported, else fp16 with a gradient scaler).

BatchNorm statistics: after the last epoch the running statistics of the BN layers that used
batch statistics during training are re-estimated over ``finetune.bn_recalibration_segments``
source segments (:func:`recalibrate_batchnorm`), so extraction in eval mode sees the network
fine-tuning trained, not running averages that a short schedule left near their initial values.

Initial weights, first match wins: ``--init`` (a TBN / I3D two-stream checkpoint, ours or the
released TBN: streams strict, the head too when its class counts match), then
``backbones.tbn.tbn_checkpoint``, then per-stream files (ImageNet BN-Inception, Kinetics TSN flow;
piergiaj I3D rgb/flow); else random initialisation (a warning: fine for the demo and smoke runs,
not for results).

Outputs (all atomic): ``--out`` (final checkpoint), ``<out dir>/last.pt`` (after every epoch,
used by ``--resume``), ``<out dir>/metrics.csv`` (epoch, lr, loss, verb/noun top-1, seconds).
Checkpoint: ``{"state_dict", "meta": {backbone, num_verbs, num_nouns, modalities, input_size,
clip_length, epoch}, "optimizer", "scheduler", "scaler"}``.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from extractors.audio import AudioConfig
from extractors.backbones.config import BackbonesConfig, FinetuneConfig, Recipe
from extractors.backbones.i3d import I3DTwoStream, load_i3d_backbone, normalise_i3d
from extractors.backbones.inputs import (
    VideoInputs,
    VideoSpec,
    binding_window_positions,
    tsn_train_positions,
)
from extractors.backbones.tbn import (
    TBN,
    Modality,
    load_imagenet_stream,
    load_tbn,
    load_tbn_streams,
    load_tsn_flow_stream,
    normalise,
)
from extractors.backbones.weights import (
    CheckpointError,
    describe_mismatch,
    load_strict,
    read_checkpoint,
    shapes_of,
    state_dict_of,
    strip_module_prefix,
)
from extractors.detections.config import CropsConfig
from extractors.flow import FlowConfig
from extractors.video import DecodeConfig, annotation_fps
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.atomic import atomic_output, atomic_write_text
from m3em.epic.config import ConfigError, build_dataclass, load_config
from m3em.runtime import resolve_device

log = logging.getLogger("extractors.finetune")

BACKBONES = ("tbn", "i3d")


# ---------------------------------------------------------------------------------------------
# Where a video's inputs are (the same rules as workflow/rules/common.smk)


def video_spec(cfg: Mapping[str, Any], ann: EpicAnnotations, video_id: str, *, need_crops: bool = False) -> VideoSpec:
    """The inputs of ``video_id`` as the DAG lays them out: official archives when configured,
    else the video file and ``<results_dir>/flow/<video>.tar`` / ``<results_dir>/crops/<video>.parquet``."""
    data, inputs = cfg["data"], cfg.get("inputs", {})
    decode = build_dataclass(DecodeConfig, cfg.get("decode", {}), "decode")
    flow = build_dataclass(FlowConfig, cfg.get("flow", {}), "flow")
    audio = build_dataclass(AudioConfig, cfg.get("audio", {}), "audio")
    crops = build_dataclass(CropsConfig, cfg.get("crops", {}), "crops")
    frames_dir = inputs.get("official_frames_dir")
    flow_dir = inputs.get("official_flow_dir")
    return VideoSpec(
        video_id=video_id,
        fps=annotation_fps(video_id, ann.fps(video_id), decode.annotation_fps),
        video_path=Path(data["videos_dir"]) / f"{video_id}{data['video_ext']}",
        frames_archive=Path(frames_dir) / f"{video_id}.tar" if frames_dir else None,
        flow_path=Path(flow_dir) / f"{video_id}.tar" if flow_dir else Path(data["results_dir"]) / "flow" / f"{video_id}.tar",
        crops_path=Path(data["results_dir"]) / "crops" / f"{video_id}.parquet" if need_crops else None,
        decode_height=decode.height,
        flow_stride=flow.stride,
        flow_dilation=flow.dilation,
        flow_box=crops.flow_box,
        audio=audio,
    )


# ---------------------------------------------------------------------------------------------
# Datasets


class _VideoCache:
    """Per-process cache of opened videos (workers each open their own)."""

    def __init__(self, specs: Mapping[str, VideoSpec], keep: int = 4) -> None:
        self.specs = dict(specs)
        self.keep = keep
        self._open: dict[str, VideoInputs] = {}

    def __call__(self, video_id: str) -> VideoInputs:
        if video_id not in self._open:
            if len(self._open) >= self.keep:  # bound open decoders / tar handles
                old = next(iter(self._open))
                self._open.pop(old).close()
            self._open[video_id] = VideoInputs(self.specs[video_id])
        return self._open[video_id]

    def __getstate__(self) -> dict:
        return {"specs": self.specs, "keep": self.keep, "_open": {}}


class SegmentDataset(Dataset):
    """Labelled segments -> per-sample model inputs for one backbone (training sampling).

    Items: dict with ``rgb`` ``(K, S, S, 3)`` uint8, ``flow`` ``(K, S, S, 10)`` uint8 (TBN) or
    ``(K, L, S, S, 2)`` (I3D, ``rgb`` then ``(K, L, S, S, 3)``), ``spec`` ``(K, F, T)`` float32
    (TBN with audio), ``verb`` / ``noun`` int64.

    Args:
        segments: rows with video_id, start_frame, stop_frame, verb_class, noun_class.
        specs: inputs of every video.
        backbone: ``tbn`` or ``i3d``.
        modalities: TBN streams to load.
        num_segments: K.
        size: input side.
        clip_length: I3D frames per clip.
        seed: base seed; the draw of item ``i`` in epoch ``e`` depends only on (seed, e, i).
    """

    def __init__(self, segments: pd.DataFrame, specs: Mapping[str, VideoSpec], backbone: str,
                 modalities: Sequence[Modality], num_segments: int, size: int, clip_length: int, seed: int) -> None:
        self.rows = segments.reset_index(drop=True)[["video_id", "start_frame", "stop_frame", "verb_class", "noun_class"]]
        self.videos = _VideoCache(specs)
        self.backbone = backbone
        self.modalities = tuple(modalities)
        self.k = num_segments
        self.size = size
        self.clip_length = clip_length
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.rows.iloc[i]
        start, stop = int(r.start_frame), int(r.stop_frame)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        v = self.videos(str(r.video_id))
        out: dict[str, Any] = {"verb": int(r.verb_class), "noun": int(r.noun_class)}
        anchor = tsn_train_positions(start, stop, self.k, rng)
        if self.backbone == "tbn":
            for m in self.modalities:
                if m is Modality.RGB:
                    out["rgb"] = v.rgb(anchor, self.size, rng=rng)
                elif m is Modality.FLOW:
                    out["flow"] = v.flow_stack(binding_window_positions(start, stop, self.k, rng), self.size, rng=rng)
                else:
                    out["spec"] = v.spectrogram(binding_window_positions(start, stop, self.k, rng))
        else:
            out["rgb"] = v.rgb_clips(anchor, start, stop, self.clip_length, self.size, rng=rng)
            out["flow"] = v.flow_clips(anchor, start, stop, self.clip_length, self.size, rng=rng)
        return out


# ---------------------------------------------------------------------------------------------
# Models and initial weights


def build_model(backbone: str, bb: BackbonesConfig, num_verbs: int, num_nouns: int,
                modalities: Sequence[Modality]) -> nn.Module:
    """A fresh TBN (``modalities``) or I3D two-stream model with verb/noun heads."""
    if backbone == "tbn":
        return TBN(modalities, num_verbs, num_nouns, bb.tbn.dropout)
    return I3DTwoStream(num_verbs, num_nouns, bb.i3d.dropout)


RANDOM_INIT = "random initialisation (no initial checkpoint configured)"


def initialise(model: nn.Module, backbone: str, bb: BackbonesConfig, init: Path | None) -> str:
    """Load the initial weights (see the module docstring); returns a one-line description
    (:data:`RANDOM_INIT` when nothing was loaded)."""
    if backbone == "tbn":
        assert isinstance(model, TBN)
        path = init or bb.tbn.tbn_checkpoint
        if path is not None:
            sd = strip_module_prefix(state_dict_of(read_checkpoint(path), str(path)))
            own = shapes_of(model.state_dict())
            if not describe_mismatch(own, shapes_of(sd), [k for k in own if k.endswith("num_batches_tracked")]):
                load_tbn(model, sd, str(path))
                return f"TBN checkpoint {path} (strict, heads included)"
            dropped = load_tbn_streams(model, sd, str(path))
            return f"TBN streams from {path} (fusion head re-initialised; dropped {len(dropped)} head keys)"
        parts = []
        if bb.tbn.imagenet_checkpoint is not None:
            sd = state_dict_of(read_checkpoint(bb.tbn.imagenet_checkpoint), str(bb.tbn.imagenet_checkpoint))
            for m in model.modalities:
                load_imagenet_stream(model.stream(m), sd, f"{bb.tbn.imagenet_checkpoint} [{m.value}]")
            parts.append(f"ImageNet BN-Inception {bb.tbn.imagenet_checkpoint} -> {[m.value for m in model.modalities]}")
        if bb.tbn.kinetics_flow_checkpoint is not None and Modality.FLOW in model.modalities:
            p = bb.tbn.kinetics_flow_checkpoint
            load_tsn_flow_stream(model.stream(Modality.FLOW), state_dict_of(read_checkpoint(p), str(p)), str(p))
            parts.append(f"Kinetics TSN flow {p} -> flow")
        return "; ".join(parts) or RANDOM_INIT
    assert isinstance(model, I3DTwoStream)
    if init is not None:
        load_strict(model, state_dict_of(read_checkpoint(init), str(init)), str(init))
        return f"I3D two-stream checkpoint {init} (strict)"
    parts = []
    for name, p in (("rgb", bb.i3d.rgb_checkpoint), ("flow", bb.i3d.flow_checkpoint)):
        if p is not None:
            load_i3d_backbone(getattr(model, name), state_dict_of(read_checkpoint(p), str(p)), str(p))
            parts.append(f"I3D {name} {p}")
    return "; ".join(parts) or RANDOM_INIT


def _stream_batchnorms(model: nn.Module) -> list[list[nn.modules.batchnorm._BatchNorm]]:
    """The BatchNorm layers of each backbone stream, in module order."""
    streams = [model.stream(m) for m in model.modalities] if isinstance(model, TBN) else [model.rgb, model.flow]
    return [[m for m in s.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] for s in streams]


def frozen_batchnorms(model: nn.Module, partial_bn: bool) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BN layers partial BN freezes: all but the first of each stream (none without partial BN)."""
    return [bn for bns in _stream_batchnorms(model) for bn in bns[1:]] if partial_bn else []


def freeze_partial_bn(model: nn.Module) -> None:
    """TBN ``--partialbn``: BatchNorm affine parameters frozen except the first BN of each stream."""
    for bn in frozen_batchnorms(model, True):
        bn.weight.requires_grad_(False)
        bn.bias.requires_grad_(False)


def partial_bn_eval(model: nn.Module) -> None:
    """TBN ``partialbn_statistics``: running statistics frozen (eval) except the first BN of each stream."""
    for bn in frozen_batchnorms(model, True):
        bn.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, backbone: str, k: int, device: torch.device,
                          frozen: Sequence[nn.Module] = ()) -> int:
    """Re-estimate the running statistics of the BN layers not in ``frozen`` (PreciseBN).

    Every other layer runs in eval mode (dropout off); the weights do not change. Each trainable BN
    layer's statistics are reset and accumulated as a plain average over the batches
    (``momentum=None``), so the result does not depend on how long fine-tuning ran. Returns the
    number of samples seen.
    """
    frozen_ids = {id(m) for m in frozen}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen_ids]
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    seen = 0
    try:
        for batch in loader:
            forward_batch(model, batch, backbone, k, device)
            seen += int(batch["verb"].shape[0])
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)
    return seen


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """SGD groups: every trainable parameter once; the flow stream at ``flow_lr`` when set."""
    flow = model.flow if hasattr(model, "flow") else None
    flow_ids = {id(p) for p in flow.parameters()} if flow is not None and recipe.flow_lr is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in flow_ids], "lr": recipe.lr, "name": "main"}]
    if flow_ids:
        groups.append({"params": [p for p in trainable if id(p) in flow_ids], "lr": recipe.flow_lr, "name": "flow"})
    return groups


# ---------------------------------------------------------------------------------------------
# One step


def forward_batch(model: nn.Module, batch: Mapping[str, torch.Tensor], backbone: str, k: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a collated batch to ``device``, normalise and run the model -> (verb, noun) logits ``(B, .)``."""
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if backbone == "tbn":
        inputs = {}
        for m in core.modalities:
            key = {Modality.RGB: "rgb", Modality.FLOW: "flow", Modality.SPEC: "spec"}[m]
            x = batch[key].to(device, non_blocking=True)
            x = x.reshape(-1, *x.shape[2:])  # (B, K, ...) -> (B*K, ...)
            inputs[m] = normalise(m, x)
        return model(inputs, num_segments=k)
    rgb = batch["rgb"].to(device, non_blocking=True)
    flow = batch["flow"].to(device, non_blocking=True)
    rgb = normalise_i3d(rgb.reshape(-1, *rgb.shape[2:]))
    flow = normalise_i3d(flow.reshape(-1, *flow.shape[2:]))
    return model(rgb, flow, num_segments=k)


def autocast_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


def train_step(model: nn.Module, batch: Mapping[str, torch.Tensor], backbone: str, recipe: Recipe,
               device: torch.device, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               use_amp: bool, where: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SGD step on a collated batch (``verb`` / ``noun`` labels ``(B,)``): forward under autocast
    (:func:`autocast_dtype`) when ``use_amp``, loss ``0.5 * (CE_verb + CE_noun)``, backward through
    ``scaler``, gradient clipping at ``recipe.grad_clip``. A non-finite loss is an error (``where`` says
    when, e.g. the epoch). Returns the loss (scalar) and the verb / noun logits ``(B, .)``."""
    with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=use_amp):
        verb, noun = forward_batch(model, batch, backbone, recipe.num_segments, device)
        yv = batch["verb"].to(device)
        yn = batch["noun"].to(device)
        loss = 0.5 * (nn.functional.cross_entropy(verb.float(), yv) + nn.functional.cross_entropy(noun.float(), yn))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{backbone} fine-tuning: non-finite loss {loss.item()} {where} "
                                 "(lower finetune.*.lr or check the inputs)")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if recipe.grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss, verb, noun


# ---------------------------------------------------------------------------------------------
# Training


def _save(path: Path, obj: dict) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def run(cfg: Mapping[str, Any], backbone: str, out: Path, init: Path | None, resume: bool) -> Path:
    """Fine-tune ``backbone`` and write ``out``; returns ``out``."""
    if backbone not in BACKBONES:
        raise ConfigError(f"--backbone must be one of {BACKBONES}, got {backbone!r}")
    bb = build_dataclass(BackbonesConfig, cfg["backbones"], "backbones")
    ft = build_dataclass(FinetuneConfig, cfg["finetune"], "finetune")
    recipe = ft.tbn if backbone == "tbn" else ft.i3d
    audio = build_dataclass(AudioConfig, cfg.get("audio", {}), "audio")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(ft.device, "finetune.device")
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(ft.seed + rank)

    ann = EpicAnnotations.open(cfg["data"]["annotations_dir"])
    all_segments = ann.split(cfg["data"]["splits"]["source_train"], labelled=True)
    segments = all_segments
    if ft.max_train_segments is not None:
        segments = segments.iloc[: ft.max_train_segments]
    if len(segments) == 0:
        raise ConfigError("the source_train split has no segments")
    specs = {v: video_spec(cfg, ann, v) for v in all_segments["video_id"].unique()}
    modalities = (Modality.RGB, Modality.FLOW) + ((Modality.SPEC,) if audio.enabled else ())
    size = bb.tbn.input_size if backbone == "tbn" else bb.i3d.input_size
    num_verbs, num_nouns = len(ann.verbs), len(ann.nouns)

    model = build_model(backbone, bb, num_verbs, num_nouns, modalities)
    start_epoch = 0
    metrics: list[dict] = []
    last = out.parent / "last.pt"
    if resume:
        if not last.exists():
            raise CheckpointError(f"{last}: --resume given but no checkpoint to resume from")
        state = read_checkpoint(last)
        load_strict(model, state_dict_of(state, str(last)), str(last))
        start_epoch = int(state["meta"]["epoch"])
        metrics = list(state.get("metrics", []))
        init_how = str(state["meta"].get("init", RANDOM_INIT))
        how = f"resumed from {last} after epoch {start_epoch} (initial weights: {init_how})"
    else:
        how = init_how = initialise(model, backbone, bb, init)
    if init_how == RANDOM_INIT:
        if recipe.partial_bn:
            raise ConfigError(
                f"finetune.{backbone}.partial_bn: true needs pretrained weights (backbones.{backbone} checkpoints or "
                "--init), but none are configured: on random weights partial BN freezes nearly every BatchNorm layer "
                "at mean 0 / variance 1 and the features collapse to a constant. Set it to false or give the weights.")
        if rank == 0:
            log.warning("%s starts from RANDOM weights (no initial checkpoint): fine for the demo and smoke runs; "
                        "for results give pretrained weights in backbones.%s", backbone, backbone)
    if recipe.partial_bn:
        freeze_partial_bn(model)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last) if backbone == "tbn" else model
    optimizer = torch.optim.SGD(param_groups(model, recipe), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.lr_steps), gamma=recipe.lr_decay)
    use_amp = ft.amp and device.type == "cuda"
    amp_dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if resume:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    core = model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if rank == 0:
        log.info("%s fine-tuning on %d source segments, %d videos, device %s x%d; init: %s",
                 backbone, len(segments), len(specs), device, world, how)

    data = SegmentDataset(segments, specs, backbone, modalities if backbone == "tbn" else (), recipe.num_segments,
                          size, bb.i3d.clip_length, ft.seed)
    sampler = torch.utils.data.DistributedSampler(data, world, rank, shuffle=True, seed=ft.seed) if world > 1 else None
    meta = {"backbone": backbone, "num_verbs": num_verbs, "num_nouns": num_nouns,
            "modalities": [m.value for m in modalities] if backbone == "tbn" else ["rgb", "flow"],
            "input_size": size, "clip_length": bb.i3d.clip_length, "init": init_how}
    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        data.epoch = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(ft.seed * 1000 + epoch)
        loader = DataLoader(data, batch_size=recipe.batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=ft.num_workers, drop_last=False, generator=gen,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        model.train()
        if recipe.partial_bn:
            partial_bn_eval(core)
        sums = {"loss": 0.0, "verb": 0, "noun": 0, "n": 0}
        bar = tqdm(loader, desc=f"{backbone} epoch {epoch + 1}/{recipe.epochs}", disable=rank != 0, file=sys.stderr)
        for batch in bar:
            loss, verb, noun = train_step(model, batch, backbone, recipe, device, optimizer, scaler, use_amp,
                                          f"epoch {epoch + 1}")
            yv, yn = batch["verb"].to(device), batch["noun"].to(device)
            b = yv.shape[0]
            sums["loss"] += loss.item() * b
            sums["verb"] += int((verb.argmax(1) == yv).sum())
            sums["noun"] += int((noun.argmax(1) == yn).sum())
            sums["n"] += b
            bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}")
        lrs = [g["lr"] for g in optimizer.param_groups]
        scheduler.step()
        if world > 1:
            t = torch.tensor([sums["loss"], sums["verb"], sums["noun"], sums["n"]], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            sums = dict(zip(("loss", "verb", "noun", "n"), t.tolist()))
        row = {"epoch": epoch + 1, "lr": lrs[0], "loss": sums["loss"] / sums["n"],
               "verb_top1": sums["verb"] / sums["n"], "noun_top1": sums["noun"] / sums["n"],
               "segments": int(sums["n"]), "seconds": round(time.perf_counter() - t0, 3)}
        metrics.append(row)
        if rank == 0:
            log.info("epoch %d: %s", epoch + 1, row)
            state = {"state_dict": core.state_dict(), "meta": {**meta, "epoch": epoch + 1},
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "metrics": metrics}
            _save(last, state)
            _write_metrics(out.parent / "metrics.csv", metrics)
    if rank == 0:
        if not metrics:
            raise ConfigError(f"nothing to train: epochs={recipe.epochs}")
        recalibrated = 0
        if ft.bn_recalibration_segments > 0:
            t0 = time.perf_counter()
            # Over the whole source split (not only max_train_segments), positions drawn as in a
            # further training epoch.
            pool = SegmentDataset(all_segments, specs, backbone, modalities if backbone == "tbn" else (),
                                  recipe.num_segments, size, bb.i3d.clip_length, ft.seed)
            pool.epoch = recipe.epochs
            n = min(ft.bn_recalibration_segments, len(pool))
            subset = torch.utils.data.Subset(pool, np.random.default_rng(ft.seed).permutation(len(pool))[:n].tolist())
            loader = DataLoader(subset, batch_size=recipe.batch_size, shuffle=False, num_workers=ft.num_workers,
                                pin_memory=device.type == "cuda")
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                recalibrated = recalibrate_batchnorm(core, loader, backbone, recipe.num_segments, device,
                                                     frozen=frozen_batchnorms(core, recipe.partial_bn))
            log.info("re-estimated BatchNorm statistics over %d source segments in %.1f s", recalibrated,
                     time.perf_counter() - t0)
        _save(out, {"state_dict": core.state_dict(),
                    "meta": {**meta, "epoch": recipe.epochs, "bn_recalibration_segments": recalibrated},
                    "metrics": metrics})
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extractors.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="config.yaml")
    parser.add_argument("--backbone", required=True, choices=BACKBONES)
    parser.add_argument("--out", required=True, type=Path, help="final checkpoint, e.g. results/finetune/tbn/checkpoint.pt")
    parser.add_argument("--init", type=Path, default=None, help="initial TBN / I3D two-stream checkpoint (overrides config)")
    parser.add_argument("--resume", action="store_true", help="continue from <out dir>/last.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config)
        run(cfg, args.backbone, args.out, args.init, args.resume)
    except (ConfigError, CheckpointError, ValueError, RuntimeError, OSError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
