"""Decode speed of the frame source (decord) on generated clips, side by side with baselines.

    python benchmarks/bench_decode.py [--seconds 4] [--fps 50] [--threads 0] [--workdir DIR]

Clips (written once into --workdir with the imageio-ffmpeg binary; ``testsrc2`` plus temporal
noise, fixed bit rate, a keyframe every 25 frames, so that decoding costs are closer to camera
footage than a clean, long-GOP test pattern):

* 456x256 H.264 at 1 Mbit/s (the size of EPIC's released frames),
* 1920x1080 H.264 (EPIC-55 cameras) and 1920x1080 HEVC (EPIC-100 extension cameras), 15 Mbit/s.

Rows, all through :class:`extractors.video.VideoFrameSource` unless noted, reading every
annotation frame in order in batches of 64 (what the flow stage does), output 456x256 RGB:

* ``456x256 -> 456x256``: no scaling;
* ``1080p -> 456x256 (decord scales)``: our path, swscale inside the decoder;
* ``1080p native + cv2.resize`` (baseline): decode at 1920x1080 with decord, then
  ``cv2.resize(INTER_AREA)``; the ratio to the previous row is the gain of scaling in the decoder;
* ``1080p random 25/call``: 25 sorted random frame numbers per call (TSN-style sampling of a
  segment spread over the whole clip), the cost of seeking.

Prints a Markdown table; frames/s are wall-clock, single process.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from extractors.video import VideoFrameSource


def make_clip(path: Path, size: str, seconds: float, fps: int, codec: str, bitrate: str) -> Path:
    """A ``testsrc2`` clip with temporal noise at a fixed bit rate, keyframe every 25 frames."""
    if path.exists():
        return path
    enc = ["-c:v", "libx264", "-preset", "veryfast"] if codec == "h264" else \
          ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"]
    tmp = path.with_suffix(".tmp.mp4")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate={fps}", "-t", str(seconds), "-vf", "noise=alls=12:allf=t",
                    *enc, "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-g", "25",
                    "-pix_fmt", "yuv420p", str(tmp)], check=True)
    tmp.rename(path)
    return path


def sequential(src: VideoFrameSource, batch: int = 64) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for s in range(1, src.n_frames + 1, batch):
        frames = src.get(np.arange(s, min(s + batch, src.n_frames + 1)))
        n += len(frames)
    return time.perf_counter() - t0, n


def native_then_resize(path: Path, size: tuple[int, int], threads: int, batch: int = 64) -> tuple[float, int]:
    import decord

    t0 = time.perf_counter()
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
    n = 0
    for s in range(0, len(vr), batch):
        frames = vr.get_batch(list(range(s, min(s + batch, len(vr))))).asnumpy()
        out = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        n += len(out)
    return time.perf_counter() - t0, n


def random_access(src: VideoFrameSource, calls: int = 8, per_call: int = 25, seed: int = 0) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n = 0
    for _ in range(calls):
        n += len(src.get(np.sort(rng.integers(1, src.n_frames + 1, per_call))))
    return time.perf_counter() - t0, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--fps", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="decoder threads (0 = decord's choice)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/m3em_bench_decode"))
    args = p.parse_args()
    cv2.setNumThreads(2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{args.fps}fps_{args.seconds:g}s"
    small = make_clip(args.workdir / f"456x256_{tag}_h264.mp4", "456x256", args.seconds, args.fps, "h264", "1M")
    big = make_clip(args.workdir / f"1080p_{tag}_h264.mp4", "1920x1080", args.seconds, args.fps, "h264", "15M")
    hevc = make_clip(args.workdir / f"1080p_{tag}_hevc.mp4", "1920x1080", args.seconds, args.fps, "hevc", "15M")

    rows = []

    def opened(path: Path) -> tuple[VideoFrameSource, float]:
        t0 = time.perf_counter()
        src = VideoFrameSource(path, path.stem, float(args.fps), 256, threads=args.threads)
        return src, time.perf_counter() - t0

    src, t_open = opened(small)
    rows.append(("456x256 H.264 -> 456x256", t_open, *sequential(src)))
    src, t_open = opened(big)
    ours = sequential(src)
    rows.append(("1080p H.264 -> 456x256 (decord scales)", t_open, *ours))
    base = native_then_resize(big, src.size, args.threads)
    rows.append(("1080p H.264 native + cv2.resize (baseline)", float("nan"), *base))
    rows.append(("1080p H.264 random 25/call -> 456x256", float("nan"), *random_access(src)))
    src, t_open = opened(hevc)
    rows.append(("1080p HEVC -> 456x256 (decord scales)", t_open, *sequential(src)))

    print(f"python {platform.python_version()}, {platform.machine()}, clips {args.seconds:g} s at {args.fps} fps, "
          f"decoder threads {args.threads}\n")
    print("| case | open (s) | frames | time (s) | frames/s |")
    print("|---|---:|---:|---:|---:|")
    for name, t_open, dt, n in rows:
        print(f"| {name} | {t_open:.2f} | {n} | {dt:.2f} | {n / dt:.1f} |")
    print(f"\ndecord scaling vs native + cv2.resize on 1080p: {(ours[1] / ours[0]) / (base[1] / base[0]):.2f}x")


if __name__ == "__main__":
    main()
