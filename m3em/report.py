"""The run report: ``results/report.md`` with the paper's tables, plots and the run's cost.

Sections, in order:

1. Table 1 (single models: source-only, TA3N, TA3N + M3EM for each model A-D) and Table 2
   (ensembles), one pair per evaluated split, laid out by :mod:`m3em.tables`: every accuracy with
   its 95 % bootstrap interval over segments, chance rows and a caption under each table;
2. training curves, one PNG per run, from the trainer's per-epoch metrics CSV (against
   ``epoch``: the classification loss ``loss_y`` in one panel, the domain and total losses in a
   second, accuracies in a third), and a table of each run's first and last epoch ``loss_y``;
3. per-class top-1 accuracy (verbs and nouns) of one score file on a labelled split, PNG;
4. time and memory per stage, summed over the Snakemake ``benchmark:`` files
   (``<benchmarks>/<stage>/...tsv``).

Usage::

    python -m m3em.report --config config.yaml --metrics results/metrics/*/target_val.json \\
        --train-metrics results/train/*/metrics.csv \\
        --class-scores results/scores/ensemble_A+B+C+D/target_val.npz --class-split target_val \\
        --benchmarks results/benchmarks --figures results/report --out results/report.md
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.atomic import atomic_output, atomic_write_text
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import DataConfig
from m3em.epic.errors import InputError
from m3em.epic.scores import read_scores
from m3em.evaluate import read_metrics
from m3em.tables import build_table1, build_table2, to_markdown

#: Columns of a Snakemake benchmark TSV that the report sums (seconds) or takes the peak of (MB).
TIME_COLUMNS: tuple[str, ...] = ("s", "cpu_time")
MEMORY_COLUMN = "max_rss"
#: Classes shown in a per-class accuracy plot (the most frequent in the split).
MAX_CLASSES_PLOTTED = 40

log = logging.getLogger("m3em.report")


class ReportError(ValueError, InputError):
    """An input of the report that cannot be read; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Tables


def results_tables(metrics_paths: Sequence[Path]) -> str:
    """Table 1 and Table 2 (Markdown) for every split found in the metrics files.

    Records with ``method == "ensemble"`` go to Table 2, the others to Table 1.
    """
    if not metrics_paths:
        raise ReportError("no metrics files given")
    by_split: dict[str, dict[str, list[tuple[str, dict[str, Any]]]]] = {}
    for path in metrics_paths:
        rec = read_metrics(path)
        table = "ensembles" if rec.get("method") == "ensemble" else "models"
        by_split.setdefault(rec["split"], {"models": [], "ensembles": []})[table].append((str(path), rec))
    parts = []
    for split in sorted(by_split):
        groups = by_split[split]
        if groups["models"]:
            parts.append(to_markdown(build_table1(groups["models"]), "Table 1: single models"))
        if groups["ensembles"]:
            parts.append(to_markdown(build_table2(groups["ensembles"]), "Table 2: ensembles"))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Benchmarks


def read_benchmark(path: Path) -> pd.DataFrame:
    """One Snakemake benchmark TSV (one row per repeat). Missing values (``NA``, ``-``) stay NaN."""
    try:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "-", ""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not a Snakemake benchmark TSV: {exc}") from exc
    missing = [c for c in (*TIME_COLUMNS, MEMORY_COLUMN) if c not in df.columns]
    if missing or df.empty:
        raise ReportError(f"{path}: not a Snakemake benchmark TSV (missing column(s) {missing} or no rows)")
    return df


def stage_costs(benchmarks_dir: Path) -> pd.DataFrame:
    """Per-stage totals over ``<benchmarks_dir>/<stage>/**/*.tsv``.

    Returns:
        DataFrame indexed by stage with ``jobs``, ``wall_s`` (sum of ``s``), ``cpu_s`` (sum of
        ``cpu_time``), ``peak_rss_mb`` (max of ``max_rss``) and ``sum_rss_mb`` (sum over jobs of
        their ``max_rss``: the memory the stage needs when all its jobs run at once).
    """
    if not benchmarks_dir.is_dir():
        raise ReportError(f"{benchmarks_dir}: benchmarks directory not found")
    rows = []
    for path in sorted(benchmarks_dir.rglob("*.tsv")):
        stage = path.relative_to(benchmarks_dir).parts[0]
        df = read_benchmark(path)
        # Repeats (benchmark: repeat(...)) are averaged: the file describes one job.
        rows.append({"stage": stage, "s": df["s"].mean(), "cpu_time": df["cpu_time"].mean(),
                     "max_rss": df[MEMORY_COLUMN].mean()})
    if not rows:
        raise ReportError(f"{benchmarks_dir}: no benchmark files (*.tsv)")
    jobs = pd.DataFrame(rows)
    out = jobs.groupby("stage", sort=False).agg(
        jobs=("s", "size"), wall_s=("s", "sum"), cpu_s=("cpu_time", "sum"),
        peak_rss_mb=("max_rss", "max"), sum_rss_mb=("max_rss", "sum"),
    )
    return out


def costs_markdown(costs: pd.DataFrame) -> str:
    def fmt(v: float, digits: int) -> str:
        return "n/a" if pd.isna(v) else f"{v:.{digits}f}"

    lines = ["| Stage | Jobs | Wall time (s, summed) | CPU time (s, summed) | Peak RSS (MB) | RSS summed over jobs (MB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for stage, r in costs.iterrows():
        lines.append(f"| {stage} | {int(r.jobs)} | {fmt(r.wall_s, 1)} | {fmt(r.cpu_s, 1)} | "
                     f"{fmt(r.peak_rss_mb, 0)} | {fmt(r.sum_rss_mb, 0)} |")
    total = costs[["wall_s", "cpu_s"]].sum()
    lines.append(f"| **total** | {int(costs.jobs.sum())} | {fmt(total.wall_s, 1)} | {fmt(total.cpu_s, 1)} | "
                 f"{fmt(costs.peak_rss_mb.max(), 0)} | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend: no display needed)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def read_training_metrics(path: Path) -> pd.DataFrame:
    """The trainer's per-epoch CSV: an ``epoch`` column and numeric metric columns."""
    if not path.exists():
        raise ReportError(f"{path}: training metrics file not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot parse CSV: {exc}") from exc
    if "epoch" not in df.columns:
        raise ReportError(f"{path}: no 'epoch' column (have {list(df.columns)})")
    numeric = [c for c in df.columns if c != "epoch" and pd.api.types.is_numeric_dtype(df[c])]
    if df.empty or not numeric:
        raise ReportError(f"{path}: no rows or no numeric metric columns")
    return df[["epoch", *numeric]]


#: The trainer's source classification loss column, ``0.5 (CE_verb + CE_noun)`` per epoch.
CLASSIFICATION_LOSS = "loss_y"
#: Its domain loss column (sum of the domain discriminators' cross-entropies).
DOMAIN_LOSS = "loss_adv"


def uniform_loss_y(n_verbs: int, n_nouns: int) -> float:
    """``loss_y`` of a model that predicts every class with equal probability: ``0.5 (ln V + ln C_n)``."""
    return 0.5 * (float(np.log(n_verbs)) + float(np.log(n_nouns)))


def _require_loss_y(df: pd.DataFrame, where: object) -> None:
    if CLASSIFICATION_LOSS not in df.columns:
        raise ReportError(f"{where}: no {CLASSIFICATION_LOSS!r} column (have {list(df.columns)})")


def _loss_scale(ax, values: pd.DataFrame) -> None:
    """Log y-axis when the curves are positive and span a decade or more, else linear."""
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all() and v.max() / v.min() >= 10.0:
        ax.set_yscale("log")


def training_figure(df: pd.DataFrame, title: str, *, chance_loss_y: float | None = None):
    """The matplotlib figure of :func:`plot_training_curves` (the caller closes it).

    Per-epoch curves in up to three panels, each on its own y-axis:

    1. the classification loss ``loss_y`` (with a dashed line at ``chance_loss_y``, the loss of
       a uniform prediction, when given);
    2. the other losses (domain ``loss_adv``, entropy ``loss_ent``, the total ``loss``), leaving out
       those that are zero or missing every epoch or equal ``loss_y`` (a source-only run has no
       domain loss and its total is ``loss_y``): no panel when none is left;
    3. accuracies in % (``domain_acc`` is a fraction in the trainer's CSV and is drawn in %).

    Loss panels use a log axis when their curves span a decade or more. Bookkeeping columns
    (``lr``, ``steps``, ``seconds``) are left out: on one axis with the others they only flatten
    the curves.
    """
    _require_loss_y(df, title)
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    # Curves with nothing to show are left out: all-NaN (domain_acc of a source-only run), all
    # zero (its domain losses), or a copy of loss_y (its total loss).
    shown = [c for c in df.columns if df[c].notna().any()]
    others = [c for c in shown if c not in ("epoch", CLASSIFICATION_LOSS) and "loss" in c.lower()
              and (df[c].fillna(0) != 0).any() and not df[c].equals(df[CLASSIFICATION_LOSS])]
    accuracies = [c for c in shown if "loss" not in c.lower() and c != "epoch" and ("acc" in c or "top" in c)]
    df = df.assign(**{c: df[c] * 100.0 for c in accuracies if c == "domain_acc"})
    panels = [(cols, name) for cols, name in (([CLASSIFICATION_LOSS], "classification loss (loss_y)"),
                                               (others, "domain / total loss"),
                                               (accuracies, "accuracy (%)")) if cols]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for i, (ax, (cols, ylabel)) in enumerate(zip(axes[0], panels)):
        for c in cols:
            ax.plot(df["epoch"], df[c], marker="o", markersize=3, label=c)
        if i == 0 and chance_loss_y is not None:
            ax.axhline(chance_loss_y, color="grey", linestyle="--", linewidth=1, label="uniform prediction")
        if "loss" in ylabel:
            _loss_scale(ax, df[cols])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def plot_training_curves(df: pd.DataFrame, title: str, path: Path, *, chance_loss_y: float | None = None) -> None:
    """Write :func:`training_figure` of the trainer's per-epoch metrics ``df`` to ``path`` (PNG)."""
    fig = training_figure(df, title, chance_loss_y=chance_loss_y)
    _save(fig, path)
    _pyplot().close(fig)


def loss_summary(runs: dict[str, pd.DataFrame], chance_loss_y: float) -> str:
    """Markdown table: each run's ``loss_y`` (and domain loss) at its first and last epoch.

    Args:
        runs: run name -> the trainer's per-epoch metrics (:func:`read_training_metrics`).
        chance_loss_y: the loss of a uniform prediction (:func:`uniform_loss_y`), printed above.
    """
    def fmt(v: float) -> str:
        return "n/a" if pd.isna(v) else f"{v:.4f}"

    lines = [f"Source classification loss `{CLASSIFICATION_LOSS}` = 0.5 (CE verb + CE noun) and the domain loss "
             f"`{DOMAIN_LOSS}`, averaged over each epoch's steps. A uniform prediction has "
             f"`{CLASSIFICATION_LOSS}` = {chance_loss_y:.4f}.", "",
             f"| Run | Epochs | {CLASSIFICATION_LOSS} first | {CLASSIFICATION_LOSS} last | Change | "
             f"{DOMAIN_LOSS} first | {DOMAIN_LOSS} last |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for run, df in runs.items():
        _require_loss_y(df, run)
        df = df.sort_values("epoch")
        first, last = df.iloc[0], df.iloc[-1]
        y0, y1 = float(first[CLASSIFICATION_LOSS]), float(last[CLASSIFICATION_LOSS])
        change = "n/a" if pd.isna(y0) or pd.isna(y1) or y0 == 0 else f"{100.0 * (y1 - y0) / y0:+.1f} %"
        d0, d1 = (float(r[DOMAIN_LOSS]) if DOMAIN_LOSS in df.columns else float("nan") for r in (first, last))
        lines.append(f"| {run} | {int(first.epoch)}-{int(last.epoch)} | {fmt(y0)} | {fmt(y1)} | {change} | "
                     f"{fmt(d0)} | {fmt(d1)} |")
    return "\n".join(lines) + "\n"


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> pd.DataFrame:
    """Top-1 accuracy per class over the segments labelled with it.

    Args:
        scores: ``(N, C)`` class scores.
        labels: ``(N,)`` class ids.
        n_classes: C.

    Returns:
        DataFrame indexed by class id (classes with at least one segment) with ``support`` and
        ``accuracy`` (percent), most frequent first.
    """
    if scores.shape != (len(labels), n_classes):
        raise ReportError(f"scores have shape {scores.shape}, expected ({len(labels)}, {n_classes})")
    correct = scores.argmax(axis=1) == labels
    df = pd.DataFrame({"label": labels, "correct": correct})
    out = df.groupby("label").agg(support=("correct", "size"), accuracy=("correct", "mean"))
    out["accuracy"] *= 100.0
    return out.sort_values(["support"], ascending=False, kind="stable")


def plot_per_class(tables: dict[str, tuple[pd.DataFrame, Sequence[str]]], title: str, path: Path) -> None:
    """One bar panel per task (verb, noun): accuracy of the most frequent classes."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(tables), 1, figsize=(10, 3.2 * len(tables)), squeeze=False)
    for ax, (task, (acc, keys)) in zip(axes[:, 0], tables.items()):
        shown = acc.head(MAX_CLASSES_PLOTTED)
        ax.bar(range(len(shown)), shown["accuracy"], color="tab:blue")
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([f"{keys[i]} ({n})" for i, n in zip(shown.index, shown["support"])],
                           rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{task} top-1 (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def build_report(
    *,
    annotations_dir: Path,
    metrics: Sequence[Path],
    train_metrics: Sequence[Path],
    class_scores: Path | None,
    class_split: str | None,
    benchmarks: Path,
    figures: Path,
    out: Path,
) -> str:
    """Write the figures and ``out``; return the Markdown text."""
    figures.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(figures, out.parent)
    md = ["# M3EM pipeline report", "", "## Results", "", results_tables(metrics)]

    md += ["## Training curves", ""]
    if train_metrics:
        ann = EpicAnnotations.open(annotations_dir)
        chance_loss = uniform_loss_y(len(ann.verbs), len(ann.nouns))
        runs = {}
        for path in train_metrics:
            run = path.parent.name
            runs[run] = read_training_metrics(path)
            _require_loss_y(runs[run], path)
        md.append(loss_summary(runs, chance_loss))
        for run, df in runs.items():
            png = figures / f"training_{run}.png"
            plot_training_curves(df, f"training: {run}", png, chance_loss_y=chance_loss)
            md.append(f"![training curves of {run}]({rel}/{png.name})")
    md.append("")

    if class_scores is not None:
        if not class_split:
            raise ReportError(f"{class_scores}: give the labelled split the scores are of (--class-split)")
        scores = read_scores(class_scores)
        split = class_split
        ann = EpicAnnotations.open(annotations_dir)
        labels = ann.split(split, labelled=True).set_index("narration_id")
        missing = [n for n in scores.narration_ids if n not in labels.index]
        if missing:
            raise ReportError(f"{class_scores}: {len(missing)} narration id(s) not in split {split} "
                              f"(e.g. {missing[:3]})")
        rows = labels.loc[list(scores.narration_ids)]
        tables = {
            "verb": (per_class_accuracy(scores.verb, rows["verb_class"].to_numpy(), len(ann.verbs)), ann.verbs.keys),
            "noun": (per_class_accuracy(scores.noun, rows["noun_class"].to_numpy(), len(ann.nouns)), ann.nouns.keys),
        }
        name = scores.meta.get("name") or scores.meta.get("model") or class_scores.parent.name
        png = figures / f"per_class_{class_scores.parent.name}_{split}.png"
        plot_per_class(tables, f"per-class top-1 accuracy: {name} on {split}", png)
        md += ["## Per-class accuracy", "",
               f"{name} on `{split}` (the {MAX_CLASSES_PLOTTED} most frequent classes; support in brackets).", "",
               f"![per-class accuracy]({rel}/{png.name})", ""]

    md += ["## Time and memory per stage", "",
           "Summed over the Snakemake benchmark files of the jobs that ran (a rerun job replaces its "
           "file). RSS is each job's peak resident memory.", "",
           costs_markdown(stage_costs(benchmarks))]
    text = "\n".join(md)
    atomic_write_text(out, text)
    return text


@dataclasses.dataclass(frozen=True)
class ReportJobConfig:
    """The config sections ``python -m m3em.report`` reads."""

    data: DataConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="config.yaml (data.annotations_dir)")
    p.add_argument("--metrics", type=Path, nargs="+", required=True, help="metrics JSON files (m3em.evaluate)")
    p.add_argument("--train-metrics", type=Path, nargs="*", default=[],
                   help="per-epoch CSVs of the trainer (<train>/<run>/metrics.csv)")
    p.add_argument("--class-scores", type=Path, default=None, help="score file for the per-class accuracy plot")
    p.add_argument("--class-split", default=None, help="the labelled split --class-scores covers, e.g. target_val")
    p.add_argument("--benchmarks", type=Path, required=True, help="Snakemake benchmark directory")
    p.add_argument("--figures", type=Path, required=True, help="directory for the PNG figures")
    p.add_argument("--out", type=Path, required=True, help="report.md to write")
    return p


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, ReportJobConfig)
    build_report(
        annotations_dir=job.data.annotations_dir,
        metrics=args.metrics,
        train_metrics=args.train_metrics,
        class_scores=args.class_scores,
        class_split=args.class_split,
        benchmarks=args.benchmarks,
        figures=args.figures,
        out=args.out,
    )
    log.info("wrote %s", args.out)


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.report", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
