"""Evaluate one score file against a labelled split (official metrics, DESIGN section 5).

Usage::

    python -m m3em.evaluate --config config.yaml --scores results/scores/A_m3em/target_val.npz \\
        --split target_val --out results/metrics/A_m3em/target_val.json

The metrics file (JSON, percentages like the official scorer prints them)::

    {"format": "m3em-metrics/1", "split": "target_val", "n_segments": N, "scores": "<path>",
     "model": "A", "method": "m3em", "name": "...", "top_k": [1, 5],
     "accuracy": {"verb": {"1": 55.1, "5": 80.2}, "noun": {...}, "action": {...}}}

``model``/``method``/``name`` come from the score file's meta (keys of the same names) unless
given on the command line; :mod:`m3em.tables` lays the files out as the report's tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from m3em.annotations import LABELLED_SPLITS, EpicAnnotations
from m3em.atomic import atomic_write_text
from m3em.config import ConfigError, build_dataclass, load_config
from m3em.metrics import ACTION_TOP_N, compute_accuracies
from m3em.scores import ScoreFileError, Scores, read_scores

METRICS_FORMAT = "m3em-metrics/1"


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate:`` config section.

    Attributes:
        splits: labelled splits each trained model is scored and evaluated on.
        top_k: the k of the top-k accuracies (officially 1 and 5).
        action_top_n: verbs/nouns kept per segment when ranking actions (officially 100).
    """

    splits: tuple[str, ...] = ("target_val",)
    top_k: tuple[int, ...] = (1, 5)
    action_top_n: int = ACTION_TOP_N


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
    aligned = scores.select(split_ids)
    return compute_accuracies(
        aligned.verb,
        aligned.noun,
        labels["verb_class"].to_numpy(),
        labels["noun_class"].to_numpy(),
        ks=tuple(top_k),
        action_top_n=action_top_n,
    )


def metrics_record(
    accuracies: Mapping[str, Mapping[int, float]],
    *,
    split: str,
    n_segments: int,
    scores_path: str,
    meta: Mapping[str, Any],
    model: str | None = None,
    method: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready metrics record (accuracies in percent)."""
    return {
        "format": METRICS_FORMAT,
        "split": split,
        "n_segments": int(n_segments),
        "scores": scores_path,
        "model": model if model is not None else meta.get("model"),
        "method": method if method is not None else meta.get("method"),
        "name": name if name is not None else meta.get("name"),
        "top_k": sorted({int(k) for acc in accuracies.values() for k in acc}),
        "accuracy": {
            task: {str(k): round(100.0 * float(v), 4) for k, v in acc.items()} for task, acc in accuracies.items()
        },
    }


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics JSON written by this module; checks format and the accuracy block."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: metrics file not found")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(rec, dict) or rec.get("format") != METRICS_FORMAT:
        raise ValueError(f"{path}: not a metrics file (format is not {METRICS_FORMAT!r})")
    acc = rec.get("accuracy")
    if not isinstance(acc, dict) or set(acc) != {"verb", "noun", "action"}:
        raise ValueError(f"{path}: 'accuracy' must hold verb, noun and action")
    return rec


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="config.yaml (evaluate: and data.annotations_dir)")
    p.add_argument("--scores", type=Path, required=True, help="score file (.npz, m3em.scores)")
    p.add_argument("--split", required=True, help="labelled split, e.g. target_val")
    p.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    p.add_argument("--annotations", type=Path, default=None, help="annotation directory (default: data.annotations_dir)")
    p.add_argument("--model", default=None, help="model label for the tables (A-D; default: scores meta 'model')")
    p.add_argument("--method", default=None,
                   help="method label (m3em.methods.Method: source_only, ta3n, ..., m3em; default: scores meta 'method')")
    p.add_argument("--name", default=None, help="row label, e.g. an ensemble 'A+B' (default: scores meta 'name')")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = load_config(args.config)
    ecfg = build_dataclass(EvaluateConfig, cfg.get("evaluate", {}), "evaluate")
    if args.split not in LABELLED_SPLITS:
        raise ConfigError(f"--split {args.split}: not a labelled split; labelled: {sorted(LABELLED_SPLITS)}")
    annotations = EpicAnnotations.open(args.annotations or cfg["data"]["annotations_dir"])
    labels = annotations.split(args.split, labelled=True)
    scores = read_scores(args.scores, n_verbs=len(annotations.verbs), n_nouns=len(annotations.nouns))
    acc = evaluate_scores(scores, labels, top_k=ecfg.top_k, action_top_n=ecfg.action_top_n, where=str(args.scores))
    rec = metrics_record(acc, split=args.split, n_segments=len(labels), scores_path=str(args.scores),
                         meta=scores.meta, model=args.model, method=args.method, name=args.name)
    atomic_write_text(args.out, json.dumps(rec, indent=2, sort_keys=True) + "\n")
    line = "  ".join(f"{t}@{k} {v:.2f}" for t, a in rec["accuracy"].items() for k, v in a.items())
    print(f"{args.scores} on {args.split} ({len(labels)} segments): {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

