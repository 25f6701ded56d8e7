"""Fine-tune TBN or I3D on the labelled source split (verb and noun heads).

    python -m extractors.finetune --config config.yaml --backbone tbn \
        --out results/finetune/tbn/checkpoint.pt \
        --frames frames/P01_01.tar ... | --video videos/P01_01.MP4 ... --flow results/flow/P01_01.tar ... \
        [--init CKPT] [--resume]
    torchrun --nproc-per-node 4 -m extractors.finetune ...      # DistributedDataParallel

Inputs: the files of every video of the source_train split, named by the workflow on the command
line (``finetune_flags`` in ``workflow/rules/common.smk``), each file named after its video
(``<video_id>.<ext>``): ``--flow`` the flow archive; ``--frames`` the frame archive (RGB) or else
``--video`` the video file; ``--video`` also for TBN's sound track when ``audio.enabled``.

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
source segments (:func:`recalibrate_on_source`), so extraction in eval mode sees the network
fine-tuning trained, not running averages that a short schedule left near their initial values.

Initial weights, first match wins: ``--init`` (a TBN / I3D two-stream checkpoint, ours or the
released TBN: streams strict, the head too when its class counts match), then
``backbones.tbn.tbn_checkpoint``, then per-stream files (ImageNet BN-Inception, Kinetics TSN flow;
piergiaj I3D rgb/flow); else random initialisation (a warning: fine for the demo and smoke runs,
not for results).

Layout, as torchvision's reference scripts: :func:`run` sets up and loops over the epochs, calling
:func:`train_one_epoch`; there is no held-out evaluation (fine-tuning reports the training top-1;
the features are judged downstream), and after the last epoch :func:`recalibrate_on_source`.

Outputs (all atomic, :mod:`m3em.runtime` writers): ``--out`` (final checkpoint), ``<out
dir>/last.pt`` (after every epoch, used by ``--resume``), ``<out dir>/metrics.csv`` (epoch, lr,
loss, verb/noun top-1, segments, seconds). Checkpoint: ``{"state_dict", "meta": {backbone,
num_verbs, num_nouns, modalities, input_size, clip_length, init, epoch}, "metrics"}`` plus
``"optimizer", "scheduler", "scaler"`` in ``last.pt`` and ``bn_recalibration_segments`` in the
final one's meta; read by :func:`extractors.extract.load_backbone`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
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
from extractors.flow import FlowConfig
from extractors.video import DecodeConfig, annotation_fps
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError, DataConfig
from m3em.epic.errors import InputError
from m3em.epic.streams import EXTRACTED_STREAMS, stream_info
from m3em.runtime import (
    DistributedContext,
    barrier,
    data_parallel,
    distributed_run,
    save_checkpoint,
    write_metrics_csv,
)

log = logging.getLogger("extractors.finetune")

#: The backbones of the extracted streams (m3em.epic.streams), each fine-tuned by one job.
BACKBONES: tuple[str, ...] = tuple(dict.fromkeys(stream_info(s).backbone.value for s in EXTRACTED_STREAMS))


@dataclasses.dataclass(frozen=True)
class FinetuneJobConfig:
    """The config sections ``python -m extractors.finetune`` reads (:func:`m3em.epic.cli.load_job_config`)."""

    data: DataConfig
    backbones: BackbonesConfig
    finetune: FinetuneConfig
    decode: DecodeConfig = DecodeConfig()
    flow: FlowConfig = FlowConfig()
    audio: AudioConfig = AudioConfig()


# ---------------------------------------------------------------------------------------------
# The input files of each video (named by the rule)


@dataclasses.dataclass(frozen=True)
class InputFiles:
    """The input files the command line names, by video id (each file is ``<video_id>.<ext>``).

    Attributes:
        videos: video files (RGB frames unless a frame archive is given; the sound track).
        frames: frame archives (tar of ``frame_%010d.jpg``).
        flow: flow archives (``u/``, ``v/`` ``frame_%010d.jpg``).
    """

    videos: Mapping[str, Path]
    frames: Mapping[str, Path]
    flow: Mapping[str, Path]

    @classmethod
    def from_paths(cls, videos: Sequence[Path], frames: Sequence[Path], flow: Sequence[Path]) -> InputFiles:
        """Key each path by its video id (the file name up to its suffix); a video given twice
        for one kind is an error naming both files."""
        return cls(_by_video(videos, "--video"), _by_video(frames, "--frames"), _by_video(flow, "--flow"))


def _by_video(paths: Sequence[Path], flag: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.stem in out:
            raise InputError(f"{p}: {flag} gives video {p.stem} twice (also {out[p.stem]})")
        out[p.stem] = p
    return out


def video_specs(job: FinetuneJobConfig, ann: EpicAnnotations, video_ids: Sequence[str], files: InputFiles, *,
                need_audio: bool) -> dict[str, VideoSpec]:
    """The inputs of each video of ``video_ids``: RGB from its frame archive, else its video file;
    its flow archive; its video file's sound track when ``need_audio``.

    Raises:
        InputError: a video lacks a file it needs (every such video is listed).
    """
    missing = []
    for v in video_ids:
        if v not in files.flow:
            missing.append(f"{v} (no --flow archive)")
        if v not in files.frames and v not in files.videos:
            missing.append(f"{v} (no --frames archive or --video)")
        if need_audio and v not in files.videos:
            missing.append(f"{v} (no --video for the sound track; audio.enabled is true)")
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise InputError(f"split {job.data.splits.source_train}: input files missing on the command line for "
                         f"{shown}")
    return {v: VideoSpec(
        video_id=v,
        fps=annotation_fps(v, ann.fps(v), job.decode.annotation_fps),
        video_path=files.videos.get(v),
        frames_archive=files.frames.get(v),
        flow_path=files.flow[v],
        decode_height=job.decode.height,
        flow_stride=job.flow.stride,
        flow_dilation=job.flow.dilation,
        audio=job.audio,
    ) for v in video_ids}


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


@dataclasses.dataclass(frozen=True)
class SourceData:
    """The labelled source segments fine-tuning reads.

    Attributes:
        all_segments: every segment of the source_train split (the BN recalibration pool).
        segments: those trained on (the first ``finetune.max_train_segments``).
        specs: the inputs of every video of ``all_segments``.
        num_verbs, num_nouns: class counts of the annotations.
    """

    all_segments: pd.DataFrame
    segments: pd.DataFrame
    specs: Mapping[str, VideoSpec]
    num_verbs: int
    num_nouns: int


def open_source(job: FinetuneJobConfig, files: InputFiles, *, need_audio: bool) -> SourceData:
    """Read the source_train segments and pair every video with its input files."""
    ann = EpicAnnotations.open(job.data.annotations_dir)
    all_segments = ann.split(job.data.splits.source_train, labelled=True)
    segments = all_segments
    if job.finetune.max_train_segments is not None:
        segments = segments.iloc[: job.finetune.max_train_segments]
    if len(segments) == 0:
        raise ConfigError("the source_train split has no segments")
    specs = video_specs(job, ann, list(all_segments["video_id"].unique()), files, need_audio=need_audio)
    return SourceData(all_segments, segments, specs, len(ann.verbs), len(ann.nouns))


def segment_dataset(segments: pd.DataFrame, data: SourceData, backbone: str, modalities: Sequence[Modality],
                    recipe: Recipe, bb: BackbonesConfig, seed: int) -> SegmentDataset:
    """The training sampling of ``segments`` for ``backbone`` (TBN: ``modalities``; I3D: RGB and flow clips)."""
    size = bb.tbn.input_size if backbone == "tbn" else bb.i3d.input_size
    return SegmentDataset(segments, data.specs, backbone, modalities if backbone == "tbn" else (), recipe.num_segments,
                          size, bb.i3d.clip_length, seed)


def start_weights(model: nn.Module, backbone: str, bb: BackbonesConfig, init: Path | None, last: Path,
                  resume: bool) -> tuple[dict[str, Any] | None, str]:
    """Load the weights training starts from: ``last`` when resuming, else the initial weights.

    Returns:
        ``(the resumed checkpoint or None, the one-line description of the initial weights)``
        (:data:`RANDOM_INIT` when nothing was loaded).
    """
    if not resume:
        return None, initialise(model, backbone, bb, init)
    if not last.exists():
        raise CheckpointError(f"{last}: --resume given but no checkpoint to resume from")
    state = read_checkpoint(last)
    load_strict(model, state_dict_of(state, str(last)), str(last))
    return state, str(state["meta"].get("init", RANDOM_INIT))


def check_initial_weights(init_how: str, backbone: str, recipe: Recipe, *, warn: bool) -> None:
    """Refuse partial BN on random weights (it would freeze nearly every BatchNorm layer at mean 0 /
    variance 1 and the features would collapse); warn (``warn``: rank 0) about random weights."""
    if init_how != RANDOM_INIT:
        return
    if recipe.partial_bn:
        raise ConfigError(
            f"finetune.{backbone}.partial_bn: true needs pretrained weights (backbones.{backbone} checkpoints or "
            "--init), but none are configured: on random weights partial BN freezes nearly every BatchNorm layer "
            "at mean 0 / variance 1 and the features collapse to a constant. Set it to false or give the weights.")
    if warn:
        log.warning("%s starts from RANDOM weights (no initial checkpoint): fine for the demo and smoke runs; "
                    "for results give pretrained weights in backbones.%s", backbone, backbone)


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device, use_amp: bool) -> tuple[
        torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR, torch.amp.GradScaler]:
    """SGD over TBN's parameter groups (:func:`param_groups`), MultiStepLR over completed epochs, and
    the gradient scaler (on only for fp16 autocast: bf16 needs none)."""
    optimizer = torch.optim.SGD(param_groups(model, recipe), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.lr_steps), gamma=recipe.lr_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and autocast_dtype(device) == torch.float16)
    return optimizer, scheduler, scaler


def epoch_loader(data: SegmentDataset, sampler: torch.utils.data.Sampler | None, epoch: int, batch_size: int,
                 ft: FinetuneConfig, device: torch.device) -> DataLoader:
    """The batches of 0-based ``epoch``: the order from ``(finetune.seed, epoch)`` (one process) or
    the distributed sampler's; the draws inside each item from ``(seed, epoch, item)``."""
    data.epoch = epoch
    if sampler is not None:
        sampler.set_epoch(epoch)
    gen = torch.Generator().manual_seed(ft.seed * 1000 + epoch)
    return DataLoader(data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      num_workers=ft.num_workers, drop_last=False, generator=gen,
                      pin_memory=device.type == "cuda", persistent_workers=False)


def train_one_epoch(model: nn.Module, core: nn.Module, loader: DataLoader, backbone: str, recipe: Recipe,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, use_amp: bool,
                    ctx: DistributedContext, epoch: int) -> dict[str, Any]:
    """One pass over ``loader`` with :func:`train_step` (``model`` possibly DDP-wrapped, ``core``
    the bare network whose partial-BN layers stay in eval mode).

    Returns:
        The epoch's metrics row without its time: ``epoch`` (1-based), ``lr`` (of the first
        parameter group), mean ``loss`` and ``verb_top1`` / ``noun_top1`` (fractions) over the
        training segments of every rank, ``segments``.
    """
    device = ctx.device
    model.train()
    if recipe.partial_bn:
        partial_bn_eval(core)
    sums = {"loss": 0.0, "verb": 0, "noun": 0, "n": 0}
    bar = tqdm(loader, desc=f"{backbone} epoch {epoch + 1}/{recipe.epochs}", disable=not ctx.is_main, file=sys.stderr)
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
    if ctx.distributed:
        t = torch.tensor([sums["loss"], sums["verb"], sums["noun"], sums["n"]], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        sums = dict(zip(("loss", "verb", "noun", "n"), t.tolist()))
    return {"epoch": epoch + 1, "lr": lrs[0], "loss": sums["loss"] / sums["n"],
            "verb_top1": sums["verb"] / sums["n"], "noun_top1": sums["noun"] / sums["n"], "segments": int(sums["n"])}


def recalibrate_on_source(core: nn.Module, data: SourceData, backbone: str, modalities: Sequence[Modality],
                          recipe: Recipe, bb: BackbonesConfig, ft: FinetuneConfig, device: torch.device,
                          use_amp: bool) -> int:
    """:func:`recalibrate_batchnorm` over ``finetune.bn_recalibration_segments`` segments drawn
    (seeded) from the whole source split (not only ``max_train_segments``), positions drawn as in
    a further training epoch; returns the number of segments seen (0: switched off)."""
    if ft.bn_recalibration_segments <= 0:
        return 0
    t0 = time.perf_counter()
    pool = segment_dataset(data.all_segments, data, backbone, modalities, recipe, bb, ft.seed)
    pool.epoch = recipe.epochs
    n = min(ft.bn_recalibration_segments, len(pool))
    subset = torch.utils.data.Subset(pool, np.random.default_rng(ft.seed).permutation(len(pool))[:n].tolist())
    loader = DataLoader(subset, batch_size=recipe.batch_size, shuffle=False, num_workers=ft.num_workers,
                        pin_memory=device.type == "cuda")
    with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=use_amp):
        seen = recalibrate_batchnorm(core, loader, backbone, recipe.num_segments, device,
                                     frozen=frozen_batchnorms(core, recipe.partial_bn))
    log.info("re-estimated BatchNorm statistics over %d source segments in %.1f s", seen, time.perf_counter() - t0)
    return seen


def run(job: FinetuneJobConfig, backbone: str, out: Path, files: InputFiles, init: Path | None = None,
        resume: bool = False) -> Path:
    """Fine-tune ``backbone`` on the source split and write ``out`` (and ``last.pt``, ``metrics.csv``
    beside it); returns ``out``.

    Args:
        job: the config sections (:class:`FinetuneJobConfig`).
        backbone: ``tbn`` or ``i3d``.
        out: the final checkpoint.
        files: the input files of every source_train video (:class:`InputFiles`).
        init: initial TBN / I3D two-stream checkpoint (overrides the config's weights).
        resume: continue from ``<out dir>/last.pt``.
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"--backbone must be one of {BACKBONES}, got {backbone!r}")
    bb, ft = job.backbones, job.finetune
    recipe = ft.tbn if backbone == "tbn" else ft.i3d
    modalities = (Modality.RGB, Modality.FLOW) + ((Modality.SPEC,) if job.audio.enabled else ())
    with distributed_run(ft.device, "finetune.device") as ctx:
        device = ctx.device
        torch.manual_seed(ft.seed + ctx.rank)
        data = open_source(job, files, need_audio=backbone == "tbn" and job.audio.enabled)

        model = build_model(backbone, bb, data.num_verbs, data.num_nouns, modalities)
        last = out.parent / "last.pt"
        state, init_how = start_weights(model, backbone, bb, init, last, resume)
        start_epoch = int(state["meta"]["epoch"]) if state is not None else 0
        metrics: list[dict] = list(state.get("metrics", [])) if state is not None else []
        how = (f"resumed from {last} after epoch {start_epoch} (initial weights: {init_how})" if state is not None
               else init_how)
        check_initial_weights(init_how, backbone, recipe, warn=ctx.is_main)
        if recipe.partial_bn:
            freeze_partial_bn(model)
        model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last) if backbone == "tbn" else model
        use_amp = ft.amp and device.type == "cuda"
        optimizer, scheduler, scaler = make_optimizer(model, recipe, device, use_amp)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        core = model
        model = data_parallel(model, ctx)
        if ctx.is_main:
            log.info("%s fine-tuning on %d source segments, %d videos, device %s x%d; init: %s",
                     backbone, len(data.segments), len(data.specs), device, ctx.world_size, how)

        train_data = segment_dataset(data.segments, data, backbone, modalities, recipe, bb, ft.seed)
        sampler = (torch.utils.data.DistributedSampler(train_data, ctx.world_size, ctx.rank, shuffle=True, seed=ft.seed)
                   if ctx.distributed else None)
        meta = {"backbone": backbone, "num_verbs": data.num_verbs, "num_nouns": data.num_nouns,
                "modalities": [m.value for m in modalities] if backbone == "tbn" else ["rgb", "flow"],
                "input_size": train_data.size, "clip_length": bb.i3d.clip_length, "init": init_how}
        for epoch in range(start_epoch, recipe.epochs):
            t0 = time.perf_counter()
            loader = epoch_loader(train_data, sampler, epoch, recipe.batch_size, ft, device)
            row = train_one_epoch(model, core, loader, backbone, recipe, optimizer, scaler, use_amp, ctx, epoch)
            scheduler.step()
            row["seconds"] = round(time.perf_counter() - t0, 3)
            metrics.append(row)
            if ctx.is_main:
                log.info("epoch %d: %s", epoch + 1, row)
                save_checkpoint(last, {"state_dict": core.state_dict(), "meta": {**meta, "epoch": epoch + 1},
                                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                       "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                                       "metrics": metrics})
                write_metrics_csv(out.parent / "metrics.csv", metrics)
        if ctx.is_main:
            if not metrics:
                raise ConfigError(f"nothing to train: epochs={recipe.epochs}")
            recalibrated = recalibrate_on_source(core, data, backbone, modalities, recipe, bb, ft, device, use_amp)
            save_checkpoint(out, {"state_dict": core.state_dict(),
                                  "meta": {**meta, "epoch": recipe.epochs, "bn_recalibration_segments": recalibrated},
                                  "metrics": metrics})
            log.info("wrote %s", out)
        barrier(ctx)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m extractors.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="config.yaml")
    parser.add_argument("--backbone", required=True, choices=BACKBONES)
    parser.add_argument("--out", required=True, type=Path, help="final checkpoint, e.g. results/finetune/tbn/checkpoint.pt")
    parser.add_argument("--video", type=Path, nargs="+", action="extend", default=[],
                        help="video file(s) <video_id><ext>: RGB frames of a video without --frames; TBN's sound track")
    parser.add_argument("--frames", type=Path, nargs="+", action="extend", default=[],
                        help="frame archive(s) <video_id>.tar (tar of frame_%%010d.jpg): RGB frames")
    parser.add_argument("--flow", type=Path, nargs="+", action="extend", default=[],
                        help="flow archive(s) <video_id>.tar (u/, v/ frame_%%010d.jpg)")
    parser.add_argument("--init", type=Path, default=None, help="initial TBN / I3D two-stream checkpoint (overrides config)")
    parser.add_argument("--resume", action="store_true", help="continue from <out dir>/last.pt")
    return parser


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, FinetuneJobConfig)
    files = InputFiles.from_paths(args.video, args.frames, args.flow)
    run(job, args.backbone, args.out, files, args.init, args.resume)


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m extractors.finetune", _parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
