"""Feature loading speed and memory while training from fp16 feature files.

1. Writes synthetic fp16 feature files in the project's contract (RGB and Flow 1024x7x7 and
   audio 1024 per position, P = 5; ~1 MB per segment) to ``--dir``.
2. Loader throughput: samples/s of :class:`m3em.data.FeatureSplit` through a DataLoader
   (batch 128), cold (pages dropped with ``posix_fadvise(DONTNEED)``) and warm, for 0 and 2
   workers, next to the samples/s of a TA3N+M3EM training step on the same batches.
3. Memory: one training pass over all files (TA3N on pooled maps, so the pass is quick while the
   loader still reads every spatial map) recording the process's anonymous RSS (heap: must stay
   flat) and file-backed RSS (memory-mapped feature pages) after every step. The loader maps at
   most ``--max-open-files`` files at a time, so file-backed RSS stays under that budget while
   the files together are larger.

    python benchmarks/bench_loader.py --dir /tmp/bench_feats --segments 1500 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from m3em.data import FeatureSplit, ModalityInput, epoch_batches, make_loader
from m3em.epic.features import feature_path, write_features
from m3em.models import M3EM, ActionModel, BranchSpec, DomainBetas, ModalitySpec, compute_losses

MODS = [ModalityInput("rgb", "tbn_rgb", 1024, "bench"), ModalityInput("flow", "tbn_flow", 1024, "bench"),
        ModalityInput("audio", "tbn_audio", 1024, "bench")]


def write_files(root: Path, segments: int, per_video: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for v in range((segments + per_video - 1) // per_video):
        video = f"P90_{v:03d}"
        n = min(per_video, segments - v * per_video)
        nids = [f"{video}_{k}" for k in range(n)]
        frames = np.tile(np.arange(1, 6), (n, 1))
        for m in MODS:
            path = feature_path(root, m.stream, video)
            if not path.exists():
                shape = (n, 5, 1024, 7, 7) if m.stream != "tbn_audio" else (n, 5, 1024)
                write_features(path, rng.standard_normal(shape, dtype=np.float32).astype(np.float16), nids, frames,
                               stream=m.stream, video_id=video)
        rows += [dict(narration_id=nid, video_id=video, verb_class=int(rng.integers(97)),
                      noun_class=int(rng.integers(300))) for nid in nids]
    return pd.DataFrame(rows)


def drop_pages(root: Path) -> None:
    for path in root.rglob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def rss(feature_dir: Path) -> tuple[float, float]:
    """(anonymous RSS of the process, RSS of its mappings of files under ``feature_dir``) in MB.

    The second excludes shared libraries (libtorch alone maps several hundred MB of files).
    """
    with open("/proc/self/status") as fh:
        anon = next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:")) / 1024
    mapped, current = 0, None
    prefix = str(feature_dir.resolve())
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                current = head[5] if len(head) >= 6 else None
            elif head and head[0] == "Rss:" and current and current.startswith(prefix):
                mapped += int(head[1])
    return anon, mapped / 1024


def loader_rate(ds: FeatureSplit, workers: int, batch: int, max_batches: int) -> float:
    batches = epoch_batches(len(ds), batch, 0, 1, shuffle=True)[:max_batches]
    t = time.perf_counter()
    n = 0
    for inputs, _, _, _ in make_loader(ds, batches, workers):
        n += inputs["rgb"].shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--segments", type=int, default=1500)
    p.add_argument("--per-video", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loader-batches", type=int, default=4)
    p.add_argument("--step-batch", type=int, default=32, help="clips per M3EM step timed on CPU")
    p.add_argument("--max-open-files", type=int, default=8, help="memory-mapped files kept open (the page budget)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    table = write_files(args.dir, args.segments, args.per_video)
    size_gb = sum(f.stat().st_size for f in args.dir.rglob("*.safetensors")) / 1e9
    ds = FeatureSplit(args.dir, table, MODS, positions=5, labelled=True, max_open_files=args.max_open_files)
    largest = max(f.stat().st_size for f in args.dir.rglob("*.safetensors")) / 1e6
    res: dict = {"segments": len(ds), "files_GB": round(size_gb, 2), "threads": args.threads,
                 "max_open_files": args.max_open_files,
                 "mapped_budget_MB": round(args.max_open_files * largest)}
    for workers in (0, 2):
        drop_pages(args.dir)
        res[f"loader_cold_w{workers}_samples_per_s"] = round(loader_rate(ds, workers, 128, args.loader_batches), 1)
        res[f"loader_warm_w{workers}_samples_per_s"] = round(loader_rate(ds, workers, 128, args.loader_batches), 1)

    # The step the loader has to keep up with: TA3N+M3EM on CPU.
    mods = [ModalitySpec("rgb", 1024, True), ModalitySpec("flow", 1024, True), ModalitySpec("audio", 1024, False)]
    torch.manual_seed(0)
    m3em = ActionModel(mods, [BranchSpec("rgb_flow", ("rgb", "flow"), 1.0), BranchSpec("audio", ("audio",), 0.5)], 97, 300,
                       num_frames=5, m3em=M3EM(mods, reduction=16, consensus_pair=("rgb", "flow"),
                                               cmc_latent_channels=256, cmc_scales=2), ta3n_kwargs={})
    opt = torch.optim.SGD([q for q in m3em.parameters() if q.requires_grad], lr=3e-3, momentum=0.9, nesterov=True)
    batches = epoch_batches(len(ds), args.step_batch, 0, 2, shuffle=True)[:3]
    times = []
    for inputs, verb, noun, _ in make_loader(ds, batches, 0):
        x = {k: v.float() for k, v in inputs.items()}
        t = time.perf_counter()
        half = verb.shape[0] // 2
        out = m3em(x, DomainBetas(0.3, 0.3, 0.2))
        loss = compute_losses(out, half, verb[:half], noun[:half], gamma=0.003, lambda_y=1, lambda_d=1).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    res["m3em_step_samples_per_s"] = round(args.step_batch / sorted(times[1:])[len(times[1:]) // 2], 1)
    del m3em, opt

    # Memory over a full training pass (small TA3N on pooled maps; the loader reads everything).
    torch.manual_seed(0)
    ta3n = ActionModel(mods, [BranchSpec("all", ("rgb", "flow", "audio"), 1.0)], 97, 300, num_frames=5, m3em=None,
                       ta3n_kwargs={})
    opt = torch.optim.SGD([q for q in ta3n.parameters() if q.requires_grad], lr=3e-3, momentum=0.9, nesterov=True)
    drop_pages(args.dir)
    anon, filed = [], []
    for inputs, verb, noun, _ in make_loader(ds, epoch_batches(len(ds), 64, 0, 3, shuffle=True), 0):
        x = {k: v.float() for k, v in inputs.items()}
        half = verb.shape[0] // 2
        out = ta3n(x, DomainBetas(0.3, 0.3, 0.2))
        loss = compute_losses(out, half, verb[:half], noun[:half], gamma=0.003, lambda_y=1, lambda_d=1).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        a, f = rss(args.dir)
        anon.append(a)
        filed.append(f)
    res["train_pass_steps"] = len(anon)
    res["rss_anon_MB_after_step_1_3_last"] = [round(anon[0]), round(anon[2]), round(anon[-1])]
    res["rss_anon_MB_max_after_step3_minus_step3"] = round(max(anon[2:]) - anon[2], 1)
    res["rss_feature_maps_MB_max"] = round(max(filed))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
