"""Mechanism benchmark: which part of TA3N + M3EM helps on features with the report's structure.

The data (:func:`m3em.synthetic.mechanism_data`): 7x7 RGB and Flow maps whose acted-on object
(1-4 cells) carries the class content plus a code shared by RGB and Flow; channels split into
content and nuisance; a target domain whose background, distractors and clutter move with
``shift`` while the object cells do not. For every (shift, seed) one data draw is shared by every
run (paired seeds: same data, same ``torch.manual_seed`` before the network is built), and each
run trains the project's network (:func:`m3em.models.build_model`, losses
:func:`m3em.models.compute_losses`, the reference's SGD/GRL schedule from
:class:`m3em.train.TrainConfig`) in memory for a fixed number of steps, then scores target-val.

Runs: the six methods (``source_only ta3n ta3n_late m3em_smr m3em_cmc m3em``) and two bounds on
``m3em``'s network with CMC's ``C`` replaced (``consensus_override``) by an oracle mask on the true
object cells (``oracle_c``) or by 0 (``zero_c``: average pooling). Per run it records target-val
top-1 (verb, noun, action), a per-epoch curve (plateau check), and for CMC runs the consensus map
on target-val (argmax hit rate on the true cells, spread) and the relative gradient size reaching
CMC's 1x1 convs vs SMR's first gate layers.

    # one result file per (shift, seed) under --results-dir (finished ones are reused), then:
    python benchmarks/synthetic_mechanism.py run --shifts 0 1 2 --seeds 0 1 2 3 4 5 6 7 8 9
    python benchmarks/synthetic_mechanism.py report --out docs/benchmarks_synthetic.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from m3em.checkpoint import git_revision
from m3em.data import epoch_batches
from m3em.epic.atomic import atomic_write_text
from m3em.methods import Method
from m3em.models import ActionModel, DomainBetas, build_model, compute_losses, dann_coefficient, model_config
from m3em.synthetic import MechanismSpec, MechanismSplit, mechanism_data
from m3em.train import TrainConfig, top1

REPO = Path(__file__).resolve().parents[1]

#: Bounds: m3em's network with C replaced (run name -> what replaces C).
BOUNDS = ("oracle_c", "zero_c")
#: Order of training within a setting: the reference and the bounds first.
RUNS = ("ta3n_late", "oracle_c", "m3em", "m3em_cmc", "zero_c", "m3em_smr", "ta3n", "source_only")
#: Order of the tables.
TABLE_ORDER = tuple(m.value for m in Method) + BOUNDS
REFERENCE = "ta3n_late"
METRICS = ("verb", "noun", "action")


@dataclasses.dataclass(frozen=True)
class Budget:
    """The training budget and sizes shared by every run (the benchmark's choices, stated in the docs)."""

    n_source: int = 1500
    n_target: int = 1500
    n_val: int = 1000
    epochs: int = 20
    steps_per_epoch: int = 25
    batch: int = 32
    eval_every: int = 4
    lr: float = 0.03
    lr_steps: tuple[int, ...] = (17,)
    fc_dim: int = 64
    num_bottleneck: int = 64
    smr_reduction: int = 4
    cmc_latent_channels: int = 16
    cmc_scales: int = 2
    cmc_combine: str = "sum"
    cmc_pooling: str = "normalised"


def models_section(spec: MechanismSpec, b: Budget) -> dict[str, Any]:
    """The ``models:`` config section of the benchmark's model ``S`` (RGB + Flow maps, audio vector)."""
    return {
        "ta3n": {"fc_dim": b.fc_dim, "num_bottleneck": b.num_bottleneck},
        "S": {
            "modalities": {"rgb": {"stream": "tbn_rgb", "channels": spec.channels},
                           "flow": {"stream": "tbn_flow", "channels": spec.channels},
                           "audio": {"stream": "tbn_audio", "channels": spec.audio_channels}},
            "branches": [{"name": "rgb_flow", "modalities": ["rgb", "flow"], "weight": 1.0},
                         {"name": "audio", "modalities": ["audio"], "weight": 0.5}],
            "consensus_pair": ["rgb", "flow"],
            "smr_reduction": b.smr_reduction,
            "cmc_scales": b.cmc_scales,
            "cmc_latent_channels": b.cmc_latent_channels,
            "cmc_combine": b.cmc_combine,
            "cmc_pooling": b.cmc_pooling,
        },
    }


def oracle_consensus(mask: torch.Tensor, positions: int) -> torch.Tensor:
    """``C`` whose pooling (normalised or residual) is the mean over the object cells.

    ``1 + C = m * hw / k`` (``k`` object cells of ``hw``): normalised pooling gets weights only
    on the object, residual pooling ``mean((1 + C) F)`` = the object mean as well.

    Args:
        mask: ``(B, h, w)`` bool object cells.
    Returns:
        ``(B * P, h, w)``, clip-major like :meth:`ActionModel.frame_vectors`.
    """
    m = mask.float()
    hw = m.shape[1] * m.shape[2]
    c = m * (hw / m.sum(dim=(1, 2), keepdim=True)) - 1.0
    return c.repeat_interleave(positions, dim=0)


def _inputs(split: MechanismSplit, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"rgb": torch.from_numpy(split.rgb)[idx], "flow": torch.from_numpy(split.flow)[idx],
            "audio": torch.from_numpy(split.audio)[idx]}


def _override(run: str, split: MechanismSplit, idx: torch.Tensor, positions: int) -> torch.Tensor | None:
    if run == "oracle_c":
        return oracle_consensus(torch.from_numpy(split.object_mask)[idx], positions)
    if run == "zero_c":
        h, w = split.object_mask.shape[1:]
        return torch.zeros(len(idx) * positions, h, w)
    return None


@torch.no_grad()
def evaluate(model: ActionModel, run: str, split: MechanismSplit, spec: MechanismSpec, batch: int = 250) -> dict[str, Any]:
    """Top-1 (%) on ``split``; for learned-C runs the consensus statistics, for SMR runs the gates.

    Consensus: how often the argmax of ``C`` over the ``h x w`` cells of a frame is an object cell
    (``c_argmax_hit``, %; ``c_hit_chance`` = the object's share of the cells), the std of ``C``
    over the cells (``c_spread``) and mean ``C`` on the object minus elsewhere. Gates: mean of
    SMR's self and cross gates of RGB and Flow over the content and over the nuisance channels.
    """
    model.eval()
    P, cc = spec.positions, spec.content_channels
    verbs, nouns, hits, spread, gap = [], [], [], [], []
    gates: dict[str, list[torch.Tensor]] = {}
    learned_c = run in ("m3em", "m3em_cmc")
    smr = model.m3em is not None and model.m3em.smr is not None
    for start in range(0, len(split), batch):
        idx = torch.arange(start, min(start + batch, len(split)))
        inputs = _inputs(split, idx)
        out = model(inputs, consensus_override=_override(run, split, idx, P))
        verbs.append(out.verb)
        nouns.append(out.noun)
        if not (learned_c or smr):
            continue
        probe = model.probe(inputs)
        if learned_c:
            flat = probe.consensus.flatten(1)  # (B*P, h*w)
            mask = torch.from_numpy(split.object_mask)[idx].repeat_interleave(P, dim=0).flatten(1)
            hits.append(mask.gather(1, flat.argmax(1, keepdim=True)).float().squeeze(1))
            spread.append(flat.std(dim=1))
            gap.append((flat * mask).sum(1) / mask.sum(1) - (flat * ~mask).sum(1) / (~mask).sum(1))
        if smr:
            for kind, g in (("self", probe.self_gates), ("cross", probe.cross_gates)):
                for n in ("rgb", "flow"):
                    gates.setdefault(f"gate_{kind}_{n}_content", []).append(g[n][:, :cc].mean(1))
                    gates.setdefault(f"gate_{kind}_{n}_nuisance", []).append(g[n][:, cc:].mean(1))
    model.train()
    v, n, a = top1(torch.cat(verbs), torch.cat(nouns), torch.from_numpy(split.verb), torch.from_numpy(split.noun))
    res: dict[str, Any] = {"verb": v, "noun": n, "action": a}
    if hits:
        res["c_argmax_hit"] = 100 * torch.cat(hits).mean().item()
        res["c_hit_chance"] = 100 * float(split.object_mask.mean())
        res["c_spread"] = torch.cat(spread).mean().item()
        res["c_object_minus_rest"] = torch.cat(gap).mean().item()
    res.update({k: torch.cat(v).mean().item() for k, v in gates.items()})
    return res


def _rel_grad(module: torch.nn.Module) -> float:
    """``|grad| / |weight|`` over the module's weight matrices (biases excluded)."""
    g2 = w2 = 0.0
    for name, p in module.named_parameters():
        if name.endswith("weight") and p.grad is not None:
            g2 += p.grad.pow(2).sum().item()
            w2 += p.detach().pow(2).sum().item()
    return math.sqrt(g2 / w2) if w2 > 0 else float("nan")


def train_run(run: str, data: Mapping[str, MechanismSplit], spec: MechanismSpec, b: Budget, seed: int) -> dict[str, Any]:
    """Train one run in memory and return its record (target-val metrics, curve, diagnostics)."""
    method = Method("m3em" if run in BOUNDS else run)
    mcfg, arch = model_config(models_section(spec, b), "S")
    tc = TrainConfig(epochs=b.epochs, lr=b.lr, lr_steps=b.lr_steps, batch_size_source=b.batch,
                     batch_size_target=b.batch, seed=seed)
    torch.manual_seed(seed)
    model = build_model(mcfg, arch, method, n_verbs=spec.n_verbs, n_nouns=spec.n_nouns, num_frames=spec.positions,
                        dropout_i=tc.dropout_i, dropout_v=tc.dropout_v,
                        spatial={"rgb": True, "flow": True, "audio": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay, nesterov=tc.nesterov)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[s - 1 for s in tc.lr_steps], gamma=1.0 / tc.lr_decay)
    src, tgt, val = data["source_train"], data["target_train"], data["target_val"]
    steps = min(b.steps_per_epoch, len(src) // b.batch, len(tgt) // b.batch)
    total = tc.epochs * steps
    curve, grads = [], {"cmc_first": [], "smr_first": [], "cmc_last": [], "smr_last": []}
    cmc = model.m3em.cmc if (model.m3em is not None and run not in BOUNDS) else None
    smr = model.m3em.smr if model.m3em is not None else None
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(1, tc.epochs + 1):
        sb = epoch_batches(len(src), b.batch, seed, epoch, shuffle=True)[:steps]
        tb = epoch_batches(len(tgt), b.batch, seed + 1, epoch, shuffle=True)[:steps]
        loss_y = 0.0
        for i, (si, ti) in enumerate(zip(sb, tb)):
            si, ti = torch.as_tensor(si), torch.as_tensor(ti)
            w = dann_coefficient((i + epoch * steps) / total, tc.dann_warmup_rate)  # train.py's one-based progress
            betas = DomainBetas(w * tc.betas.relation, w * tc.betas.video, w * tc.betas.frame)
            s_in = _inputs(src, si)
            if method is Method.SOURCE_ONLY:
                inputs, over = s_in, _override(run, src, si, spec.positions)
            else:
                t_in = _inputs(tgt, ti)
                inputs = {k: torch.cat([s_in[k], t_in[k]]) for k in s_in}
                o_s, o_t = _override(run, src, si, spec.positions), _override(run, tgt, ti, spec.positions)
                over = None if o_s is None else torch.cat([o_s, o_t])
            out = model(inputs, betas, consensus_override=over)
            terms = compute_losses(out, len(si), torch.from_numpy(src.verb)[si], torch.from_numpy(src.noun)[si],
                                   gamma=tc.gamma, lambda_y=mcfg.lambda_y, lambda_d=mcfg.lambda_d)
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            if epoch in (1, tc.epochs):
                key = "first" if epoch == 1 else "last"
                if cmc is not None:
                    grads[f"cmc_{key}"].append(_rel_grad(cmc))
                if smr is not None:
                    grads[f"smr_{key}"].append(_rel_grad(smr))
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            loss_y += terms.classification.item()
        sched.step()
        point = {"epoch": epoch, "loss_y": loss_y / steps}
        if epoch % b.eval_every == 0 or epoch == tc.epochs:
            ev = evaluate(model, run, val, spec)
            point.update({k: ev[k] for k in METRICS})
        curve.append(point)
    rec = {"run": run, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "steps": total, "curve": curve,
           **{k: v for k, v in ev.items()}}
    rec.update({f"rel_grad_{k}": float(np.mean(v)) for k, v in grads.items() if v})
    return rec


def run_setting(shift: float, seed: int, runs: tuple[str, ...], b: Budget, results: Path, revision: str) -> dict[str, Any]:
    """All ``runs`` for one (shift, seed), written to ``results`` after each run; runs already in
    the file (same budget and code revision) are kept, so an interrupted invocation resumes."""
    path = results / f"shift{shift:g}_seed{seed}.json"
    spec = MechanismSpec(seed=seed, shift=shift)
    rec = {"shift": shift, "seed": seed, "spec": dataclasses.asdict(spec), "budget": dataclasses.asdict(b),
           "git": revision, "torch_threads": torch.get_num_threads(), "runs": {}}
    if path.exists():
        old = json.loads(path.read_text())
        if all(old[k] == rec[k] for k in ("spec", "budget", "git")):
            rec["runs"] = old["runs"]
    todo = [r for r in runs if r not in rec["runs"]]
    if not todo:
        return rec
    data = mechanism_data(spec, {"source_train": b.n_source, "target_train": b.n_target, "target_val": b.n_val})
    for run in todo:
        r = train_run(run, data, spec, b, seed)
        rec["runs"][run] = r
        atomic_write_text(path, json.dumps(rec, indent=1))
        curve = " ".join(f"{p['epoch']}:{p['loss_y']:.2f}" + (f"/{p['verb']:.0f},{p['noun']:.0f}" if "verb" in p else "")
                         for p in r["curve"])
        print(f"shift {shift:g} seed {seed} {run:12s} verb {r['verb']:5.1f} noun {r['noun']:5.1f} "
              f"action {r['action']:5.1f}" + (f" C-hit {r['c_argmax_hit']:5.1f}" if "c_argmax_hit" in r else "")
              + f" ({r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU)\n    curve epoch:loss_y/verb,noun {curve}", flush=True)
    return rec


def mean_ci(x: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95 % Student-t interval (over seeds)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


BEGIN, END = "<!-- synthetic_mechanism:begin -->", "<!-- synthetic_mechanism:end -->"

#: Paired differences beyond the reference column, each isolating one part of TA3N + M3EM.
ABLATION_PAIRS: dict[tuple[str, str], str] = {
    ("m3em", "m3em_cmc"): "SMR added to CMC",
    ("m3em_smr", "ta3n_late"): "SMR alone",
    ("m3em", "oracle_c"): "learned C against the true-object mask",
    ("m3em", "zero_c"): "learned C against C = 0 (both behind SMR)",
    ("ta3n", "source_only"): "TA3N's adversarial terms (one branch)",
}


def _cell(values: list[float], fmt: str = "{:.1f}", signed: bool = False) -> str:
    mu, h = mean_ci(np.asarray(values))
    return (("{:+.1f}" if signed else fmt).format(mu) + (f" ± {h:.1f}" if not math.isnan(h) else "")).replace("-", "−")


def report_tables(recs: list[dict[str, Any]]) -> str:
    """The Markdown tables of the result records (means and paired differences with 95 % t intervals)."""
    lines = []
    revs = sorted({r["git"] for r in recs})
    wall = sum(x["seconds"] for r in recs for x in r["runs"].values())
    cpu = sum(x["cpu_seconds"] for r in recs for x in r["runs"].values())
    lines += [f"Result files: {len(recs)} (shift, seed) settings; code revision(s) {', '.join(f'`{v}`' for v in revs)}; "
              f"training + evaluation {wall / 60:.0f} min wall, {cpu / 60:.0f} min CPU (sum over runs).", ""]
    for shift in sorted({r["shift"] for r in recs}):
        rs = sorted((r for r in recs if r["shift"] == shift), key=lambda r: r["seed"])
        runs = [k for k in TABLE_ORDER if all(k in r["runs"] for r in rs)]
        lines += [f"#### Shift {shift:g}: {len(rs)} seed(s) ({', '.join(str(r['seed']) for r in rs)})", "",
                  "Target-val top-1 (%), mean ± 95 % t-interval over seeds; paired difference to "
                  f"`{REFERENCE}` (same seed: same data and initial seed).", "",
                  "| Run | " + " | ".join(METRICS) + " | " + " | ".join(f"Δ{m}" for m in METRICS) + " |",
                  "|---|" + "---:|" * (2 * len(METRICS))]
        for k in runs:
            cells = [_cell([r["runs"][k][m] for r in rs]) for m in METRICS]
            for m in METRICS:
                ok = k != REFERENCE and REFERENCE in runs
                cells.append(_cell([r["runs"][k][m] - r["runs"][REFERENCE][m] for r in rs], signed=True) if ok else "")
            lines.append(f"| `{k}` | " + " | ".join(cells) + " |")
        lines.append("")
        pairs = [(a, b) for a, b in ABLATION_PAIRS if a in runs and b in runs]
        if pairs:
            lines += ["Paired differences that isolate one part (same seed; mean ± 95 % t-interval over seeds):", "",
                      "| Difference | what it isolates | " + " | ".join(f"Δ{m}" for m in METRICS) + " |",
                      "|---|---|" + "---:|" * len(METRICS)]
            for a, b in pairs:
                cells = [_cell([r["runs"][a][m] - r["runs"][b][m] for r in rs], signed=True) for m in METRICS]
                lines.append(f"| `{a}` − `{b}` | {ABLATION_PAIRS[(a, b)]} | " + " | ".join(cells) + " |")
            lines.append("")
        diag = [k for k in runs if "c_argmax_hit" in rs[0]["runs"][k] or "gate_self_rgb_content" in rs[0]["runs"][k]]
        if diag:
            lines += ["Diagnostics (target-val; means ± 95 % intervals over seeds). C hit: argmax of C on an "
                      f"object cell, % of frames (chance {np.mean([x['c_hit_chance'] for r in rs for x in r['runs'].values() if 'c_hit_chance' in x]):.1f} %"
                      " for a uniformly random cell); C spread: std of C over the 49 cells; C obj − rest: mean C on the object minus "
                      "elsewhere; ‖∇W‖/‖W‖: gradient norm relative to the weight norm, CMC's 1x1 convs and SMR's gate "
                      "layers, mean over the first / last epoch's steps; gates: SMR self/cross gate mean over RGB+Flow "
                      "content / nuisance channels.", "",
                      "| Run | C hit % | C spread | C obj − rest | CMC ‖∇W‖/‖W‖ first / last | SMR ‖∇W‖/‖W‖ first / last "
                      "| self gate content / nuisance | cross gate content / nuisance |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for k in diag:
                x = [r["runs"][k] for r in rs]

                def g(key: str, fmt: str = "{:.3g}", xs: list = x) -> str:
                    vals = [v[key] for v in xs if key in v]
                    return fmt.format(np.mean(vals)) if vals else "–"

                def gate(kind: str, xs: list = x) -> str:
                    if f"gate_{kind}_rgb_content" not in xs[0]:
                        return "–"
                    c = np.mean([(v[f"gate_{kind}_rgb_content"] + v[f"gate_{kind}_flow_content"]) / 2 for v in xs])
                    n = np.mean([(v[f"gate_{kind}_rgb_nuisance"] + v[f"gate_{kind}_flow_nuisance"]) / 2 for v in xs])
                    return f"{c:.2f} / {n:.2f}"

                hit = _cell([v["c_argmax_hit"] for v in x]) if "c_argmax_hit" in x[0] else "–"
                lines.append(f"| `{k}` | {hit} | {g('c_spread')} | {g('c_object_minus_rest')} | "
                             f"{g('rel_grad_cmc_first')} / {g('rel_grad_cmc_last')} | {g('rel_grad_smr_first')} / "
                             f"{g('rel_grad_smr_last')} | {gate('self')} | {gate('cross')} |")
            lines.append("")
        # Plateau: change between the last two evaluations, and of the source loss over the last quarter.
        plateau = []
        for k in runs:
            dv, dn, dl = [], [], []
            for r in rs:
                ev = [p for p in r["runs"][k]["curve"] if "verb" in p]
                cur = r["runs"][k]["curve"]
                q = max(1, len(cur) // 4)
                dv.append(ev[-1]["verb"] - ev[-2]["verb"])
                dn.append(ev[-1]["noun"] - ev[-2]["noun"])
                dl.append(cur[-1]["loss_y"] - cur[-1 - q]["loss_y"])
            ep = [p["epoch"] for p in rs[0]["runs"][k]["curve"] if "verb" in p][-2:]
            plateau.append(f"`{k}` verb {_cell(dv, signed=True)}, noun {_cell(dn, signed=True)}, "
                           f"loss_y {np.mean(dl):+.3f}")
        lines += [f"Plateau check (target-val top-1 change from epoch {ep[0]} to {ep[1]}, points; source "
                  "classification loss change over the last quarter of the epochs): " + "; ".join(plateau) + ".", ""]
    return "\n".join(lines)


def report(results: Path, out: Path) -> str:
    """Put the tables of every result file under ``results`` between the markers of ``out``."""
    recs = [json.loads(p.read_text()) for p in sorted(results.glob("shift*_seed*.json"))]
    if not recs:
        raise SystemExit(f"{results}: no result files")
    recs = [r for r in recs if set(TABLE_ORDER) <= set(r["runs"])] or recs  # complete settings when there are any
    tables = report_tables(recs)
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN) + len(BEGIN)] + "\n" + tables + "\n" + text[text.index(END):]
    else:
        text = text + f"\n{BEGIN}\n{tables}\n{END}\n"
    atomic_write_text(out, text)
    return tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train every run for each (shift, seed); one JSON per pair")
    r.add_argument("--shifts", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    r.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    r.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    r.add_argument("--threads", type=int, default=1, help="torch threads (run two processes on disjoint seeds)")
    for f in dataclasses.fields(Budget):
        kind = type(f.default)
        if kind is tuple:
            r.add_argument("--" + f.name.replace("_", "-"), type=int, nargs="+", default=list(f.default))
        else:
            r.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default)
    r.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results" / "synthetic_mechanism")
    q = sub.add_parser("report", help="aggregate the result files into Markdown tables")
    q.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results" / "synthetic_mechanism")
    q.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.cmd == "report":
        print(report(a.results_dir, a.out))
        return 0
    torch.set_num_threads(a.threads)
    b = Budget(**{f.name: (tuple(getattr(a, f.name)) if isinstance(f.default, tuple) else getattr(a, f.name))
                  for f in dataclasses.fields(Budget)})
    a.results_dir.mkdir(parents=True, exist_ok=True)
    revision = git_revision()  # once: the code is loaded once, whatever happens to the tree later
    print(f"{platform.machine()} torch threads {a.threads}, git {revision}, budget {b}", flush=True)
    t0 = time.perf_counter()
    # Seeds outside, shifts inside: a run stopped early still covers every shift with its first seeds.
    for seed in a.seeds:
        for shift in a.shifts:
            run_setting(shift, seed, tuple(a.runs), b, a.results_dir, revision)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
