"""Accuracy metrics of the EPIC-KITCHENS challenges, computed as the official scorer does.

The official scorer (``epic-kitchens/C1-Action-Recognition``, used for the UDA challenge too;
reference/epic_data.md section 2.5) does:

* verb / noun: rank all classes by score (descending), top-k accuracy is
  ``mean(any(rankings[:, :k] == label))``;
* action ``= verb * 1000 + noun``: keep each segment's top-100 verb scores and top-100 noun
  scores, softmax them, rank the 100 x 100 (verb, noun) pairs by the product of the two
  probabilities and keep the first 100 as the action ranking.

The official code calls ``scipy.special.softmax`` without ``axis``, i.e. normalises over the whole
``N x 100`` array; within a segment the ranking is still by ``v_i + n_j`` because a constant
factor does not reorder. We rank by ``log p_v + log p_n`` with the softmax taken per segment in
float64: the same order, without the underflow the global softmax hits on long score files with
widely spread logits. :func:`action_rankings` returns those per-segment probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Official action id: ``verb * ACTION_STRIDE + noun``.
ACTION_STRIDE = 1000
#: The official scorer's ``top_n``: verbs and nouns kept per segment, and actions ranked.
ACTION_TOP_N = 100


def action_id(verb: np.ndarray | int, noun: np.ndarray | int) -> np.ndarray | int:
    """``verb * 1000 + noun`` (``action_id_from_verb_noun`` of the official code)."""
    return verb * ACTION_STRIDE + noun


def class_rankings(scores: np.ndarray) -> np.ndarray:
    """Class indices by descending score.

    Args:
        scores: ``(N, C)`` logits, log-probabilities or probabilities.

    Returns:
        int64 ``(N, C)``: ``rankings[i, r]`` is the class at rank ``r`` (0 = best) of segment ``i``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    # Same operation as the official ``_scores_array_to_ranks`` (ascending argsort reversed).
    return np.argsort(scores, axis=-1)[:, ::-1]


def _top(scores: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = class_rankings(scores)[:, :top_n]
    return idx, np.take_along_axis(scores, idx, axis=1)


def _log_softmax_rows(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def action_rankings(
    verb_scores: np.ndarray, noun_scores: np.ndarray, top_n: int = ACTION_TOP_N
) -> tuple[np.ndarray, np.ndarray]:
    """Rank actions as the official ``compute_action_scores`` does.

    Args:
        verb_scores: ``(N, V)`` verb scores (logits or log-probabilities give the intended
            product-of-probabilities ranking; probabilities rank by ``p_v + p_n`` exactly as the
            official scorer would rank them too).
        noun_scores: ``(N, C_n)`` noun scores.
        top_n: verbs and nouns kept per segment and actions returned (100 officially).

    Returns:
        ``(actions, probs)``: int64 ``(N, min(top_n, Vk*Nk))`` action ids ``verb*1000+noun`` by
        descending score, and float64 of the same shape, the product of the per-segment softmax
        probabilities of the kept verb and noun scores.
    """
    verb_scores = np.asarray(verb_scores)
    noun_scores = np.asarray(noun_scores)
    if verb_scores.ndim != 2 or noun_scores.ndim != 2 or len(verb_scores) != len(noun_scores):
        raise ValueError(f"verb/noun scores must be (N, V) and (N, C_n), got {verb_scores.shape} and {noun_scores.shape}")
    top_verbs, top_verb_scores = _top(verb_scores, top_n)  # (N, Vk)
    top_nouns, top_noun_scores = _top(noun_scores, top_n)  # (N, Nk)
    log_pv = _log_softmax_rows(top_verb_scores)
    log_pn = _log_softmax_rows(top_noun_scores)
    n, vk = log_pv.shape
    nk = log_pn.shape[1]
    joint = (log_pv[:, :, None] + log_pn[:, None, :]).reshape(n, vk * nk)  # (N, Vk*Nk)
    order = np.argsort(joint, axis=-1)[:, ::-1][:, :top_n]
    vi, ni = np.unravel_index(order, (vk, nk))
    rows = np.arange(n)[:, None]
    actions = action_id(top_verbs[rows, vi], top_nouns[rows, ni]).astype(np.int64)
    return actions, np.exp(np.take_along_axis(joint, order, axis=1))


def topk_accuracy(rankings: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Official top-k accuracy: ``mean(any(rankings[:, :k] == label))`` for each ``k``.

    Args:
        rankings: ``(N, R)`` predicted labels by rank.
        labels: ``(N,)`` true labels.
        ks: the k values.

    Returns:
        Accuracy (fraction in [0, 1]) for each k.
    """
    rankings = np.asarray(rankings)
    labels = np.asarray(labels)
    if rankings.ndim != 2 or labels.ndim != 1 or len(rankings) != len(labels):
        raise ValueError(f"rankings (N, R) and labels (N,) expected, got {rankings.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("need at least one segment to compute an accuracy")
    hits = rankings == labels[:, None]
    return [float(hits[:, :k].any(axis=1).mean()) for k in ks]


def compute_accuracies(
    verb_scores: np.ndarray,
    noun_scores: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    action_top_n: int = ACTION_TOP_N,
) -> dict[str, dict[int, float]]:
    """Verb, noun and action top-k accuracies (fractions) of one score table.

    Args:
        verb_scores: ``(N, V)``; noun_scores: ``(N, C_n)``.
        verb_labels, noun_labels: ``(N,)`` int class labels.
        ks: the k values (officially 1 and 5).
        action_top_n: the official scorer's ``top_n``.

    Returns:
        ``{"verb": {k: acc}, "noun": {k: acc}, "action": {k: acc}}``.
    """
    verb_labels = np.asarray(verb_labels, dtype=np.int64)
    noun_labels = np.asarray(noun_labels, dtype=np.int64)
    actions, _ = action_rankings(verb_scores, noun_scores, top_n=action_top_n)
    out = {
        "verb": topk_accuracy(class_rankings(verb_scores), verb_labels, ks),
        "noun": topk_accuracy(class_rankings(noun_scores), noun_labels, ks),
        "action": topk_accuracy(actions, action_id(verb_labels, noun_labels), ks),
    }
    return {task: dict(zip(ks, accs)) for task, accs in out.items()}
