"""Score files: one per (model, split), the hand-off between training/testing, evaluation,
ensembling and the submission writer.

A score file is an ``.npz`` (read with ``allow_pickle=False``, so loading runs no code) holding

* ``narration_ids``: unicode array ``(N,)``, unique;
* ``verb``: float32 ``(N, n_verbs)`` and ``noun``: float32 ``(N, n_nouns)`` class scores, rows in
  the order of ``narration_ids``. They are logits or log-probabilities (``meta["kind"]``); both
  give the same rankings and the same softmax probabilities, and the submission writes
  log-probabilities so the scorer's softmax recovers the probabilities;
* ``meta``: a JSON string (model name, split, checkpoint, what the scores are, ...).

Files are written atomically; a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3em.epic.atomic import atomic_output
from m3em.epic.errors import InputError

FORMAT = "m3em-scores/1"

#: What the class scores are. Anything the softmax maps to the intended probabilities.
SCORE_KINDS: tuple[str, ...] = ("logits", "log_probs")


class ScoreFileError(ValueError, InputError):
    """A score file (or the arrays meant for one) that breaks the contract; the message names it."""


@dataclasses.dataclass(frozen=True)
class Scores:
    """The class scores of one model on one split.

    Attributes:
        narration_ids: ``(N,)`` segment ids, unique, in row order.
        verb: float32 ``(N, n_verbs)`` logits or log-probabilities.
        noun: float32 ``(N, n_nouns)`` logits or log-probabilities.
        meta: free-form JSON-serialisable description; ``meta["kind"]`` is one of :data:`SCORE_KINDS`.
    """

    narration_ids: tuple[str, ...]
    verb: np.ndarray
    noun: np.ndarray
    meta: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.narration_ids)

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "logits"))

    def row_of(self) -> dict[str, int]:
        """Map narration id -> row."""
        return {nid: i for i, nid in enumerate(self.narration_ids)}

    def select(self, narration_ids: Sequence[str]) -> Scores:
        """The rows of ``narration_ids`` in that order; every id must be present."""
        rows = self.row_of()
        missing = [n for n in narration_ids if n not in rows]
        if missing:
            raise ScoreFileError(
                f"{len(missing)} narration id(s) have no scores, e.g. {missing[:5]}"
            )
        idx = np.fromiter((rows[n] for n in narration_ids), dtype=np.int64, count=len(narration_ids))
        return Scores(tuple(narration_ids), self.verb[idx], self.noun[idx], self.meta)


def check_scores(
    narration_ids: Sequence[str],
    verb: np.ndarray,
    noun: np.ndarray,
    *,
    where: str = "<scores>",
    n_verbs: int | None = None,
    n_nouns: int | None = None,
) -> None:
    """Raise :class:`ScoreFileError` unless the arrays make a valid score table.

    Checks: 2-d arrays with one row per id, unique non-empty string ids, finite values, and (when
    given) the class counts.
    """
    n = len(narration_ids)
    for name, arr, expected in (("verb", verb, n_verbs), ("noun", noun, n_nouns)):
        if arr.ndim != 2:
            raise ScoreFileError(f"{where}: {name} scores must be 2-d (N, classes), got shape {arr.shape}")
        if arr.shape[0] != n:
            raise ScoreFileError(f"{where}: {name} scores have {arr.shape[0]} rows but there are {n} narration ids")
        if expected is not None and arr.shape[1] != expected:
            raise ScoreFileError(f"{where}: {name} scores have {arr.shape[1]} classes, expected {expected}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ScoreFileError(f"{where}: {name} scores must be floating point, got {arr.dtype}")
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ScoreFileError(
                f"{where}: {name} scores contain NaN or inf in {rows.size} row(s), e.g. narration id(s) "
                f"{[narration_ids[i] for i in rows[:5]]}"
            )
    if any(not isinstance(x, str) or not x for x in narration_ids):
        raise ScoreFileError(f"{where}: narration ids must be non-empty strings")
    if len(set(narration_ids)) != n:
        seen: set[str] = set()
        dups = [x for x in narration_ids if x in seen or seen.add(x)]
        raise ScoreFileError(f"{where}: duplicate narration id(s) {dups[:5]}")


def write_scores(
    path: str | Path,
    narration_ids: Sequence[str],
    verb_logits: np.ndarray,
    noun_logits: np.ndarray,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write a score file atomically.

    Args:
        path: destination, ``.npz``.
        narration_ids: ``(N,)`` unique ids.
        verb_logits: ``(N, n_verbs)`` logits or log-probabilities (97 on EPIC).
        noun_logits: ``(N, n_nouns)`` logits or log-probabilities (300 on EPIC).
        meta: JSON-serialisable description; ``kind`` defaults to ``"logits"``.

    Raises:
        ScoreFileError: bad shapes, NaN/inf, duplicate ids, unknown ``kind``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ScoreFileError(f"{path}: score files are .npz")
    ids = [str(x) for x in narration_ids]
    verb = np.asarray(verb_logits, dtype=np.float32)
    noun = np.asarray(noun_logits, dtype=np.float32)
    check_scores(ids, verb, noun, where=str(path))
    meta = dict(meta or {})
    meta.setdefault("kind", "logits")
    if meta["kind"] not in SCORE_KINDS:
        raise ScoreFileError(f"{path}: meta kind {meta['kind']!r} is not one of {SCORE_KINDS}")
    meta["format"] = FORMAT
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except TypeError as exc:
        raise ScoreFileError(f"{path}: meta is not JSON-serialisable: {exc}") from exc
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                narration_ids=np.asarray(ids, dtype=np.str_) if ids else np.zeros(0, dtype="<U1"),
                verb=verb,
                noun=noun,
                meta=np.asarray(meta_json),
            )


def read_scores(path: str | Path, *, n_verbs: int | None = None, n_nouns: int | None = None) -> Scores:
    """Read and validate a score file written by :func:`write_scores`.

    Args:
        path: the ``.npz``.
        n_verbs, n_nouns: expected class counts (checked when given).

    Raises:
        ScoreFileError: missing file, missing array, bad shapes, NaN/inf, duplicate ids.
    """
    path = Path(path)
    if not path.exists():
        raise ScoreFileError(f"{path}: score file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("narration_ids", "verb", "noun", "meta") if k not in data.files]
            if missing:
                raise ScoreFileError(f"{path}: missing array(s) {missing} (have {data.files})")
            ids = tuple(str(x) for x in data["narration_ids"].tolist())
            verb = np.asarray(data["verb"])
            noun = np.asarray(data["noun"])
            meta = json.loads(str(data["meta"]))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ScoreFileError):
            raise
        raise ScoreFileError(f"{path}: not a readable score file: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ScoreFileError(f"{path}: meta format is {meta.get('format')!r}, expected {FORMAT!r}")
    check_scores(ids, verb, noun, where=str(path), n_verbs=n_verbs, n_nouns=n_nouns)
    return Scores(ids, verb, noun, meta)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``(N, C)`` scores (float64 internally, stable)."""
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` scores (float64)."""
    return np.exp(log_softmax(x))
