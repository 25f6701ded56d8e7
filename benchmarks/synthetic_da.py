"""Target accuracy of source-only, TA3N and TA3N + M3EM on synthetic shifted features, over seeds.

For each seed: generate a synthetic dataset (:mod:`m3em.synthetic`: RGB/Flow spatial maps with a
distractor object, audio vectors, a domain shift of strength ``--shift``), then for each method
train model A with the project's trainer (``python -m m3em.train``), score target-val
(``python -m m3em.predict``) and compute the official metrics (:mod:`m3em.evaluate`). The three
methods see the same data and the same training budget, side by side. Writes the means and
standard deviations (and every per-seed number) to a Markdown file, whatever they show.

    python benchmarks/synthetic_da.py --seeds 0 1 2 --out docs/benchmarks_synthetic_da.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.atomic import atomic_write_text
from m3em.epic.scores import read_scores
from m3em.evaluate import evaluate_scores
from m3em.synthetic import SyntheticSpec, generate

REPO = Path(__file__).resolve().parents[1]

METHODS = ("source_only", "ta3n", "m3em")
LABELS = {"source_only": "Source-only", "ta3n": "TA3N", "m3em": "TA3N + M3EM"}
CELLS = [("verb", 1), ("noun", 1), ("action", 1), ("verb", 5), ("noun", 5), ("action", 5)]


def make_config(base: Path, ann: Path, feat: Path, spec: SyntheticSpec, args: argparse.Namespace) -> dict:
    """The repository config with data, model A and training resized for the synthetic features."""
    cfg = yaml.safe_load(base.read_text())
    cfg["data"]["annotations_dir"] = str(ann)
    cfg["inputs"]["official_features_dir"] = None
    a = cfg["models"]["A"]
    a["modalities"]["rgb"]["channels"] = spec.channels
    a["modalities"]["flow"]["channels"] = spec.channels
    a["modalities"]["audio"]["channels"] = spec.vector_channels
    a["smr_reduction"] = 4
    a["cmc_latent_channels"] = 16
    cfg["features"].update(features_dir=str(feat), positions=spec.positions)
    t = cfg["train"]
    t.update(epochs=args.epochs, lr=args.lr, lr_steps=[args.lr_step],
             batch_size_source=args.batch_size, batch_size_target=args.batch_size, batch_size_eval=256,
             seed=1, device=args.device, num_workers=0, evaluate_each_epoch=False)
    return cfg


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {shlex.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--shift", type=float, default=1.5)
    p.add_argument("--noise", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=0.03, help="higher than EPIC's 3e-3: ~150 steps in all here")
    p.add_argument("--lr-step", type=int, default=10, help="1-based epoch at whose start lr is divided by 10")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--videos", type=int, nargs=4, default=[10, 10, 4, 1])
    p.add_argument("--segments-per-video", type=int, default=40)
    p.add_argument("--device", default="cpu", help="cpu | cuda (cuda without a GPU is an error from the trainer)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work-dir", type=Path, default=None, help="keep runs here (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks_synthetic_da.md")
    args = p.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    work_ctx = tempfile.TemporaryDirectory(prefix="synthetic_da_") if args.work_dir is None else None
    work = Path(work_ctx.name) if work_ctx else args.work_dir
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        for seed in args.seeds:
            spec = SyntheticSpec(seed=seed, shift=args.shift, noise=args.noise, videos=tuple(args.videos),
                                 segments_per_video=args.segments_per_video)
            root = work / f"seed{seed}"
            ann, feat = generate(spec, root / "data")
            cfg_path = root / "config.yaml"
            atomic_write_text(cfg_path, yaml.safe_dump(make_config(REPO / "config.yaml", ann, feat, spec, args)))
            labels = EpicAnnotations.open(ann).split("target_val")
            for method in METHODS:
                run_dir = root / method
                done = root / f"{method}.result.json"
                if done.exists():  # --work-dir kept from an interrupted invocation: reuse finished runs
                    rec = json.loads(done.read_text())
                    results[method].append(rec["accuracy"])
                    seconds[method].append(rec["seconds"])
                    continue
                shutil.rmtree(run_dir, ignore_errors=True)
                dt = run([sys.executable, "-m", "m3em.train", "--config", str(cfg_path), "--model", "A", "--method",
                          method, "--out-dir", str(run_dir), "--no-progress"], env)
                scores_path = root / "scores" / f"{method}.npz"
                dt += run([sys.executable, "-m", "m3em.predict", "--config", str(cfg_path), "--checkpoint",
                           str(run_dir / "model.pt"), "--split", "target_val", "--out", str(scores_path),
                           "--no-progress"], env)
                acc = evaluate_scores(read_scores(scores_path), labels)
                results[method].append({f"{t}@{k}": 100 * acc[t][k] for t, k in CELLS})
                seconds[method].append(dt)
                atomic_write_text(done, json.dumps({"accuracy": results[method][-1], "seconds": dt}))
                print(f"seed {seed} {method:12s} " + " ".join(f"{c} {v:5.1f}" for c, v in results[method][-1].items())
                      + f"  ({dt:.0f} s)", flush=True)
    finally:
        if work_ctx:
            work_ctx.cleanup()

    cols = [f"{t}@{k}" for t, k in CELLS]
    lines = [
        "# Synthetic domain-adaptation benchmark (`benchmarks/synthetic_da.py`)",
        "",
        f"- Date: {started}",
        f"- Machine: 2-core x86-64 CPU, no GPU ({platform.processor() or platform.machine()}, "
        f"{args.threads} torch threads; other jobs were sharing the cores)",
        f"- Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- Data: `m3em.synthetic` seed = run seed, shift {args.shift}, noise {args.noise}, videos "
        f"(source_train, target_train, target_val, target_test) = {tuple(args.videos)}, "
        f"{args.segments_per_video} segments each; 6 verbs, 8 nouns (chance: verb 16.7 %, noun 12.5 %, "
        "action 2.1 % at top-1).",
        f"- Model A (RGB/Flow 32x4x4 maps, audio 16-d), {args.epochs} epochs, batch {args.batch_size} source / "
        f"{args.batch_size} target, lr {args.lr} (/10 at epoch {args.lr_step}), otherwise the repository config's `train:` values. Target-val accuracy "
        "(official metrics), %, mean ± standard deviation over seeds " + ", ".join(map(str, args.seeds)) + ".",
        "",
        "| Method | " + " | ".join(cols) + " | s / run |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for m in METHODS:
        arr = np.array([[r[c] for c in cols] for r in results[m]])
        cells = [f"{arr[:, j].mean():.1f} ± {arr[:, j].std(ddof=1) if len(arr) > 1 else 0.0:.1f}" for j in range(len(cols))]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {np.mean(seconds[m]):.0f} |")
    lines += ["", "Per seed (target-val %):", "", "| Seed | Method | " + " | ".join(cols) + " |",
              "|---:|---|" + "---:|" * len(cols)]
    for i, seed in enumerate(args.seeds):
        for m in METHODS:
            lines.append(f"| {seed} | {LABELS[m]} | " + " | ".join(f"{results[m][i][c]:.1f}" for c in cols) + " |")
    lines += ["", "Raw numbers (JSON):", "", "```json", json.dumps(results, indent=None), "```", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
