"""Time m3em.train's runs at the demo's scale with the demo's ``train:`` defaults from config.yaml.

Synthetic features (tests/_m3em_fixtures.py, class prototypes + noise, a target shift) sized like
the default demo: 30 source_train, 15 target_train, 15 target_val segments; RGB/Flow
1024 x ``--hw`` x ``--hw`` maps, audio 1024, object 7; the repository's ``models:`` A, B, D.
Reports wall and process CPU seconds per run and the last epoch's metrics.

    PYTHONPATH=tests python benchmarks/bench_demo_training.py --dir /tmp/demo_bench --runs A:source_only,A:ta3n,A:m3em --threads 1
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import _m3em_fixtures as fx  # a test fixture: run with PYTHONPATH=tests (docs/benchmarks.md)
import torch
import yaml

from m3em.epic.cli import load_job_config
from m3em.train import TrainJobConfig, run_training

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--runs", default="A:source_only,A:ta3n,A:m3em,B:source_only,B:ta3n,B:m3em,D:source_only,D:ta3n,D:m3em")
    p.add_argument("--hw", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for k in fx.CHANNELS:
        fx.CHANNELS[k] = 7 if k == "object" else 1024
    fx.VIDEOS.update({"source_train": ["P01_01", "P01_02"], "target_train": ["P02_101"], "target_val": ["P02_103"],
                      "target_test": ["P02_104"]})
    shutil.rmtree(args.dir, ignore_errors=True)
    cfg = fx.write_dataset(args.dir, per_video=15, hw=args.hw,
                           streams=("tbn_rgb", "tbn_flow", "tbn_audio", "i3d_rgb", "i3d_flow", "object"))
    with open(REPO / "config.yaml", encoding="utf-8") as fh:
        base = yaml.safe_load(fh)
    cfg["models"] = base["models"]
    cfg["train"].update(base["train"])
    # Through a file, as the CLI reads it (unsorted: the models' modality order is the config's).
    cfg_path = args.dir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    job = load_job_config(cfg_path, TrainJobConfig)
    print("| run | wall s | CPU s | last epoch: loss, source verb/noun top-1, target-val verb/noun top-1 |")
    print("|---|---|---|---|")
    for spec in args.runs.split(","):
        model, method = spec.split(":")
        t, c = time.perf_counter(), time.process_time()
        out = args.dir / f"{model}_{method}"
        run_training(job, model, method, out, progress=False)
        last = (out / "metrics.csv").read_text().splitlines()[-1].split(",")
        print(f"| {model} {method} | {time.perf_counter() - t:.1f} | {time.process_time() - c:.1f} | "
              f"{float(last[3]):.3g}, {float(last[8]):.0f}/{float(last[9]):.0f}, {float(last[11]):.0f}/{float(last[12]):.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
