"""The challenge file: ``test.json`` in ``submission.zip`` (DESIGN section 5).

::

    {"version": "0.2", "challenge": "domain_adaptation", "sls_pt": 2, "sls_tl": 4, "sls_td": 3,
     "results_target": {narration_id: {"verb": {"0": s, ..., "96": s},
                                       "noun": {"0": s, ..., "299": s}}}}

Scores are log-probabilities (the scorer's own softmax then recovers the probabilities and ranks
actions by their product; see reference/epic_data.md section 2.5). The zip has one member
``test.json``, ZIP_DEFLATED at compresslevel 5, like the official C1 writer. The writer refuses a
file with a missing or extra narration id, a NaN/inf, or a wrong class count, and says which.

Usage::

    python -m m3em.submission --config config.yaml --scores results/scores/ensemble_A+B+C+D/target_test.npz \\
        --out results/submission.zip
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3em.ensemble import EnsembleConfig
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.atomic import atomic_output
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError, DataConfig
from m3em.epic.errors import InputError
from m3em.epic.scores import Scores, log_softmax, read_scores

VERSION = "0.2"
CHALLENGE = "domain_adaptation"
MEMBER = "test.json"
COMPRESSLEVEL = 5
#: Training-labels SLS level that declares use of spatial annotations (the hand-object boxes).
SLS_TL_BOXES = 4
#: Decimal places of the written log-probabilities: 1e-6 is about float32 resolution at the
#: magnitudes of log-probabilities, and the file is half the size of one with full float64 repr.
DECIMALS = 6

log = logging.getLogger("m3em.submission")


class SubmissionError(ValueError, InputError):
    """The scores cannot make a valid submission; the message lists every problem."""


@dataclasses.dataclass(frozen=True)
class SubmissionConfig:
    """The ``submission:`` config section.

    Attributes:
        sls_pt, sls_tl, sls_td: declared SLS levels (pre-training, training labels, training
            data), 0-5. Using the hand-object boxes (model C) means ``sls_tl`` 4.
        ensemble: name of the ``ensemble.combinations`` entry whose scores go into the file.
    """

    sls_pt: int = 2
    sls_tl: int = 4
    sls_td: int = 3
    ensemble: str = "A+B+C+D"

    def __post_init__(self) -> None:
        for key in ("sls_pt", "sls_tl", "sls_td"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 5:
                raise ConfigError(f"submission.{key}: SLS levels are integers 0-5, got {v!r}")


def _examples(items: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(map(str, items[:n]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def validate_for_submission(
    scores: Scores, expected_ids: Sequence[str], n_verbs: int, n_nouns: int
) -> list[str]:
    """Every reason ``scores`` cannot be submitted for ``expected_ids``; empty when it can."""
    problems = []
    have = set(scores.narration_ids)
    expected = list(map(str, expected_ids))
    exp_set = set(expected)
    missing = [n for n in expected if n not in have]
    extra = [n for n in scores.narration_ids if n not in exp_set]
    if missing:
        problems.append(f"{len(missing)} narration id(s) of the test split have no scores: {_examples(missing)}")
    if extra:
        problems.append(f"{len(extra)} scored narration id(s) are not in the test split: {_examples(extra)}")
    if len(have) != len(scores.narration_ids):
        seen: set[str] = set()
        dups = [x for x in scores.narration_ids if x in seen or seen.add(x)]
        problems.append(f"duplicate narration id(s): {_examples(dups)}")
    for task, arr, n in (("verb", scores.verb, n_verbs), ("noun", scores.noun, n_nouns)):
        if arr.ndim != 2 or arr.shape[0] != len(scores.narration_ids):
            problems.append(f"{task} scores have shape {arr.shape}, expected ({len(scores.narration_ids)}, {n})")
            continue
        if arr.shape[1] != n:
            problems.append(f"{task} scores have {arr.shape[1]} classes, expected {n}")
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad.size:
            problems.append(f"{task} scores are NaN or inf for {bad.size} narration id(s): "
                            f"{_examples([scores.narration_ids[i] for i in bad])}")
    return problems


def submission_json(scores: Scores, *, sls_pt: int, sls_tl: int, sls_td: int, decimals: int = DECIMALS) -> str:
    """The ``test.json`` text; class scores become row-wise log-softmax values.

    Built from one ``%``-format template per row rather than through nested dicts and
    ``json.dumps``: the same JSON, three times faster on the 5,909 x 397 scores of EPIC's test split.
    Scores must be finite (checked by :func:`validate_for_submission`).
    """
    verb = log_softmax(scores.verb)
    noun = log_softmax(scores.noun)
    num = f"%.{int(decimals)}f"
    row = ('{"verb":{' + ",".join(f'"{i}":{num}' for i in range(verb.shape[1]))
           + '},"noun":{' + ",".join(f'"{i}":{num}' for i in range(noun.shape[1])) + "}}")
    values = np.concatenate([verb, noun], axis=1).tolist()
    entries = ",".join(json.dumps(nid) + ":" + row % tuple(v) for nid, v in zip(scores.narration_ids, values))
    head = json.dumps({"version": VERSION, "challenge": CHALLENGE, "sls_pt": int(sls_pt), "sls_tl": int(sls_tl),
                       "sls_td": int(sls_td)}, separators=(",", ":"))
    return head[:-1] + ',"results_target":{' + entries + "}}"


def write_submission(
    path: str | Path,
    scores: Scores,
    expected_ids: Sequence[str],
    *,
    sls_pt: int,
    sls_tl: int,
    sls_td: int,
    n_verbs: int = 97,
    n_nouns: int = 300,
    uses_hand_object_boxes: bool | None = None,
) -> None:
    """Write ``submission.zip`` atomically, or refuse.

    Args:
        path: the zip to write.
        scores: scores of the test split (logits or log-probabilities), any row order.
        expected_ids: the narration ids of the test split (5,909 on EPIC-100 UDA).
        sls_pt, sls_tl, sls_td: SLS levels 0-5.
        n_verbs, n_nouns: class counts (97 / 300 on EPIC).
        uses_hand_object_boxes: whether any model used the hand-object boxes (default: the score
            meta's ``uses_hand_object_boxes``); then ``sls_tl`` must be at least 4.

    Raises:
        SubmissionError: listing every problem (missing/extra ids, NaN/inf, class counts, SLS).
    """
    path = Path(path)
    problems = validate_for_submission(scores, expected_ids, n_verbs, n_nouns)
    for key, v in (("sls_pt", sls_pt), ("sls_tl", sls_tl), ("sls_td", sls_td)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v <= 5:
            problems.append(f"{key} must be an integer 0-5, got {v!r}")
    if uses_hand_object_boxes is None:
        uses_hand_object_boxes = bool(scores.meta.get("uses_hand_object_boxes", False))
    if uses_hand_object_boxes and isinstance(sls_tl, int) and sls_tl < SLS_TL_BOXES:
        problems.append(f"the scores come from a model that used hand-object boxes: sls_tl must be "
                        f">= {SLS_TL_BOXES}, got {sls_tl}")
    if problems:
        raise SubmissionError(f"{path}: refusing to write the submission:\n  - " + "\n  - ".join(problems))
    ordered = scores.select([str(x) for x in expected_ids])
    payload = submission_json(ordered, sls_pt=sls_pt, sls_tl=sls_tl, sls_td=sls_td)
    with atomic_output(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESSLEVEL) as zf:
            zf.writestr(MEMBER, payload)


@dataclasses.dataclass(frozen=True)
class SubmissionJobConfig:
    """The config sections ``python -m m3em.submission`` reads."""

    data: DataConfig
    submission: SubmissionConfig
    ensemble: EnsembleConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.submission", description="Write the challenge submission.zip.")
    p.add_argument("--config", type=Path, required=True, help="config.yaml (submission:, data.annotations_dir, data.splits.test)")
    p.add_argument("--scores", type=Path, required=True, help="scores of the test split (.npz), normally the ensemble")
    p.add_argument("--out", type=Path, required=True, help="submission.zip to write")
    p.add_argument("--annotations", type=Path, default=None, help="annotation directory (default: data.annotations_dir)")
    p.add_argument("--split", default=None, help="test split (default: data.splits.test)")
    return p


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, SubmissionJobConfig)
    scfg = job.submission
    # submission.ensemble must name a built ensemble (the rule picks the score file by that name).
    try:
        job.ensemble.get(scfg.ensemble)
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: submission.ensemble: {exc}") from exc
    annotations = EpicAnnotations.open(args.annotations or job.data.annotations_dir)
    split = args.split or job.data.splits.test
    ids = annotations.split(split, labelled=False)["narration_id"].tolist()
    scores = read_scores(args.scores)
    write_submission(args.out, scores, ids, sls_pt=scfg.sls_pt, sls_tl=scfg.sls_tl, sls_td=scfg.sls_td,
                     n_verbs=len(annotations.verbs), n_nouns=len(annotations.nouns))
    log.info("wrote %s: %d segments of %s, SLS %d/%d/%d", args.out, len(ids), split, scfg.sls_pt, scfg.sls_tl,
             scfg.sls_td)


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.submission", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
