"""Evaluate score files against labelled splits (official metrics, DESIGN section 5).

Usage::

    python -m m3em.evaluate --config config.yaml --scores results/scores/A_m3em/target_val.npz \\
        --split target_val --out results/metrics/A_m3em/target_val.json

``--scores``, ``--split`` and ``--out`` take one or more values, paired in order: the workflow
evaluates all of a run's splits in one process.

The metrics file (JSON, percentages like the official scorer prints them)::

    {"format": "m3em-metrics/2", "split": "target_val", "n_segments": N, "scores": "<path>",
     "model": "A", "method": "m3em", "name": "...", "top_k": [1, 5],
     "accuracy": {"verb": {"1": 55.1, "5": 80.2}, "noun": {...}, "action": {...}},
     "accuracy_ci": {"verb": {"1": [50.3, 59.8], ...}, ...},
     "ci": {"method": "percentile bootstrap over segments", "confidence": 0.95, "resamples": 1000, "seed": 0},
     "n_classes": {"verb": 97, "noun": 300, "action": 29100},
     "chance": {"uniform": {"verb": {"1": 1.03, ...}, ...}, "majority": {"verb": {"1": 20.4, ...}, ...}}}

``accuracy_ci`` is the 95 % percentile bootstrap interval of each accuracy, resampling the split's
segments (:func:`m3em.metrics.bootstrap_intervals`); ``chance`` holds what a uniform guess and the
split's most frequent classes score (:func:`m3em.metrics.chance_levels`).

``model``/``method``/``name`` come from the score file's meta (keys of the same names) unless
given on the command line; :mod:`m3em.tables` lays the files out as the report's tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from m3em.epic.annotations import LABELLED_SPLITS, EpicAnnotations
from m3em.epic.atomic import atomic_write_text
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError, DataConfig
from m3em.epic.errors import InputError
from m3em.epic.scores import ScoreFileError, Scores, read_scores
from m3em.metrics import (
    ACTION_TOP_N,
    BOOTSTRAP_CONFIDENCE,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    accuracies_of,
    bootstrap_intervals,
    chance_levels,
    compute_accuracies,
    compute_hits,
)

METRICS_FORMAT = "m3em-metrics/2"
#: What ``ci.method`` of a metrics file says.
CI_METHOD = "percentile bootstrap over segments"

log = logging.getLogger("m3em.evaluate")


class MetricsFileError(ValueError, InputError):
    """A metrics file that is missing, not JSON or not in :data:`METRICS_FORMAT`; names the file."""


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate:`` config section.

    Attributes:
        splits: labelled splits each trained model is scored and evaluated on.
        top_k: the k of the top-k accuracies (officially 1 and 5).
        action_top_n: verbs/nouns kept per segment when ranking actions (officially 100).
        bootstrap_resamples: resamples of the segments behind each accuracy's interval.
        bootstrap_confidence: the intervals' coverage (0.95: a 95 % interval).
        bootstrap_seed: seed of the resampling (fixed: the same scores give the same intervals).
    """

    splits: tuple[str, ...] = ("target_val",)
    top_k: tuple[int, ...] = (1, 5)
    action_top_n: int = ACTION_TOP_N
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    bootstrap_confidence: float = BOOTSTRAP_CONFIDENCE
    bootstrap_seed: int = BOOTSTRAP_SEED


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Everything the metrics file says about one score table on one labelled split (fractions).

    Attributes:
        accuracy: ``{task: {k: acc}}`` for task in verb, noun, action.
        interval: ``{task: {k: (low, high)}}``, the bootstrap interval of each accuracy.
        chance: ``{"uniform" | "majority": {task: {k: acc}}}`` (:func:`m3em.metrics.chance_levels`).
        n_classes: ``{"verb": V, "noun": C_n, "action": V * C_n}``.
        n_segments: segments of the split.
        config: the settings used (top-k, action top-n, bootstrap).
    """

    accuracy: dict[str, dict[int, float]]
    interval: dict[str, dict[int, tuple[float, float]]]
    chance: dict[str, dict[str, dict[int, float]]]
    n_classes: dict[str, int]
    n_segments: int
    config: EvaluateConfig


def _aligned(scores: Scores, labels: pd.DataFrame, where: str) -> Scores:
    """``scores`` in the row order of ``labels``; every labelled id scored, nothing else."""
    for col in ("narration_id", "verb_class", "noun_class"):
        if col not in labels.columns:
            raise ValueError(f"labels lack column {col!r}: is the split labelled?")
    split_ids = labels["narration_id"].astype(str).tolist()
    have = set(scores.narration_ids)
    missing = [n for n in split_ids if n not in have]
    extra = sorted(have - set(split_ids))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} narration id(s) of the split have no scores, e.g. {missing[:5]}")
        if extra:
            parts.append(f"{len(extra)} scored id(s) are not in the split, e.g. {extra[:5]}")
        raise ScoreFileError(f"{where}: " + "; ".join(parts))
    return scores.select(split_ids)


def evaluate_scores(
    scores: Scores,
    labels: pd.DataFrame,
    *,
    top_k: Sequence[int] = (1, 5),
    action_top_n: int = ACTION_TOP_N,
    where: str = "<scores>",
) -> dict[str, dict[int, float]]:
    """Official accuracies (fractions) of ``scores`` on the labelled rows of ``labels``.

    Args:
        scores: one model's scores; must cover exactly the narration ids of ``labels``.
        labels: DataFrame with ``narration_id, verb_class, noun_class``.
        top_k, action_top_n: see :class:`EvaluateConfig`.
        where: name used in error messages (the score file).

    Raises:
        ScoreFileError: ids missing from or not in the split, naming a few of them.
    """
    aligned = _aligned(scores, labels, where)
    return compute_accuracies(
        aligned.verb,
        aligned.noun,
        labels["verb_class"].to_numpy(),
        labels["noun_class"].to_numpy(),
        ks=tuple(top_k),
        action_top_n=action_top_n,
    )


def evaluate_split(
    scores: Scores, labels: pd.DataFrame, config: EvaluateConfig, *, where: str = "<scores>"
) -> Evaluation:
    """Accuracies, their bootstrap intervals and the chance levels of ``scores`` on ``labels``.

    The per-segment correctness is computed once (the action ranking is the costly part) and the
    intervals resample it; the class counts for the uniform chance are the score columns.

    Args:
        scores: one model's scores; must cover exactly the narration ids of ``labels``.
        labels: DataFrame with ``narration_id, verb_class, noun_class``.
        config: top-k, action top-n and bootstrap settings.
        where: name used in error messages (the score file).

    Raises:
        ScoreFileError: ids missing from or not in the split, naming a few of them.
    """
    aligned = _aligned(scores, labels, where)
    verb_labels, noun_labels = labels["verb_class"].to_numpy(), labels["noun_class"].to_numpy()
    hits = compute_hits(aligned.verb, aligned.noun, verb_labels, noun_labels, ks=tuple(config.top_k),
                        action_top_n=config.action_top_n)
    n_verbs, n_nouns = aligned.verb.shape[1], aligned.noun.shape[1]
    return Evaluation(
        accuracy=accuracies_of(hits),
        interval=bootstrap_intervals(hits, resamples=config.bootstrap_resamples,
                                     confidence=config.bootstrap_confidence, seed=config.bootstrap_seed),
        chance=chance_levels(verb_labels, noun_labels, n_verbs, n_nouns, ks=tuple(config.top_k)),
        n_classes={"verb": n_verbs, "noun": n_nouns, "action": n_verbs * n_nouns},
        n_segments=len(labels),
        config=config,
    )


def _percent(by_task: Mapping[str, Mapping[int, Any]]) -> dict[str, dict[str, Any]]:
    """Fractions (or (low, high) pairs of fractions) to percent, keyed by ``str(k)``."""
    def pct(v: Any) -> Any:
        if isinstance(v, tuple):
            return [pct(x) for x in v]
        return round(100.0 * float(v), 4)

    return {task: {str(k): pct(v) for k, v in acc.items()} for task, acc in by_task.items()}


def metrics_record(
    evaluation: Evaluation,
    *,
    split: str,
    scores_path: str,
    meta: Mapping[str, Any],
    model: str | None = None,
    method: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready metrics record (accuracies, intervals and chance levels in percent)."""
    ev = evaluation
    return {
        "format": METRICS_FORMAT,
        "split": split,
        "n_segments": int(ev.n_segments),
        "scores": scores_path,
        "model": model if model is not None else meta.get("model"),
        "method": method if method is not None else meta.get("method"),
        "name": name if name is not None else meta.get("name"),
        "top_k": sorted({int(k) for acc in ev.accuracy.values() for k in acc}),
        "accuracy": _percent(ev.accuracy),
        "accuracy_ci": _percent(ev.interval),
        "ci": {"method": CI_METHOD, "confidence": ev.config.bootstrap_confidence,
               "resamples": ev.config.bootstrap_resamples, "seed": ev.config.bootstrap_seed},
        "n_classes": {task: int(c) for task, c in ev.n_classes.items()},
        "chance": {kind: _percent(levels) for kind, levels in ev.chance.items()},
    }


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics JSON written by this module; checks format and the accuracy block.

    Raises:
        MetricsFileError: the file is missing, not JSON, or not a metrics file; names the file.
    """
    path = Path(path)
    if not path.exists():
        raise MetricsFileError(f"{path}: metrics file not found")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a binary file is not JSON either
        raise MetricsFileError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(rec, dict) or rec.get("format") != METRICS_FORMAT:
        fmt = rec.get("format") if isinstance(rec, dict) else None
        hint = "; written by an older m3em.evaluate: rerun the evaluate stage" if fmt == "m3em-metrics/1" else ""
        raise MetricsFileError(f"{path}: not a metrics file (format is {fmt!r}, not {METRICS_FORMAT!r}){hint}")
    acc = rec.get("accuracy")
    if not isinstance(acc, dict) or set(acc) != {"verb", "noun", "action"}:
        raise MetricsFileError(f"{path}: 'accuracy' must hold verb, noun and action")
    ci = rec.get("accuracy_ci")
    if not isinstance(ci, dict) or any(not isinstance(ci.get(t), dict) or set(ci[t]) != set(acc[t]) for t in acc):
        raise MetricsFileError(f"{path}: 'accuracy_ci' must hold an interval for every accuracy")
    if any(not isinstance(v, list) or len(v) != 2 for t in ci for v in ci[t].values()):
        raise MetricsFileError(f"{path}: every 'accuracy_ci' entry must be [low, high]")
    chance = rec.get("chance")
    if not isinstance(chance, dict) or set(chance) != {"uniform", "majority"}:
        raise MetricsFileError(f"{path}: 'chance' must hold 'uniform' and 'majority'")
    if not isinstance(rec.get("ci"), dict):
        raise MetricsFileError(f"{path}: no 'ci' block (the interval's method and settings)")
    return rec


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="config.yaml (evaluate: and data.annotations_dir)")
    p.add_argument("--scores", type=Path, nargs="+", required=True, help="score file(s) (.npz, m3em.epic.scores)")
    p.add_argument("--split", nargs="+", required=True, help="labelled split of each score file, e.g. target_val")
    p.add_argument("--out", type=Path, nargs="+", required=True, help="metrics JSON to write for each score file")
    p.add_argument("--annotations", type=Path, default=None, help="annotation directory (default: data.annotations_dir)")
    p.add_argument("--model", default=None, help="model label for the tables (A-D; default: scores meta 'model')")
    p.add_argument("--method", default=None,
                   help="method label (m3em.methods.Method: source_only, ta3n, ..., m3em; default: scores meta 'method')")
    p.add_argument("--name", default=None, help="row label, e.g. an ensemble 'A+B' (default: scores meta 'name')")
    return p


@dataclasses.dataclass(frozen=True)
class EvaluateJobConfig:
    """The config sections ``python -m m3em.evaluate`` reads."""

    data: DataConfig
    evaluate: EvaluateConfig = EvaluateConfig()


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not len(args.scores) == len(args.split) == len(args.out):
        parser.error(f"--scores, --split and --out pair up: got {len(args.scores)}, {len(args.split)} and "
                     f"{len(args.out)} values")
    job = load_job_config(args.config, EvaluateJobConfig)
    bad = [s for s in args.split if s not in LABELLED_SPLITS]
    if bad:
        raise ConfigError(f"--split {' '.join(bad)}: not a labelled split; labelled: {sorted(LABELLED_SPLITS)}")
    annotations = EpicAnnotations.open(args.annotations or job.data.annotations_dir)
    for scores_path, split, out in zip(args.scores, args.split, args.out):
        labels = annotations.split(split, labelled=True)
        scores = read_scores(scores_path, n_verbs=len(annotations.verbs), n_nouns=len(annotations.nouns))
        ev = evaluate_split(scores, labels, job.evaluate, where=str(scores_path))
        rec = metrics_record(ev, split=split, scores_path=str(scores_path),
                             meta=scores.meta, model=args.model, method=args.method, name=args.name)
        atomic_write_text(out, json.dumps(rec, indent=2, sort_keys=True) + "\n")
        line = "  ".join(f"{t}@{k} {v:.2f} [{lo:.2f}, {hi:.2f}]" for t, a in rec["accuracy"].items()
                         for k, v in a.items() for lo, hi in [rec["accuracy_ci"][t][k]])
        log.info("%s on %s (%d segments): %s", scores_path, split, len(labels), line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    return run_entry_point("python -m m3em.evaluate", parser, lambda args: _run(args, parser), argv)


if __name__ == "__main__":
    raise SystemExit(main())

