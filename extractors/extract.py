"""Extract per-segment backbone features of one video into the feature contract (``m3em.epic.features``).

    python -m extractors.extract --config config.yaml --video-id P01_101 \
        --stream tbn_rgb --out results/features/tbn_rgb/P01_101.safetensors \
        [--stream i3d_rgb --out ... --stream tbn_audio --out ...] \
        --checkpoint results/finetune/tbn/checkpoint.pt [--checkpoint results/finetune/i3d/checkpoint.pt] \
        [--video P01_101.MP4] [--frames P01_101.tar] [--flow flow/P01_101.tar] [--crops crops/P01_101.parquet]

One job = one video, any of its streams (repeat ``--stream``/``--out`` in pairs; without ``--out``
the files go to ``features.features_dir/<stream>/<video>.safetensors``), with one ``--checkpoint``
per backbone those streams use (each checkpoint's ``meta`` says its backbone; each is loaded once).
The segments and positions are shared, and each segment's RGB and flow frames are decoded once for
all streams (:meth:`VideoInputs.shared_decode`): TBN RGB, its crop and the I3D clip read the same
frames. Each stream sees exactly the batches a one-stream job would, so its file is identical to
what a job extracting that stream alone writes. Streams and what they need:

========================  ==========================  ==============================================
stream                    input                       output per segment (fp16)
========================  ==========================  ==============================================
``tbn_rgb``               ``--video`` or ``--frames``  ``[P, 1024, h, w]`` ``inception_5b_output``
``tbn_flow``              ``--flow``                  ``[P, 1024, h, w]`` (5-pair flow stack)
``tbn_audio``             ``--video`` (sound track)   ``[P, 1024]`` (8x8 map averaged)
``tbn_crop_rgb``          frames + ``--crops``        ``[P, 1024, h, w]`` on the hand-object crop
``tbn_crop_flow``         ``--flow`` + ``--crops``    ``[P, 1024, h, w]`` on the crop
``i3d_rgb``/``i3d_flow``  frames / ``--flow``         ``[P, 1024, h, w]``: ``Mixed_5c`` of a
                                                      ``clip_length`` clip, averaged over time
========================  ==========================  ==============================================

h = w = 7 at input 224. The input size and I3D clip length are those the checkpoint was
fine-tuned with (its ``meta``), not re-read from ``backbones``. The crop streams use the TBN
fine-tuned on full frames (it never saw crops), the same ``--checkpoint`` as ``tbn_rgb``. Segments: every row of every annotation split
file present in ``data.annotations_dir`` whose video is this one (a narration id listed in two
splits must have the same frames), sorted by start frame; positions are
:func:`m3em.epic.features.segment_positions` (P from ``features.positions``). Input rules (geometry,
flow stacks, clip padding, short flow archives, NaN) are in :mod:`extractors.backbones.inputs`.

Device: ``features.device``; CUDA requested but absent is an error. On GPU the models run in
inference mode with autocast (``features.autocast``) and channels-last memory, large batches
(``features.batch_size`` segment positions), and inputs are decoded in ``features.num_workers``
worker processes. The CPU runs the same code in fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from extractors.audio import AudioConfig
from extractors.backbones.i3d import I3DTwoStream, normalise_i3d
from extractors.backbones.inputs import VideoInputs, VideoSpec
from extractors.backbones.tbn import TBN, Modality, normalise, pool_vector
from extractors.backbones.weights import CheckpointError, load_strict, read_checkpoint, state_dict_of
from extractors.detections.config import CropsConfig
from extractors.flow import FlowConfig
from extractors.video import DecodeConfig, annotation_fps
from m3em.epic.annotations import EpicAnnotations, video_segments
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError, DataConfig
from m3em.epic.features import FeaturesConfig, feature_path, segments_frames, write_features
from m3em.epic.streams import EXTRACTED_STREAMS, Backbone, InputKind, stream_info
from m3em.runtime import resolve_device

log = logging.getLogger("extractors.extract")


@dataclasses.dataclass(frozen=True)
class ExtractJobConfig:
    """The config sections ``python -m extractors.extract`` reads (``features`` and ``data`` required)."""

    data: DataConfig
    features: FeaturesConfig
    decode: DecodeConfig = DecodeConfig()
    flow: FlowConfig = FlowConfig()
    audio: AudioConfig = AudioConfig()
    crops: CropsConfig = CropsConfig()


#: The TBN sub-network of each input kind.
TBN_MODALITY: dict[InputKind, Modality] = {InputKind.RGB: Modality.RGB, InputKind.FLOW: Modality.FLOW,
                                           InputKind.AUDIO: Modality.SPEC}


def backbone_of(stream: str) -> str:
    """``"tbn"`` / ``"i3d"``: the backbone (and checkpoint) that computes ``stream``."""
    return stream_info(stream).backbone.value


# ---------------------------------------------------------------------------------------------
# Segments


# ---------------------------------------------------------------------------------------------
# Inputs


class PositionDataset(Dataset):
    """Segment ``i`` -> ``{stream: (P, ...) array}`` for the requested streams (uint8 / float32).

    Args:
        sizes: input side of each image stream (its backbone checkpoint's ``input_size``).
        clip_length: I3D clip length (its checkpoint's; unused without I3D streams).
    """

    def __init__(self, spec: VideoSpec, segments: pd.DataFrame, positions: np.ndarray, streams: Sequence[str],
                 sizes: Mapping[str, int], clip_length: int) -> None:
        self.spec = spec
        self.bounds = segments[["start_frame", "stop_frame"]].to_numpy(np.int64)
        self.positions = positions
        self.streams = tuple(streams)
        self.sizes = {s: int(sizes[s]) for s in self.streams if stream_info(s).input_kind is not InputKind.AUDIO}
        self.clip_length = clip_length
        self._inputs: VideoInputs | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_inputs"] = None  # each worker opens its own decoders
        return state

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if self._inputs is None:
            self._inputs = VideoInputs(self.spec)
        v, pos, (start, stop) = self._inputs, self.positions[i], self.bounds[i]
        out = {}
        with v.shared_decode():  # the segment's frames are decoded once for all its streams
            for s in self.streams:
                info, size = stream_info(s), self.sizes.get(s, 0)
                if info.input_kind is InputKind.AUDIO:
                    out[s] = v.spectrogram(pos)
                elif info.backbone is Backbone.I3D:  # clips around each position, no crop
                    clips = v.rgb_clips if info.input_kind is InputKind.RGB else v.flow_clips
                    out[s] = clips(pos, int(start), int(stop), self.clip_length, size)
                elif info.input_kind is InputKind.RGB:
                    out[s] = v.rgb(pos, size, crop=info.crop)
                elif info.input_kind is InputKind.FLOW:
                    out[s] = v.flow_stack(pos, size, crop=info.crop)
                else:
                    raise ValueError(f"stream {s!r}: extraction has no {info.backbone.value} input")
        return out


# ---------------------------------------------------------------------------------------------
# Models


def load_backbone(checkpoint: Path) -> tuple[torch.nn.Module, dict]:
    """The fine-tuned model of a ``extractors.finetune`` checkpoint (strict) and its meta."""
    obj = read_checkpoint(checkpoint)
    meta = obj.get("meta")
    if not isinstance(meta, Mapping) or "backbone" not in meta:
        raise CheckpointError(f"{checkpoint}: no 'meta' with the backbone; write checkpoints with extractors.finetune")
    if meta["backbone"] == "tbn":
        modalities = tuple(Modality(m) for m in meta["modalities"])
        model: torch.nn.Module = TBN(modalities, int(meta["num_verbs"]), int(meta["num_nouns"]))
    elif meta["backbone"] == "i3d":
        model = I3DTwoStream(int(meta["num_verbs"]), int(meta["num_nouns"]))
    else:
        raise CheckpointError(f"{checkpoint}: unknown backbone {meta['backbone']!r}")
    load_strict(model, state_dict_of(obj, str(checkpoint)), str(checkpoint))
    return model.eval(), dict(meta)


class StreamRunner:
    """Runs one backbone's streams on collated uint8/float batches; output fp16 on the CPU.

    Args:
        model: a :class:`TBN` or :class:`I3DTwoStream` in eval mode.
        device: where to run.
        autocast: ``bf16`` / ``fp16`` / ``none`` (GPU only; the CPU runs fp32).
        channels_last: NHWC / NDHWC memory format on GPU.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, autocast: str = "none",
                 channels_last: bool = True) -> None:
        self.device = device
        self.model = model.to(device).eval()
        self.channels_last = channels_last and device.type == "cuda"
        self.amp = device.type == "cuda" and autocast != "none"
        self.amp_dtype = torch.bfloat16 if autocast == "bf16" else torch.float16
        if self.channels_last and isinstance(model, TBN):
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.channels_last and isinstance(model, I3DTwoStream):
            self.model = self.model.to(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def __call__(self, stream: str, x: torch.Tensor) -> torch.Tensor:
        """``(N, ...)`` raw inputs of ``stream`` -> ``(N, 1024, h, w)`` / ``(N, 1024)`` fp16 on the CPU."""
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            info = stream_info(stream)
            if info.backbone is Backbone.TBN:
                if not isinstance(self.model, TBN):
                    raise CheckpointError(f"stream {stream} needs a TBN checkpoint")
                m = TBN_MODALITY[info.input_kind]
                if m not in self.model.modalities:
                    raise CheckpointError(f"stream {stream}: the TBN checkpoint has no {m.value} stream")
                x = normalise(m, x)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = self.model.spatial(m, x)
                if m is Modality.SPEC:
                    y = pool_vector(y.float())
            else:
                if not isinstance(self.model, I3DTwoStream):
                    raise CheckpointError(f"stream {stream} needs an I3D checkpoint")
                net = self.model.rgb if info.input_kind is InputKind.RGB else self.model.flow
                x = normalise_i3d(x)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                y = net.spatial(x).float().mean(dim=2)  # Mixed_5c averaged over time
        return y.to(torch.float16).cpu()


# ---------------------------------------------------------------------------------------------


def extract(spec: VideoSpec, segments: pd.DataFrame, streams: Sequence[str], runners: Mapping[str, StreamRunner],
            feats: FeaturesConfig, sizes: Mapping[str, int], clip_length: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of every segment for each stream; returns ``({stream: [n, P, ...] fp16}, frames [n, P])``.

    Args:
        runners: the runner of each backbone the streams use (``"tbn"`` / ``"i3d"``).
        sizes: input side per image stream; clip_length: I3D clip length.
    """
    positions = segments_frames(segments, feats.positions)
    data = PositionDataset(spec, segments, positions, streams, sizes, clip_length)
    per_batch = max(1, feats.batch_size // feats.positions)
    cuda = any(r.device.type == "cuda" for r in runners.values())
    loader = DataLoader(data, batch_size=per_batch, shuffle=False, num_workers=feats.num_workers,
                        pin_memory=cuda, collate_fn=_collate,
                        prefetch_factor=4 if feats.num_workers > 0 else None)
    out: dict[str, np.ndarray] = {}
    row = 0
    for batch in tqdm(loader, desc=f"{spec.video_id} {'+'.join(streams)}", unit="batch", file=sys.stderr):
        n = None
        for s in streams:
            x = batch[s]
            n, p = x.shape[:2]
            y = runners[backbone_of(s)](s, x.reshape(n * p, *x.shape[2:]))
            y = y.reshape(n, p, *y.shape[1:]).numpy()
            if s not in out:
                out[s] = np.empty((len(data), *y.shape[1:]), dtype=np.float16)
            out[s][row : row + n] = y
        row += n
    return out, positions


def _collate(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m extractors.extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--video-id", required=True)
    parser.add_argument("--stream", required=True, action="append", choices=EXTRACTED_STREAMS,
                        help="repeatable: the streams this job writes (any backbones)")
    parser.add_argument("--out", action="append", type=Path, default=None,
                        help="output file per --stream, same order (default: features.features_dir/<stream>/<video>.safetensors)")
    parser.add_argument("--checkpoint", required=True, action="append", type=Path,
                        help="extractors.finetune checkpoint; repeatable, one per backbone the streams use")
    parser.add_argument("--video", type=Path, help="video file (RGB frames unless --frames; the sound track for tbn_audio)")
    parser.add_argument("--frames", type=Path, help="official frame archive (tar of frame_%%010d.jpg); RGB frames come "
                        "from it when given, even with --video")
    parser.add_argument("--flow", type=Path, help="flow archive (u/, v/ frame_%%010d.jpg)")
    parser.add_argument("--crops", type=Path, help="crop table (Parquet) for the crop streams")
    return parser


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> None:
        run(args)  # the written files it returns are for callers in Python, not the exit status

    return run_entry_point("python -m extractors.extract", _parser(), body, argv)


def load_runners(checkpoints: Sequence[Path], streams: Sequence[str], device: torch.device, feats: FeaturesConfig,
                 ) -> tuple[dict[str, StreamRunner], dict[str, dict], dict[str, Path]]:
    """One runner per backbone the streams use, each from its own checkpoint (read once).

    Returns ``({backbone: runner}, {backbone: meta}, {backbone: checkpoint path})``; a checkpoint
    no stream uses, two of one backbone, or a backbone without one is an error.
    """
    needed = sorted({backbone_of(s) for s in streams})
    runners: dict[str, StreamRunner] = {}
    metas: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    for path in checkpoints:
        model, meta = load_backbone(path)
        b = meta["backbone"]
        if b in paths:
            raise ConfigError(f"two {b} checkpoints given: {paths[b]} and {path}")
        if b not in needed:
            raise CheckpointError(f"{path}: a {b} checkpoint cannot extract {list(streams)} (none of them is a {b} stream)")
        runners[b] = StreamRunner(model, device, feats.autocast, feats.channels_last)
        metas[b], paths[b] = meta, path
    missing = [b for b in needed if b not in paths]
    if missing:
        raise ConfigError(f"streams {list(streams)} need a {' and a '.join(missing)} checkpoint (--checkpoint)")
    return runners, metas, paths


def run(args: argparse.Namespace) -> list[Path]:
    """The CLI's work (see :func:`main`); returns the written files."""
    job = load_job_config(args.config, ExtractJobConfig)
    feats, decode, flow, audio, crops = job.features, job.decode, job.flow, job.audio, job.crops
    streams = list(args.stream)
    if len(set(streams)) != len(streams):
        raise ConfigError(f"--stream given twice: {streams}")
    disabled = [s for s in streams if s not in feats.streams]
    if disabled:
        raise ConfigError(f"streams {disabled} are not in features.streams {list(feats.streams)}")
    if args.out is not None and len(args.out) != len(streams):
        raise ConfigError(f"give one --out per --stream ({len(streams)} streams, {len(args.out)} outputs)")
    outs = list(args.out) if args.out is not None else [feature_path(feats.features_dir, s, args.video_id) for s in streams]
    kinds = {stream_info(s).input_kind for s in streams}
    needs_frames = InputKind.RGB in kinds
    if needs_frames and args.video is None and args.frames is None:
        raise ConfigError(f"streams {streams} need RGB frames: give --video or --frames")
    if InputKind.AUDIO in kinds and args.video is None:
        raise ConfigError(f"streams {streams} need the video file (--video) for its sound track")
    if InputKind.FLOW in kinds and args.flow is None:
        raise ConfigError(f"streams {streams} need --flow")
    if any(stream_info(s).crop for s in streams) and args.crops is None:
        raise ConfigError(f"streams {streams} need --crops")

    device = resolve_device(feats.device, "features.device")
    t0 = time.perf_counter()
    runners, metas, ckpt_of = load_runners(list(args.checkpoint), streams, device, feats)
    ann = EpicAnnotations.open(job.data.annotations_dir)
    segments = video_segments(ann, args.video_id)
    spec = VideoSpec(
        video_id=args.video_id, fps=annotation_fps(args.video_id, ann.fps(args.video_id), decode.annotation_fps),
        video_path=args.video, frames_archive=args.frames, flow_path=args.flow, crops_path=args.crops,
        decode_height=decode.height, flow_stride=flow.stride, flow_dilation=flow.dilation, flow_box=crops.flow_box,
        audio=audio,
    )
    sizes = {s: int(metas[backbone_of(s)]["input_size"]) for s in streams}
    clip_length = int(metas["i3d"]["clip_length"]) if "i3d" in metas else 0
    features, positions = extract(spec, segments, streams, runners, feats, sizes, clip_length)
    nids = segments["narration_id"].astype(str).tolist()
    for s, out in zip(streams, outs):
        meta = metas[backbone_of(s)]
        producer = {"backbone": meta["backbone"], "checkpoint": str(ckpt_of[meta["backbone"]]),
                    "checkpoint_epoch": meta.get("epoch"),
                    "input_size": meta["input_size"], "device": str(device),
                    "autocast": feats.autocast if device.type == "cuda" else "none"}
        if stream_info(s).backbone is Backbone.I3D:
            producer["clip_length"] = meta["clip_length"]
        write_features(out, features[s], nids, positions, stream=s, video_id=args.video_id, producer=producer)
    log.info("%s: %d segments x %d positions, streams %s in %.1f s (%s)", args.video_id, len(segments), feats.positions,
             streams, time.perf_counter() - t0, json.dumps([str(o) for o in outs]))
    return outs


if __name__ == "__main__":
    raise SystemExit(main())
