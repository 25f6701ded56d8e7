"""Ensembles: the weighted mean of several models' softmax probabilities (DESIGN section 5).

``p = sum_k w_k softmax(s_k) / sum_k w_k`` for verbs and nouns separately; the output score file
holds ``log p`` (``meta.kind = "log_probs"``), computed with log-sum-exp so it stays finite where
the probabilities underflow. Usage::

    python -m m3em.ensemble --config config.yaml --combination A+B+C+D \\
        --scores A.npz B.npz C.npz D.npz --out results/scores/ensemble_A+B+C+D/target_test.npz

``--weights`` gives the weights directly instead of ``--combination`` (default: equal weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError
from m3em.epic.errors import InputError
from m3em.epic.scores import ScoreFileError, Scores, log_softmax, read_scores, write_scores

log = logging.getLogger("m3em.ensemble")


class EnsembleError(ValueError, InputError):
    """Members or weights that cannot make an ensemble (``--weights`` or config weights)."""


@dataclasses.dataclass(frozen=True)
class EnsembleCombination:
    """One ensemble: a name (the Table 2 row, e.g. ``A+B``), member models and their weights."""

    name: str
    members: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.members) != len(self.weights):
            raise ConfigError(f"ensemble {self.name}: {len(self.members)} members but {len(self.weights)} weights")
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"ensemble {self.name}: a member is listed twice: {list(self.members)}")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """The ``ensemble:`` config section: the combinations to build (the report's Table 2)."""

    combinations: tuple[EnsembleCombination, ...]

    def get(self, name: str) -> EnsembleCombination:
        for comb in self.combinations:
            if comb.name == name:
                return comb
        raise ConfigError(f"ensemble.combinations has no {name!r}; have {[c.name for c in self.combinations]}")


def _check_weights(weights: Sequence[float], n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise EnsembleError(f"{n} members but {w.size} weights")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise EnsembleError(f"weights must be finite, non-negative and not all zero; got {list(weights)}")
    return w


def _mean_log_prob(logs: Sequence[np.ndarray], w: np.ndarray) -> np.ndarray:
    """``log(sum_k w_k exp(logs_k) / sum_k w_k)`` stably; logs are ``(N, C)`` log-probabilities."""
    stacked = np.stack(logs)  # (K, N, C)
    with np.errstate(divide="ignore"):
        logw = np.log(w / w.sum())[:, None, None]  # zero weight -> -inf, dropped by the max
    z = stacked + logw
    m = z.max(axis=0)
    return m + np.log(np.exp(z - m).sum(axis=0))


def ensemble_scores(members: Sequence[Scores], weights: Sequence[float], name: str | None = None) -> Scores:
    """Weighted mean of the members' softmax probabilities.

    Args:
        members: K score tables over the same narration ids (any row order) and class counts.
        weights: K non-negative weights (normalised to sum 1).
        name: ensemble name recorded in the meta (Table 2 row label).

    Returns:
        Scores with float32 ``log p`` ``(N, V)`` / ``(N, C_n)`` in the first member's row order,
        ``meta.kind = "log_probs"``.
    """
    if not members:
        raise EnsembleError("an ensemble needs at least one member")
    w = _check_weights(weights, len(members))
    ref = members[0]
    ids = set(ref.narration_ids)
    aligned = [ref]
    for k, m in enumerate(members[1:], start=1):
        if m.verb.shape[1] != ref.verb.shape[1] or m.noun.shape[1] != ref.noun.shape[1]:
            raise ScoreFileError(
                f"member {k} has {m.verb.shape[1]} verb / {m.noun.shape[1]} noun classes, member 0 has "
                f"{ref.verb.shape[1]} / {ref.noun.shape[1]}"
            )
        other = set(m.narration_ids)
        if other != ids:
            raise ScoreFileError(
                f"member {k} covers other narration ids than member 0: {len(ids - other)} missing "
                f"(e.g. {sorted(ids - other)[:5]}), {len(other - ids)} extra (e.g. {sorted(other - ids)[:5]})"
            )
        aligned.append(m.select(ref.narration_ids))
    verb = _mean_log_prob([log_softmax(m.verb) for m in aligned], w)
    noun = _mean_log_prob([log_softmax(m.noun) for m in aligned], w)
    meta = {
        "kind": "log_probs",
        "name": name,
        "model": name,
        "method": "ensemble",
        "members": [m.meta.get("name") or m.meta.get("model") for m in members],
        "member_meta": [dict(m.meta) for m in members],
        "weights": [float(x) for x in w],
        # Training-label SLS level 4 applies to the ensemble when any member used hand-object boxes.
        "uses_hand_object_boxes": any(bool(m.meta.get("uses_hand_object_boxes", False)) for m in members),
    }
    return Scores(ref.narration_ids, verb.astype(np.float32), noun.astype(np.float32), meta)


@dataclasses.dataclass(frozen=True)
class EnsembleJobConfig:
    """The config sections ``python -m m3em.ensemble`` reads."""

    ensemble: EnsembleConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.ensemble", description="Weighted mean of models' softmax probabilities.")
    p.add_argument("--config", type=Path, required=True, help="config.yaml (ensemble.combinations)")
    p.add_argument("--scores", type=Path, nargs="+", required=True, help="member score files (.npz), in member order")
    p.add_argument("--out", type=Path, required=True, help="output score file (.npz, log-probabilities)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--combination", default=None, help="name of an ensemble.combinations entry: its weights")
    group.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per score file")
    p.add_argument("--name", default=None, help="ensemble name for the meta (default: the combination name)")
    return p


def _run(args: argparse.Namespace) -> None:
    ecfg = load_job_config(args.config, EnsembleJobConfig).ensemble
    name = args.name
    if args.combination is not None:
        try:
            comb = ecfg.get(args.combination)
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: --combination: {exc}") from exc
        if len(comb.members) != len(args.scores):
            raise ConfigError(f"{args.config}: ensemble {comb.name} has members {list(comb.members)} but "
                              f"{len(args.scores)} score files were given")
        weights, name = comb.weights, name or comb.name
    elif args.weights is not None:
        weights = args.weights
    else:
        weights = [1.0] * len(args.scores)
    members = [read_scores(s) for s in args.scores]
    ens = ensemble_scores(members, weights, name=name or "+".join(s.stem for s in args.scores))
    meta = dict(ens.meta, member_files=[str(s) for s in args.scores])
    write_scores(args.out, ens.narration_ids, ens.verb, ens.noun, meta)
    log.info("wrote %s: %d segments, members %s, weights %s", args.out, len(ens), meta["members"], meta["weights"])


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.ensemble", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
