"""Time one training step of each method (m3em.methods; TA3N and TA3N+M3EM by default) side by side.

Reference batch: 128 source + 207 target clips, P = 5 positions, RGB and Flow 1024x7x7 maps,
audio 1024 vectors, 97 verbs / 300 nouns. A step = forward on source+target, the full TA3N loss,
backward, gradient clipping and the SGD step (what m3em.train does per iteration, minus data
loading). ``--scale`` multiplies both batch sizes (e.g. 0.25 where memory is short; the result
table says which was used).

    python benchmarks/bench_train_step.py --threads 2 --steps 3 [--scale 1.0] [--device cuda] \
        [--methods source_only,ta3n,ta3n_late,m3em_smr,m3em_cmc,m3em]

The networks are model A's (``m3em.models.build_model``: RGB/Flow/Audio, branches RGB+Flow and
audio, r = 16, K = 2, 256 latent channels). Methods with CMC read the 1024x7x7 maps; the others
read the pooled vectors (pooling is their first operation, so the result is the same network on
the same data, without the cost of averaging the maps).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from m3em.models import (
    ActionModel,
    BranchSpec,
    DomainBetas,
    Method,
    ModalityConfig,
    ModelConfig,
    TA3NArchConfig,
    build_model,
    compute_losses,
)


def build(method: Method | str, c: int, n_verbs: int, n_nouns: int, spatial: bool) -> ActionModel:
    method = Method(method)
    cfg = ModelConfig(
        modalities={"rgb": ModalityConfig("tbn_rgb", c), "flow": ModalityConfig("tbn_flow", c),
                    "audio": ModalityConfig("tbn_audio", c)},
        branches=(BranchSpec("rgb_flow", ("rgb", "flow"), 1.0), BranchSpec("audio", ("audio",), 0.5)),
        consensus_pair=("rgb", "flow"), smr_reduction=16, cmc_scales=2, cmc_latent_channels=256,
    )
    return build_model(cfg, TA3NArchConfig(), method, n_verbs=n_verbs, n_nouns=n_nouns, num_frames=5, dropout_i=0.5,
                       dropout_v=0.5, spatial={"rgb": spatial, "flow": spatial, "audio": False})


def time_steps(model: ActionModel, inputs: dict, n_src: int, steps: int,
               device: torch.device) -> tuple[list[float], list[float], list[float]]:
    """Wall-clock and process CPU seconds and the total loss of ``steps`` training steps (after one
    warm-up step, whose loss is included: ``steps + 1`` losses).

    CPU time is reported too because the 2-core machine these numbers come from is shared: wall
    time then includes waiting for a core, CPU time does not (for one process with ``--threads``
    threads it is about ``threads x`` the wall time of an idle machine)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=3e-3, momentum=0.9,
                          weight_decay=1e-4, nesterov=True)
    yv = torch.randint(0, 97, (n_src,), device=device)
    yn = torch.randint(0, 300, (n_src,), device=device)
    times, cpu, losses = [], [], []
    for _ in range(steps + 1):  # the first step warms up allocators / kernels and is not counted
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        out = model(inputs, DomainBetas(0.3, 0.3, 0.2))
        loss = compute_losses(out, n_src, yv, yn, gamma=0.003, lambda_y=1.0, lambda_d=1.0).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 20.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        losses.append(float(loss.detach()))
    return times[1:], cpu[1:], losses


def measure(method: str, scale: float, steps: int, device: torch.device) -> dict:
    """One method's training step at ``scale`` x the reference batch (128 + 207) on ``device``.

    Returns the median wall / CPU seconds per step, clips/s, parameter count, every step's loss
    (all must be finite; the caller checks) and, on CUDA, the peak GPU memory in GB.
    """
    bs, bt = max(1, round(128 * scale)), max(1, round(207 * scale))
    b, c = bs + bt, 1024
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    method = Method(method)
    spatial = method.cmc
    model = build(method, c, 97, 300, spatial).to(device)
    shape = (b, 5, c, 7, 7) if spatial else (b, 5, c)
    inputs = {"rgb": torch.randn(shape, generator=g).to(device), "flow": torch.randn(shape, generator=g).to(device),
              "audio": torch.randn((b, 5, c), generator=g).to(device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu, losses = time_steps(model, inputs, bs, steps, device)
    med = sorted(times)[len(times) // 2]
    cpu_med = sorted(cpu)[len(cpu) // 2]
    result = {"input": "pooled 3x1024 per position" if not spatial else "RGB/Flow 1024x7x7 + audio 1024",
              "batch_source": bs, "batch_target": bt,
              "step_s_median": round(med, 3), "step_s_all": [round(t, 3) for t in times],
              "step_cpu_s_median": round(cpu_med, 3),
              "clips_per_s": round(b / med, 1),
              "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
              "losses": losses}
    if device.type == "cuda":
        result["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the reference batch sizes 128 / 207")
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", default="ta3n,m3em")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bs, bt = max(1, round(128 * args.scale)), max(1, round(207 * args.scale))
    results = {"device": args.device, "threads": args.threads, "batch_source": bs, "batch_target": bt}
    for method in args.methods.split(","):
        results[method] = measure(method, args.scale, args.steps, device)
    results["peak_rss_GB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    if "ta3n" in results and "m3em" in results:
        results["m3em_over_ta3n_wall"] = round(results["m3em"]["step_s_median"] / results["ta3n"]["step_s_median"], 1)
        results["m3em_over_ta3n_cpu"] = round(results["m3em"]["step_cpu_s_median"] / results["ta3n"]["step_cpu_s_median"], 1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
