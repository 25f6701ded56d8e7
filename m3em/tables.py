"""Result tables in the report's layout, from metrics files of :mod:`m3em.evaluate`.

* Table 1: one row per (model, method): source-only, TA3N and TA3N + M3EM for each of the models
  A-D (and the ablations of :mod:`m3em.methods` when ``workflow.methods`` trains them); columns top-1 and top-5 accuracy of verb, noun and action.
* Table 2: one row per ensemble (``name`` of the metrics file, e.g. ``A+B``, ``A+B+C+D``), same
  columns.

Every accuracy comes with its bootstrap interval over segments (the metrics file's
``accuracy_ci``): in the CSV as ``<column> CI low`` / ``<column> CI high`` columns, in the
Markdown as ``45.20 [38.1, 52.0]``. Under the Markdown rows, two chance rows (uniform guess and
the split's most frequent classes) and a caption saying how each was computed.

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

from m3em.epic.atomic import atomic_write_text
from m3em.epic.cli import run_entry_point
from m3em.epic.errors import InputError
from m3em.evaluate import read_metrics
from m3em.methods import METHOD_LABELS

#: Method keys (score/metrics meta ``method``) in table order, with their display names
#: (:data:`m3em.methods.METHOD_LABELS`, the one place they are defined).
METHODS: dict[str, str] = {m.value: label for m, label in METHOD_LABELS.items()}
MODELS: tuple[str, ...] = ("A", "B", "C", "D")
TASKS: tuple[str, ...] = ("verb", "noun", "action")


#: Suffixes of the interval columns that follow each accuracy column.
CI_LOW, CI_HIGH = " CI low", " CI high"
#: Labels of the chance rows under a Markdown table, by ``chance`` key of the metrics files.
CHANCE_ROWS: dict[str, str] = {"uniform": "*chance: uniform*", "majority": "*chance: majority class*"}


class TableError(ValueError, InputError):
    """Metrics files that cannot make one table (labels missing or twice, splits or settings mixed)."""


def _metric_columns(top_k: Sequence[int]) -> list[str]:
    return [f"{task.capitalize()} top-{k}" for k in top_k for task in TASKS]


def _columns(top_k: Sequence[int]) -> list[str]:
    """Each accuracy column followed by its interval's low and high bound."""
    return [name + suffix for name in _metric_columns(top_k) for suffix in ("", CI_LOW, CI_HIGH)]


def _values(rec: dict[str, Any], top_k: Sequence[int], where: str) -> list[float]:
    """Accuracy, interval low, interval high for each (k, task), in :func:`_columns` order."""
    out = []
    for k in top_k:
        for task in TASKS:
            acc, ci = rec["accuracy"][task], rec["accuracy_ci"][task]
            if str(k) not in acc:
                raise TableError(f"{where}: no {task} top-{k} accuracy (have top-{sorted(acc)})")
            low, high = (float(x) for x in ci[str(k)])
            out += [float(acc[str(k)]), low, high]
    return out


def _shared_attrs(records: Sequence[tuple[str, dict[str, Any]]], top_k: Sequence[int]) -> dict[str, Any]:
    """What all rows of one table share: segments, classes, interval settings and chance levels.

    Rows of one table are evaluated on the same split; metrics files that disagree on these were
    made from other annotations or settings, which is an error naming the file.
    """
    keys = ("n_segments", "n_classes", "ci", "chance")
    ref_path, ref = records[0]
    for path, rec in records[1:]:
        for key in keys:
            if rec.get(key) != ref.get(key):
                raise TableError(f"{path}: {key!r} differs from {ref_path}'s ({rec.get(key)!r} vs {ref.get(key)!r}): "
                                 "one table needs metrics of one split and one evaluation setting")
    chance = {}
    for kind in CHANCE_ROWS:
        levels = ref["chance"][kind]
        chance[kind] = [float(levels[task][str(k)]) for k in top_k for task in TASKS]
    return {"n_segments": ref["n_segments"], "n_classes": dict(ref["n_classes"]), "ci": dict(ref["ci"]),
            "chance": chance}


def _common_split(records: Sequence[tuple[str, dict[str, Any]]]) -> str:
    splits = {rec["split"] for _, rec in records}
    if len(splits) != 1:
        raise TableError(f"metrics files mix splits {sorted(splits)}: one table per split")
    return splits.pop()


def build_table1(records: Sequence[tuple[str, dict[str, Any]]], top_k: Sequence[int] = (1, 5)) -> pd.DataFrame:
    """Table 1 (models x methods) from ``(path, record)`` pairs.

    Rows are ordered by model (A-D, then any other name) and method (:class:`m3em.methods.Method`
    order: source-only, TA3N, the ablations, TA3N + M3EM); combinations without a metrics file are left out. Every record needs ``model``
    and a known ``method``; two records for one row are an error.
    """
    if not records:
        raise TableError("no metrics files given")
    split = _common_split(records)
    rows: dict[tuple[str, str], list[Any]] = {}
    for path, rec in records:
        model, method = rec.get("model"), rec.get("method")
        if not model:
            raise TableError(f"{path}: no 'model' label (set it in the score meta or pass --model to m3em.evaluate)")
        if method not in METHODS:
            raise TableError(f"{path}: method {method!r} is not one of {list(METHODS)}")
        if (model, method) in rows:
            raise TableError(f"{path}: a second metrics file for model {model}, method {method}")
        rows[(model, method)] = [model, METHODS[method], *_values(rec, top_k, path)]

    def order(key: tuple[str, str]) -> tuple:
        model, method = key
        return (MODELS.index(model) if model in MODELS else len(MODELS), model, list(METHODS).index(method))

    df = pd.DataFrame([rows[k] for k in sorted(rows, key=order)], columns=["Model", "Method", *_columns(top_k)])
    df.attrs["split"] = split
    df.attrs.update(_shared_attrs(records, top_k))
    return df


def build_table2(records: Sequence[tuple[str, dict[str, Any]]], top_k: Sequence[int] = (1, 5)) -> pd.DataFrame:
    """Table 2 (ensembles) from ``(path, record)`` pairs, in the order given; row label ``name``."""
    if not records:
        raise TableError("no metrics files given")
    split = _common_split(records)
    rows, seen = [], set()
    for path, rec in records:
        name = rec.get("name") or rec.get("model")
        if not name:
            raise TableError(f"{path}: no 'name' label (the ensemble's name, e.g. A+B)")
        if name in seen:
            raise TableError(f"{path}: a second metrics file for ensemble {name}")
        seen.add(name)
        rows.append([name, *_values(rec, top_k, path)])
    df = pd.DataFrame(rows, columns=["Ensemble", *_columns(top_k)])
    df.attrs["split"] = split
    df.attrs.update(_shared_attrs(records, top_k))
    return df


def _pct(v: float) -> str:
    """2 decimals; small non-zero levels (e.g. uniform action chance) keep 2 significant digits."""
    return f"{v:.2g}" if 0 < abs(v) < 0.1 else f"{v:.2f}"


def caption(df: pd.DataFrame) -> str:
    """The sentence under a table: what the brackets and the chance rows are."""
    ci, n_cls = df.attrs["ci"], df.attrs["n_classes"]
    return (
        f"Accuracy in %; in brackets its {100 * ci['confidence']:g} % interval ({ci['method']}: "
        f"{df.attrs['n_segments']} segments, {ci['resamples']} resamples, seed {ci['seed']}). "
        f"Chance rows: *uniform* = k / number of classes, the expected top-k of a random ranking "
        f"({n_cls['verb']} verbs, {n_cls['noun']} nouns, actions: k / ({n_cls['verb']} x {n_cls['noun']}) "
        f"verb-noun pairs); *majority class* = share of segments whose label is among this split's k most "
        f"frequent classes (actions: verb-noun pairs), the best input-blind ranking."
    )


def to_markdown(df: pd.DataFrame, title: str) -> str:
    """A GitHub Markdown table under a title line, with chance rows and a caption under it.

    Each accuracy cell reads ``value [low, high]`` (its interval's bounds from the ``CI low`` /
    ``CI high`` columns); text columns are left-aligned, accuracies right-aligned.
    """
    metrics = [c for c in df.columns if c + CI_LOW in df.columns]
    text = [c for c in df.columns if c not in metrics and not c.endswith((CI_LOW, CI_HIGH))]
    header = "| " + " | ".join([*text, *metrics]) + " |"
    align = "|" + "|".join(["---"] * len(text) + ["---:"] * len(metrics)) + "|"
    lines = [f"**{title}** (split `{df.attrs.get('split', '?')}`, accuracy in %)", "", header, align]
    for _, row in df.iterrows():
        cells = [str(row[c]) for c in text]
        cells += [f"{row[c]:.2f} [{row[c + CI_LOW]:.1f}, {row[c + CI_HIGH]:.1f}]" for c in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    for kind, label in CHANCE_ROWS.items():
        lines.append("| " + " | ".join([""] * (len(text) - 1) + [label] + [_pct(v) for v in df.attrs["chance"][kind]])
                     + " |")
    lines += ["", caption(df)]
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.4f")
    return buf.getvalue()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.tables", description="Report tables from metrics files.")
    p.add_argument("--table", type=int, choices=(1, 2), required=True, help="1: models x methods, 2: ensembles")
    p.add_argument("--metrics", type=Path, nargs="+", required=True, help="metrics JSON files (m3em.evaluate)")
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 5])
    p.add_argument("--out-md", type=Path, required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    return p


def _run(args: argparse.Namespace) -> None:
    records = [(str(m), read_metrics(m)) for m in args.metrics]
    if args.table == 1:
        df, title = build_table1(records, args.top_k), "Table 1: single models"
    else:
        df, title = build_table2(records, args.top_k), "Table 2: ensembles"
    atomic_write_text(args.out_md, to_markdown(df, title))
    atomic_write_text(args.out_csv, to_csv(df))
    # The table on stdout is this command's result (the files hold the same text).
    print(to_markdown(df, title))


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.tables", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
