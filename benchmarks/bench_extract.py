"""Feature extraction speed: the whole pipeline vs the model alone, side by side.

    python benchmarks/bench_extract.py [--device cpu|cuda] [--streams tbn_rgb tbn_flow tbn_audio]
        [--size 96] [--segments 40] [--positions 5] [--batch-size 20] [--num-workers 1] [--threads 1]
        [--autocast bf16] [--height 128] [--seconds 20] [--workdir DIR]

Inputs are generated once into ``--workdir``: an H.264 + AAC clip (``testsrc2`` with temporal
noise, a 440 Hz tone) at ``--height`` (16:9) and 50 fps, and a flow archive in the release layout
(smooth random flow quantised to JPEG, stride 1), plus ``--segments`` evenly spread segments of 1 s.

Rows (same random TBN / I3D weights, same batches):

* ``pipeline``: :func:`extractors.extract.extract` end to end: decode (decord), flow archive
  reads, spectrograms, geometry in ``--num-workers`` DataLoader workers, then the model;
* ``model only``: the same number of batches of the same size, run on one pre-loaded batch
  already in memory (host tensors, moved to the device per call exactly as in the pipeline),
  timed before and after the pipeline row and averaged (the machine's load average is printed).

The unit is *segment positions per second*, one position = every requested stream at that frame.
``--device cuda`` errors when CUDA is absent (no fallback). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pandas as pd
import torch

from extractors.audio import AudioConfig
from extractors.backbones.i3d import I3DTwoStream
from extractors.backbones.inputs import VideoSpec
from extractors.backbones.tbn import TBN, Modality
from extractors.extract import PositionDataset, StreamRunner, _collate, backbone_of, extract
from extractors.flow_archive import FlowArchiveWriter, n_flow_frames
from m3em.epic.features import FeaturesConfig, segment_positions
from m3em.epic.streams import EXTRACTED_STREAMS
from m3em.runtime import resolve_device

FPS = 50


def make_inputs(workdir: Path, height: int, seconds: float) -> tuple[Path, Path, int]:
    width = int(round(height * 16 / 9 / 2)) * 2
    clip = workdir / f"clip_{height}_{seconds:g}s.mp4"
    if not clip.exists():
        tmp = clip.with_suffix(".tmp.mp4")
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                        "-t", str(seconds), "-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast",
                        "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(tmp)], check=True)
        tmp.rename(clip)
    n_rgb = int(round(seconds * FPS))
    flow = workdir / f"flow_{height}_{seconds:g}s.tar"
    if not flow.exists():
        rng = np.random.default_rng(0)
        with FlowArchiveWriter(flow) as w:
            n = n_flow_frames(n_rgb, 1, 1)
            for s in range(0, n, 32):
                k = min(32, n - s)
                low = rng.normal(128, 20, size=(k, height // 8, width // 8, 2)).astype(np.float32)
                up = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in low])
                w.write(np.clip(up, 0, 255).astype(np.uint8))
    return clip, flow, n_rgb


def build_runner(streams: list[str], device: torch.device, autocast: str, channels_last: bool = True) -> StreamRunner:
    """The TBN (RGB, Flow, Spec) or I3D two-stream model of ``streams``, random weights (seed 0), 97/300 heads."""
    torch.manual_seed(0)
    if backbone_of(streams[0]) == "tbn":
        model = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 97, 300)
    else:
        model = I3DTwoStream(97, 300)
    return StreamRunner(model.eval(), device, autocast, channels_last=channels_last)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_video(workdir: Path, height: int, seconds: float, n_segments: int) -> tuple[VideoSpec, pd.DataFrame]:
    """The generated clip + flow archive (:func:`make_inputs`) and ``n_segments`` 1-s segments spread over it."""
    clip, flow, n_rgb = make_inputs(workdir, height, seconds)
    starts = np.linspace(1, n_rgb - FPS, n_segments).astype(int)
    segments = pd.DataFrame({"narration_id": [f"s{i}" for i in range(n_segments)], "start_frame": starts,
                             "stop_frame": starts + FPS - 1})
    spec = VideoSpec("P01_101", float(FPS), video_path=clip, flow_path=flow, decode_height=height,
                     flow_stride=1, flow_dilation=1, audio=AudioConfig())
    return spec, segments


def first_batch(spec: VideoSpec, segments: pd.DataFrame, streams: list[str], size: int, clip_length: int,
                positions: int, n_segments: int) -> dict[str, torch.Tensor]:
    """The pipeline's inputs of the first ``n_segments`` segments: ``{stream: (n_segments, positions, ...)}``."""
    pos = np.stack([segment_positions(int(a), int(b), positions) for a, b in
                    segments[["start_frame", "stop_frame"]].to_numpy()])
    ds = PositionDataset(spec, segments, pos, streams, {s: size for s in streams}, clip_length)
    return _collate([ds[i] for i in range(n_segments)])


def measure(streams: list[str], device: torch.device, *, size: int = 96, clip_length: int = 8, segments: int = 40,
            positions: int = 5, batch_size: int = 20, num_workers: int = 1, autocast: str = "bf16",
            channels_last: bool = True, height: int = 128, seconds: float = 20.0,
            workdir: Path | None = None) -> dict:
    """Pipeline vs model-only segment positions/s of one backbone's ``streams`` (see the module docstring).

    Returns a dict with seconds and positions/s of both rows, their ratio, the 1-min load average
    before and after, and (CUDA) the peak GPU memory in GB.
    """
    if len({backbone_of(s) for s in streams}) != 1:
        raise ValueError(f"streams of one backbone only, got {streams}")
    workdir = workdir or Path(tempfile.gettempdir()) / "m3em_bench_extract"
    workdir.mkdir(parents=True, exist_ok=True)
    spec, segs = bench_video(workdir, height, seconds, segments)
    feats = FeaturesConfig(positions=positions, batch_size=batch_size, device=str(device),
                           num_workers=num_workers, autocast=autocast, channels_last=channels_last)
    runner = build_runner(streams, device, autocast, channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # warm-up (cudnn / oneDNN kernel selection) on one batch, also the batch the model-only row reuses
    per_batch = max(1, batch_size // positions)
    batch = first_batch(spec, segs, streams, size, clip_length, positions, min(per_batch, segments))
    flat = {s: x.reshape(-1, *x.shape[2:]) for s, x in batch.items()}
    if device.type == "cuda":
        flat = {s: x.pin_memory() for s, x in flat.items()}
    for s in streams:
        runner(s, flat[s])
    sync(device)
    n_batches = -(-segments // per_batch)

    def model_only() -> float:
        t0 = time.perf_counter()
        for _ in range(n_batches):
            for s in streams:
                runner(s, flat[s])
        sync(device)
        return time.perf_counter() - t0

    # model-only before and after the pipeline (mean), so load drift on a shared machine hits both rows
    load0 = os.getloadavg()[0]
    before = model_only()
    t0 = time.perf_counter()
    out, _ = extract(spec, segs, streams, {s.split("_")[0]: runner for s in streams}, feats,
                     {s: size for s in streams}, clip_length)
    sync(device)
    pipe_s = time.perf_counter() - t0
    model_s = (before + model_only()) / 2
    load1 = os.getloadavg()[0]
    if not all(np.isfinite(v.astype(np.float32)).all() for v in out.values()):
        raise FloatingPointError(f"extraction of {'+'.join(streams)} gave non-finite features")
    n_pos = segments * positions
    result = {"streams": list(streams), "size": size, "height": height, "segments": segments, "positions": positions,
              "batch_size": batch_size, "num_workers": num_workers,
              "autocast": autocast if device.type == "cuda" else "none", "load_average": [load0, load1],
              "model_only_s": model_s, "pipeline_s": pipe_s, "model_only_positions_per_s": n_pos / model_s,
              "pipeline_positions_per_s": n_pos / pipe_s, "pipeline_over_model_only": model_s / pipe_s}
    if device.type == "cuda":
        result["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--streams", nargs="+", default=["tbn_rgb", "tbn_flow", "tbn_audio"], choices=EXTRACTED_STREAMS)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--clip-length", type=int, default=8)
    p.add_argument("--segments", type=int, default=40)
    p.add_argument("--positions", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=20, help="segment positions per forward")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--autocast", default="bf16", choices=["bf16", "fp16", "none"])
    p.add_argument("--height", type=int, default=128, help="decoded frame height (EPIC: 256)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    if len({backbone_of(s) for s in args.streams}) != 1:
        p.error("streams of one backbone only")
    device = resolve_device(args.device)  # cuda without CUDA -> ConfigError, no fallback
    torch.set_num_threads(args.threads)
    r = measure(args.streams, device, size=args.size, clip_length=args.clip_length, segments=args.segments,
                positions=args.positions, batch_size=args.batch_size, num_workers=args.num_workers,
                autocast=args.autocast, height=args.height, seconds=args.seconds, workdir=args.workdir)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    load0, load1 = r["load_average"]
    print(f"\n{dev}; torch {torch.__version__}; streams {'+'.join(args.streams)}; input {args.size}; "
          f"video {args.height}p; {args.segments} segments x {args.positions} positions; batch {args.batch_size}; "
          f"workers {args.num_workers}; threads {args.threads}; autocast {r['autocast']}; "
          f"load average {load0:.1f} -> {load1:.1f}\n")
    print("| row | seconds | segment positions/s | ratio to model only |")
    print("|---|---|---|---|")
    print(f"| model only (pre-loaded batch) | {r['model_only_s']:.2f} | {r['model_only_positions_per_s']:.1f} | 1.00 |")
    print(f"| pipeline (decode + flow + audio + model) | {r['pipeline_s']:.2f} | {r['pipeline_positions_per_s']:.1f} | "
          f"{r['pipeline_over_model_only']:.2f} |")


if __name__ == "__main__":
    main()
