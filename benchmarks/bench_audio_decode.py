"""Audio decoding: TBN's ffmpeg command (:func:`extractors.audio.load_audio`) against decord's AudioReader.

    python benchmarks/bench_audio_decode.py [--seconds 600] [--repeats 3] [--workdir DIR]

The clip (written once into --workdir with the imageio-ffmpeg binary): ``--seconds`` of 48 kHz
stereo AAC (128 kbit/s, pink noise) beside a 320x180 grey H.264 video. Both decoders give mono
24 kHz float32; decord's is the reader this project used before (``mono=True``: (L + R) / sqrt(2)).
Prints, per full decode, wall-clock seconds and CPU seconds (user + system, of this process and
of the ffmpeg child it waits for; on a shared machine CPU time is the steadier number), min /
median / max over --repeats, as Markdown.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from extractors.audio import load_audio


def make_clip(path: Path, seconds: float) -> Path:
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.mp4")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"color=c=gray:size=320x180:rate=30:duration={seconds}",
                    "-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=48000:duration={seconds}:amplitude=0.3",
                    "-ac", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "128k", str(tmp)], check=True)
    tmp.rename(path)
    return path


def decord_mono(path: Path) -> np.ndarray:
    import decord

    return decord.AudioReader(str(path), ctx=decord.cpu(0), sample_rate=24000, mono=True)[:].asnumpy().reshape(-1)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def spread(values: list[float]) -> str:
    v = sorted(values)
    return f"{v[0]:.2f} / {v[len(v) // 2]:.2f} / {v[-1]:.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/m3em_bench_audio"))
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.workdir / f"stereo_{int(args.seconds)}s.mp4", args.seconds)
    print(f"{platform.machine()} {platform.python_version()}, clip {clip} ({clip.stat().st_size / 1e6:.1f} MB)\n")
    print("| decoder | audio s | wall s (min / median / max) | CPU s (min / median / max) |\n|---|---|---|---|")
    for name, fn in (("ffmpeg -ac 1 -ar 24000 -acodec pcm_s16le (ours)", lambda: load_audio(clip, 24000)),
                     ("decord AudioReader(mono=True) (before)", lambda: decord_mono(clip))):
        wall, cpu = [], []
        for _ in range(args.repeats):
            c0, t0 = cpu_seconds(), time.perf_counter()
            x = fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(cpu_seconds() - c0)
        print(f"| {name} | {x.size / 24000:.1f} | {spread(wall)} | {spread(cpu)} |")


if __name__ == "__main__":
    main()
