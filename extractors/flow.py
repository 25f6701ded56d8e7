"""The flow stage: one video in, one flow archive (official EPIC layout) out.

    python -m extractors.flow --config config.yaml --video-id P01_101 \\
        (--video videos/P01_101.MP4 | --frames rgb_frames/P01_101.tar) --out results/flow/P01_101.tar

Frames come from :mod:`extractors.video` (decoded at ``decode.height``; annotation frame rate from
the video table under ``decode.annotation_fps``, or ``--fps``), are converted to grey
(``cv2`` RGB2GRAY, the same weights as EPIC's BGR2GRAY), paired as in
:func:`extractors.flow_archive.flow_pairs` (``flow.stride``, ``flow.dilation``), solved with
TV-L1 (:func:`extractors.tvl1.compute_flow`, backend ``opencv`` on the CPU or ``torch`` on CPU or
CUDA), quantised with ``flow.bound`` and appended to the archive chunk by chunk, so memory is
bounded by one chunk (``flow.batch_size`` pairs) whatever the video length. The archive appears
only when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from extractors.flow_archive import FlowArchiveWriter, flow_pairs, n_flow_frames, quantise_flow
from extractors.tvl1 import BACKENDS, TVL1Params, compute_flow
from extractors.video import DecodeConfig, FrameSource, FrameSourceError, annotation_fps, open_frames
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError, DataConfig

log = logging.getLogger("extractors.flow")


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The ``flow:`` config section.

    Attributes:
        backend: ``opencv`` (CPU reference) or ``torch`` (batched, CPU or CUDA).
        device: ``cpu`` or ``cuda[:i]`` (``torch`` backend); CUDA absent is an error.
        batch_size: flow pairs decoded and solved per chunk (bounds memory; on CUDA the torch
            backend solves up to 64 of them at once).
        stride: RGB frames between consecutive flow frames.
        dilation: RGB frames between the two frames of a pair.
        bound: quantisation bound B in pixels.
        jpeg_quality: JPEG quality of the stored u/v images (EPIC: OpenCV's default 95).
        threads: CPU threads for OpenCV and torch.
        tvl1: TV-L1 solver parameters.
    """

    backend: str = "opencv"
    device: str = "cpu"
    batch_size: int = 16
    stride: int = 1
    dilation: int = 1
    bound: float = 8.0
    jpeg_quality: int = 95
    threads: int = 2
    tvl1: TVL1Params = TVL1Params()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"flow.backend: {self.backend!r} is not one of {list(BACKENDS)}")
        if self.backend == "opencv" and self.device != "cpu":
            raise ConfigError(f"flow.device: the opencv backend runs on the CPU only, got {self.device!r}")
        for name in ("batch_size", "stride", "dilation", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"flow.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.bound > 0:
            raise ConfigError(f"flow.bound: must be > 0, got {self.bound}")


def to_grey(frames: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 RGB -> ``(N, H, W)`` uint8 grey (ITU-R 601 weights, OpenCV rounding)."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    out = np.empty(frames.shape[:3], dtype=np.uint8)
    for i, f in enumerate(frames):
        out[i] = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
    return out


def compute_video_flow(frames: FrameSource, out: str | Path, cfg: FlowConfig, *, progress: bool = True) -> int:
    """Compute the flow archive of one video; returns the number of flow frames written.

    Args:
        frames: the video's RGB frames.
        out: the archive to write (atomically).
        cfg: the flow section.
        progress: show a tqdm bar.
    """
    n_flow = n_flow_frames(frames.n_frames, cfg.stride, cfg.dilation)
    if n_flow == 0:
        raise FrameSourceError(
            f"{frames.path}: {frames.n_frames} frame(s) are too few for one flow pair at dilation {cfg.dilation}"
        )
    with (
        FlowArchiveWriter(out, jpeg_quality=cfg.jpeg_quality) as writer,
        tqdm(total=n_flow, desc=f"flow {frames.video_id}", unit="pair", disable=not progress) as bar,
    ):
        cache: dict[int, np.ndarray] = {}  # grey frames of the previous chunk that this one reuses
        for start in range(1, n_flow + 1, cfg.batch_size):
            ks = np.arange(start, min(start + cfg.batch_size, n_flow + 1))
            first, second = flow_pairs(ks, cfg.stride, cfg.dilation)
            # Decode each RGB frame once: pairs share frames within a chunk and across chunk
            # boundaries (re-reading an earlier frame would make the decoder seek back).
            needed = np.unique(np.concatenate([first, second]))
            new = np.array([n for n in needed.tolist() if n not in cache], dtype=np.int64)
            if new.size:
                cache.update(zip(new.tolist(), to_grey(frames.get(new)), strict=True))
            prev = np.stack([cache[n] for n in first.tolist()])
            nxt = np.stack([cache[n] for n in second.tolist()])
            flow = compute_flow(prev, nxt, cfg.tvl1, backend=cfg.backend, device=cfg.device)
            writer.write(quantise_flow(flow, cfg.bound))
            bar.update(len(ks))
            next_first = int(first[-1]) + cfg.stride
            cache = {n: g for n, g in cache.items() if n >= next_first}
    return n_flow


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m extractors.flow", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path, help="pipeline config.yaml (sections decode, flow, data)")
    p.add_argument("--video-id", required=True, help="video id, e.g. P01_101")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", type=Path, help="the video file")
    src.add_argument("--frames", type=Path, help="an official RGB frame archive (tar of frame_%%010d.jpg)")
    p.add_argument("--out", required=True, type=Path, help="output archive (.tar, u/ and v/ frame_%%010d.jpg)")
    p.add_argument("--fps", type=float, default=None,
                   help="annotation frame rate; default: the video table of data.annotations_dir under "
                        "decode.annotation_fps")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (OpenCV / torch); default flow.threads. The workflow passes the job's threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@dataclasses.dataclass(frozen=True)
class FlowJobConfig:
    """The config sections ``python -m extractors.flow`` reads (``decode``/``flow`` may be left out)."""

    data: DataConfig
    decode: DecodeConfig = DecodeConfig()
    flow: FlowConfig = FlowConfig()


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, FlowJobConfig)
    decode, flow_cfg = job.decode, job.flow
    if args.fps is not None:
        fps = args.fps
    else:
        table = EpicAnnotations.open(job.data.annotations_dir)
        fps = annotation_fps(args.video_id, table.fps(args.video_id), decode.annotation_fps)
    threads = flow_cfg.threads if args.threads is None else args.threads
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    cv2.setNumThreads(threads)
    import torch

    torch.set_num_threads(threads)
    frames = open_frames(args.video_id, fps=fps, height=decode.height, video_path=args.video,
                         frames_archive=args.frames, threads=decode.threads)
    t0 = time.perf_counter()
    n = compute_video_flow(frames, args.out, flow_cfg, progress=not args.no_progress)
    dt = time.perf_counter() - t0
    w, h = frames.size
    log.info("%s: %d flow frames (%dx%d, stride %d, dilation %d, %s/%s) in %.1f s (%.1f pairs/s) -> %s",
             args.video_id, n, w, h, flow_cfg.stride, flow_cfg.dilation, flow_cfg.backend, flow_cfg.device, dt,
             n / dt, args.out)


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("python -m extractors.flow", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
