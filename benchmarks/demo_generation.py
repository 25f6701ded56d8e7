"""Generation time and size of the demo dataset at each ``demo.size``.

Usage::

    python benchmarks/demo_generation.py --sizes tiny default [large] --out-root /tmp/demo_bench [--seed 0] [--jobs 1]

Prints one markdown table row per size: videos, segments per split, frames, footage seconds,
megabytes of videos / detections / annotations, and wall-clock generation time (``--jobs`` videos at a
time; each video renders, encodes with one ffmpeg thread and writes its detections sequentially).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from epic_demo.generate import generate_dataset


def _mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "default"], choices=["tiny", "default", "large"])
    p.add_argument("--out-root", type=Path, required=True, help="each size is written to <out-root>/<size>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="videos rendered in parallel")
    args = p.parse_args()
    print(f"jobs = {args.jobs}")
    print("| size | resolution | videos | segments (per split) | frames | footage s | videos MB | "
          "hand-objects MB | annotations MB | generation s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        out = args.out_root / size
        t0 = time.perf_counter()
        m = generate_dataset(out, size, args.seed, jobs=args.jobs, show_progress=False)
        seconds = time.perf_counter() - t0
        per_split: dict[str, int] = {}
        for v in m["videos"].values():
            per_split[v["split"]] = per_split.get(v["split"], 0) + v["n_segments"]
        splits = ", ".join(f"{k} {n}" for k, n in per_split.items())
        frames = sum(v["n_frames"] for v in m["videos"].values())
        footage = sum(v["duration"] for v in m["videos"].values())
        print(f"| {size} | {m['width']}x{m['height']} | {len(m['videos'])} | {sum(per_split.values())} ({splits}) | "
              f"{frames} | {footage:.0f} | {_mb(out / 'videos'):.1f} | {_mb(out / 'hand-objects'):.2f} | "
              f"{_mb(out / 'annotations'):.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
