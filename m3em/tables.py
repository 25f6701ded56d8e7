"""Result tables in the report's layout, from metrics files of :mod:`m3em.evaluate`.

* Table 1: one row per (model, method): source-only, TA3N and TA3N + M3EM for each of the models
  A-D (and the ablations of :mod:`m3em.methods` when ``workflow.methods`` trains them); columns top-1 and top-5 accuracy of verb, noun and action.
* Table 2: one row per ensemble (``name`` of the metrics file, e.g. ``A+B``, ``A+B+C+D``), same
  columns.

Written as Markdown and CSV. Usage::

    python -m m3em.tables --table 1 --metrics results/metrics/*/target_val.json \\
        --out-md results/tables/table1.md --out-csv results/tables/table1.csv
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from m3em.atomic import atomic_write_text
from m3em.evaluate import read_metrics
from m3em.methods import METHOD_LABELS

#: Method keys (score/metrics meta ``method``) in table order, with their display names
#: (:data:`m3em.methods.METHOD_LABELS`, the one place they are defined).
METHODS: dict[str, str] = {m.value: label for m, label in METHOD_LABELS.items()}
MODELS: tuple[str, ...] = ("A", "B", "C", "D")
TASKS: tuple[str, ...] = ("verb", "noun", "action")


def _columns(top_k: Sequence[int]) -> list[str]:
    return [f"{task.capitalize()} top-{k}" for k in top_k for task in TASKS]


def _values(rec: dict[str, Any], top_k: Sequence[int], where: str) -> list[float]:
    out = []
    for k in top_k:
        for task in TASKS:
            acc = rec["accuracy"][task]
            if str(k) not in acc:
                raise ValueError(f"{where}: no {task} top-{k} accuracy (have top-{sorted(acc)})")
            out.append(float(acc[str(k)]))
    return out


def _common_split(records: Sequence[tuple[str, dict[str, Any]]]) -> str:
    splits = {rec["split"] for _, rec in records}
    if len(splits) != 1:
        raise ValueError(f"metrics files mix splits {sorted(splits)}: one table per split")
    return splits.pop()


def build_table1(records: Sequence[tuple[str, dict[str, Any]]], top_k: Sequence[int] = (1, 5)) -> pd.DataFrame:
    """Table 1 (models x methods) from ``(path, record)`` pairs.

    Rows are ordered by model (A-D, then any other name) and method (:class:`m3em.methods.Method`
    order: source-only, TA3N, the ablations, TA3N + M3EM); combinations without a metrics file are left out. Every record needs ``model``
    and a known ``method``; two records for one row are an error.
    """
    if not records:
        raise ValueError("no metrics files given")
    split = _common_split(records)
    rows: dict[tuple[str, str], list[Any]] = {}
    for path, rec in records:
        model, method = rec.get("model"), rec.get("method")
        if not model:
            raise ValueError(f"{path}: no 'model' label (set it in the score meta or pass --model to m3em.evaluate)")
        if method not in METHODS:
            raise ValueError(f"{path}: method {method!r} is not one of {list(METHODS)}")
        if (model, method) in rows:
            raise ValueError(f"{path}: a second metrics file for model {model}, method {method}")
        rows[(model, method)] = [model, METHODS[method], *_values(rec, top_k, path)]

    def order(key: tuple[str, str]) -> tuple:
        model, method = key
        return (MODELS.index(model) if model in MODELS else len(MODELS), model, list(METHODS).index(method))

    df = pd.DataFrame([rows[k] for k in sorted(rows, key=order)], columns=["Model", "Method", *_columns(top_k)])
    df.attrs["split"] = split
    return df


def build_table2(records: Sequence[tuple[str, dict[str, Any]]], top_k: Sequence[int] = (1, 5)) -> pd.DataFrame:
    """Table 2 (ensembles) from ``(path, record)`` pairs, in the order given; row label ``name``."""
    if not records:
        raise ValueError("no metrics files given")
    split = _common_split(records)
    rows, seen = [], set()
    for path, rec in records:
        name = rec.get("name") or rec.get("model")
        if not name:
            raise ValueError(f"{path}: no 'name' label (the ensemble's name, e.g. A+B)")
        if name in seen:
            raise ValueError(f"{path}: a second metrics file for ensemble {name}")
        seen.add(name)
        rows.append([name, *_values(rec, top_k, path)])
    df = pd.DataFrame(rows, columns=["Ensemble", *_columns(top_k)])
    df.attrs["split"] = split
    return df


def to_markdown(df: pd.DataFrame, title: str) -> str:
    """A GitHub Markdown table (accuracies in %, 2 decimals) under a title line."""
    header = "| " + " | ".join(df.columns) + " |"
    # Numbers right-aligned, text left-aligned (pandas 3 text columns are "str", not object, dtype).
    align = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"
    lines = [f"**{title}** (split `{df.attrs.get('split', '?')}`, accuracy in %)", "", header, align]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(v if isinstance(v, str) else f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.4f")
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m m3em.tables", description="Report tables from metrics files.")
    p.add_argument("--table", type=int, choices=(1, 2), required=True, help="1: models x methods, 2: ensembles")
    p.add_argument("--metrics", type=Path, nargs="+", required=True, help="metrics JSON files (m3em.evaluate)")
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 5])
    p.add_argument("--out-md", type=Path, required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    args = p.parse_args(argv)
    records = [(str(m), read_metrics(m)) for m in args.metrics]
    if args.table == 1:
        df, title = build_table1(records, args.top_k), "Table 1: single models"
    else:
        df, title = build_table2(records, args.top_k), "Table 2: ensembles"
    atomic_write_text(args.out_md, to_markdown(df, title))
    atomic_write_text(args.out_csv, to_csv(df))
    print(to_markdown(df, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
