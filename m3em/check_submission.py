"""Check a ``submission.zip`` against the test split before uploading it.

Usage::

    python -m m3em.check_submission results/submission.zip --annotations <annotations dir or split file> \\
        [--split target_test]

Reports every problem it finds (zip layout, top-level keys and values, missing / extra narration
ids, entries without ``verb``/``noun``, wrong class keys or counts, non-numeric or NaN/inf
scores) and exits 1 if there is any, 0 when the file is valid. Class counts come from the class
files of an annotation directory, or ``--n-verbs/--n-nouns`` (97/300) with a single split file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from m3em.epic.annotations import EpicAnnotations, read_annotation_file
from m3em.epic.cli import run_entry_point
from m3em.submission import CHALLENGE, MEMBER, VERSION

#: Top-level keys: required, and optional (``results_source``, the source-test scores).
REQUIRED_KEYS = ("version", "challenge", "sls_pt", "sls_tl", "sls_td", "results_target")
OPTIONAL_KEYS = ("results_source",)
#: Offending ids shown per problem.
SHOW = 10


def _examples(items: Sequence[str]) -> str:
    shown = ", ".join(map(str, items[:SHOW]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOW else "")


class _DuplicateKeys:
    """``object_pairs_hook`` that builds the dict and records every repeated key."""

    def __init__(self, found: list[str]) -> None:
        self.found = found

    def __call__(self, pairs: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                self.found.append(key)
            out[key] = value
        return out


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_entries(results: dict, n_verbs: int, n_nouns: int) -> list[str]:
    """Per-entry problems, grouped by kind, each naming its narration ids."""
    expected = {"verb": [str(i) for i in range(n_verbs)], "noun": [str(i) for i in range(n_nouns)]}
    expected_sets = {t: set(k) for t, k in expected.items()}
    groups: dict[str, list[str]] = {}

    def add(kind: str, nid: str) -> None:
        groups.setdefault(kind, []).append(nid)

    for nid, entry in results.items():
        if not isinstance(entry, dict):
            add("entry is not an object", nid)
            continue
        unknown = sorted(set(entry) - {"verb", "noun"})
        if unknown:
            add(f"unknown key(s) {unknown} in the entry (expected 'verb' and 'noun')", nid)
        for task in ("verb", "noun"):
            if task not in entry:
                add(f"no '{task}' scores", nid)
                continue
            scores = entry[task]
            if not isinstance(scores, dict):
                add(f"'{task}' is not an object of class scores", nid)
                continue
            keys = set(scores)
            if keys != expected_sets[task]:
                n_exp = len(expected_sets[task])
                if len(scores) != n_exp:
                    add(f"'{task}' has {len(scores)} classes, expected {n_exp}", nid)
                wrong = sorted(keys - expected_sets[task])
                if wrong:  # with the right count, a wrong key always shows up here
                    add(f"'{task}' has key(s) outside \"0\"..\"{n_exp - 1}\" (e.g. {wrong[:3]})", nid)
            values = list(scores.values())
            if not all(_is_number(v) for v in values):
                add(f"'{task}' has non-numeric score(s)", nid)
            elif not all(math.isfinite(v) for v in values):
                add(f"'{task}' has NaN or inf score(s)", nid)
    return [f"{len(ids)} entr{'y' if len(ids) == 1 else 'ies'}: {kind}: {_examples(ids)}" for kind, ids in groups.items()]


def check_submission(
    zip_path: str | Path, expected_ids: Sequence[str], *, n_verbs: int = 97, n_nouns: int = 300
) -> list[str]:
    """Every problem of the submission file; empty when it is valid.

    Args:
        zip_path: the ``submission.zip``.
        expected_ids: narration ids of the test split.
        n_verbs, n_nouns: class counts.
    """
    zip_path = Path(zip_path)
    if not zip_path.exists():
        return [f"{zip_path}: file not found"]
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            if MEMBER not in names:
                return [f"{zip_path}: no member {MEMBER!r} at the zip root (members: {names[:10]})"]
            problems = [f"{zip_path}: extra zip member(s) besides {MEMBER}: {[n for n in names if n != MEMBER]}"] \
                if len(names) > 1 else []
            raw = zf.read(MEMBER)
    except zipfile.BadZipFile as exc:
        return [f"{zip_path}: not a zip file: {exc}"]
    try:
        # Python's json accepts NaN/Infinity literals; they are reported per entry below.
        data = json.loads(raw, object_pairs_hook=_DuplicateKeys(duplicates := []))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return problems + [f"{zip_path}:{MEMBER}: not valid JSON: {exc}"]
    if duplicates:
        # json keeps the last of repeated keys silently; the server's parser need not agree.
        problems.append(f"{MEMBER}: {len(duplicates)} duplicate key(s) in a JSON object: {_examples(duplicates)}")
    if not isinstance(data, dict):
        return problems + [f"{MEMBER}: the top level must be an object, got {type(data).__name__}"]
    missing_keys = [k for k in REQUIRED_KEYS if k not in data]
    if missing_keys:
        problems.append(f"{MEMBER}: missing top-level key(s) {missing_keys}")
    unknown_keys = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown_keys:
        problems.append(f"{MEMBER}: unknown top-level key(s) {unknown_keys}")
    if "version" in data and data["version"] != VERSION:
        problems.append(f"{MEMBER}: version is {data['version']!r}, expected {VERSION!r}")
    if "challenge" in data and data["challenge"] != CHALLENGE:
        problems.append(f"{MEMBER}: challenge is {data['challenge']!r}, expected {CHALLENGE!r}")
    for key in ("sls_pt", "sls_tl", "sls_td"):
        if key in data:
            v = data[key]
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 5:
                problems.append(f"{MEMBER}: {key} must be an integer 0-5, got {v!r}")
    results = data.get("results_target")
    if "results_target" in data and not isinstance(results, dict):
        problems.append(f"{MEMBER}: results_target must be an object keyed by narration id")
    elif isinstance(results, dict):
        expected = [str(x) for x in expected_ids]
        exp_set = set(expected)
        missing = [n for n in expected if n not in results]
        extra = [n for n in results if n not in exp_set]
        if missing:
            problems.append(f"results_target: {len(missing)} narration id(s) of the test split are missing: "
                            f"{_examples(missing)}")
        if extra:
            problems.append(f"results_target: {len(extra)} narration id(s) are not in the test split: "
                            f"{_examples(extra)}")
        problems += [f"results_target: {p}" for p in _check_entries(results, n_verbs, n_nouns)]
    return problems


def _expected_ids(annotations: Path, split: str) -> tuple[list[str], int | None, int | None]:
    if annotations.is_dir():
        ann = EpicAnnotations.open(annotations)
        return ann.split(split, labelled=False)["narration_id"].tolist(), len(ann.verbs), len(ann.nouns)
    return read_annotation_file(annotations, labelled=False)["narration_id"].tolist(), None, None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.check_submission", description="Validate a submission.zip.")
    p.add_argument("zip", type=Path, help="submission.zip")
    p.add_argument("--annotations", type=Path, required=True,
                   help="annotation directory (class files + UDA split files), or the test split file itself")
    p.add_argument("--split", default="target_test", help="split to check against (annotation directory only)")
    p.add_argument("--n-verbs", type=int, default=None, help="verb classes (default: class file, else 97)")
    p.add_argument("--n-nouns", type=int, default=None, help="noun classes (default: class file, else 300)")
    return p


def _run(args: argparse.Namespace) -> int:
    ids, n_verbs, n_nouns = _expected_ids(args.annotations, args.split)
    n_verbs = args.n_verbs or n_verbs or 97
    n_nouns = args.n_nouns or n_nouns or 300
    problems = check_submission(args.zip, ids, n_verbs=n_verbs, n_nouns=n_nouns)
    # The verdict is this command's output (the workflow keeps it as submission.check.txt): a
    # faulty submission is its result, listed in full with exit 1, not an error of the checker.
    if problems:
        print(f"{args.zip}: {len(problems)} problem(s):", file=sys.stderr)
        for prob in problems:
            print(f"  - {prob}", file=sys.stderr)
        return 1
    print(f"{args.zip}: OK ({len(ids)} narration ids, {n_verbs} verbs, {n_nouns} nouns)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.check_submission", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
