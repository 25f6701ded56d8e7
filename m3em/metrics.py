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

How sure an accuracy is: :func:`compute_hits` keeps the per-segment 0/1 correctness behind every
accuracy, :func:`bootstrap_intervals` resamples segments with replacement and returns percentile
intervals of the resampled accuracies, and :func:`chance_levels` gives what a uniform guess and the
split's most frequent classes score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Official action id: ``verb * ACTION_STRIDE + noun``.
ACTION_STRIDE = 1000
#: The official scorer's ``top_n``: verbs and nouns kept per segment, and actions ranked.
ACTION_TOP_N = 100
#: Segments ranked at once by :func:`action_rankings`: bounds its ``(rows, Vk*Nk)`` float64 joint
#: scores and their argsort to ~2**22 elements (32 MB) each, whatever the split's size.
ACTION_CHUNK_ELEMENTS = 1 << 22
#: Defaults of :func:`bootstrap_intervals`.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0


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
    keep = min(top_n, vk * nk)
    actions = np.empty((n, keep), np.int64)
    probs = np.empty((n, keep), np.float64)
    # Rows are ranked independently, so ranking them in chunks gives the same result while the
    # (rows, Vk*Nk) joint scores stay small (a 10k-segment split at once needs ~1.6 GB).
    step = max(1, ACTION_CHUNK_ELEMENTS // (vk * nk))
    for lo in range(0, n, step):
        sl = slice(lo, min(lo + step, n))
        joint = (log_pv[sl, :, None] + log_pn[sl, None, :]).reshape(-1, vk * nk)  # (rows, Vk*Nk)
        order = np.argsort(joint, axis=-1)[:, ::-1][:, :top_n]
        vi, ni = np.unravel_index(order, (vk, nk))
        rows = np.arange(sl.start, sl.stop)[:, None]
        actions[sl] = action_id(top_verbs[rows, vi], top_nouns[rows, ni])
        probs[sl] = np.exp(np.take_along_axis(joint, order, axis=1))
    return actions, probs


def topk_hits(rankings: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> np.ndarray:
    """Per-segment top-k correctness: ``any(rankings[:, :k] == label)`` for each ``k``.

    Args:
        rankings: ``(N, R)`` predicted labels by rank.
        labels: ``(N,)`` true labels.
        ks: the k values.

    Returns:
        bool ``(len(ks), N)``: ``hits[j, i]`` is whether segment ``i``'s label is in its top ``ks[j]``.
    """
    rankings = np.asarray(rankings)
    labels = np.asarray(labels)
    if rankings.ndim != 2 or labels.ndim != 1 or len(rankings) != len(labels):
        raise ValueError(f"rankings (N, R) and labels (N,) expected, got {rankings.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("need at least one segment to compute an accuracy")
    hits = rankings == labels[:, None]
    return np.stack([hits[:, :k].any(axis=1) for k in ks])


def topk_accuracy(rankings: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Official top-k accuracy: ``mean(any(rankings[:, :k] == label))`` for each ``k``.

    Args:
        rankings: ``(N, R)`` predicted labels by rank.
        labels: ``(N,)`` true labels.
        ks: the k values.

    Returns:
        Accuracy (fraction in [0, 1]) for each k.
    """
    return [float(h.mean()) for h in topk_hits(rankings, labels, ks)]


def compute_hits(
    verb_scores: np.ndarray,
    noun_scores: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    action_top_n: int = ACTION_TOP_N,
) -> dict[str, dict[int, np.ndarray]]:
    """Per-segment verb, noun and action top-k correctness of one score table (official rankings).

    Args:
        verb_scores: ``(N, V)``; noun_scores: ``(N, C_n)``.
        verb_labels, noun_labels: ``(N,)`` int class labels.
        ks: the k values (officially 1 and 5).
        action_top_n: the official scorer's ``top_n``.

    Returns:
        ``{"verb": {k: hits}, "noun": {k: hits}, "action": {k: hits}}``, each ``hits`` bool ``(N,)``;
        its mean is the official accuracy.
    """
    verb_labels = np.asarray(verb_labels, dtype=np.int64)
    noun_labels = np.asarray(noun_labels, dtype=np.int64)
    actions, _ = action_rankings(verb_scores, noun_scores, top_n=action_top_n)
    out = {
        "verb": topk_hits(class_rankings(verb_scores), verb_labels, ks),
        "noun": topk_hits(class_rankings(noun_scores), noun_labels, ks),
        "action": topk_hits(actions, action_id(verb_labels, noun_labels), ks),
    }
    return {task: dict(zip(ks, hits)) for task, hits in out.items()}


def compute_accuracies(
    verb_scores: np.ndarray,
    noun_scores: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    action_top_n: int = ACTION_TOP_N,
) -> dict[str, dict[int, float]]:
    """Verb, noun and action top-k accuracies (fractions) of one score table: the means of
    :func:`compute_hits` (same arguments), ``{"verb": {k: acc}, "noun": {k: acc}, "action": {k: acc}}``."""
    hits = compute_hits(verb_scores, noun_scores, verb_labels, noun_labels, ks, action_top_n)
    return accuracies_of(hits)


def accuracies_of(hits: Mapping[str, Mapping[int, np.ndarray]]) -> dict[str, dict[int, float]]:
    """Accuracies (fractions): the mean of each per-segment hit vector of :func:`compute_hits`."""
    return {task: {k: float(np.mean(h)) for k, h in by_k.items()} for task, by_k in hits.items()}


def bootstrap_intervals(
    hits: Mapping[str, Mapping[int, np.ndarray]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[int, tuple[float, float]]]:
    """Percentile bootstrap intervals of accuracies, resampling segments with replacement.

    One resample draws N segments with replacement; the same resamples serve every task and k
    (each resampled split is scored on all metrics). The interval is the ``(1 - confidence) / 2``
    and ``(1 + confidence) / 2`` quantiles (numpy's linear interpolation) of the resampled
    accuracies. Deterministic for a given ``seed``.

    Why it is cheap: a resample's accuracies depend only on how many drawn segments have each
    pattern of hits (one 0/1 per metric), and those counts are exactly Multinomial(N, share of
    each pattern). So the segments are grouped by pattern (at most ``2**M`` groups, far fewer in
    practice: top-1 implies top-5) and the counts drawn directly: ``O(N log N)`` once plus
    ``O(resamples * patterns)``, the same distribution as drawing N indices per resample.

    Args:
        hits: ``{task: {k: hits}}``, each bool or 0/1 ``(N,)`` with one common N (e.g. from
            :func:`compute_hits`).
        resamples: number of bootstrap resamples (>= 1).
        confidence: interval coverage in (0, 1), e.g. 0.95.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``{task: {k: (low, high)}}`` as fractions in [0, 1].
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    keys = [(task, k) for task, by_k in hits.items() for k in by_k]
    if not keys:
        raise ValueError("no hit vectors given")
    shapes = {np.shape(hits[t][k]) for t, k in keys}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1 or next(iter(shapes))[0] == 0:
        raise ValueError(f"hit vectors must be (N,) with one common N >= 1, got shapes {sorted(shapes)}")
    matrix = np.stack([np.asarray(hits[t][k]) for t, k in keys], axis=1)  # (N, M)
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError("hit vectors must hold 0/1 (or bool) values")
    n = matrix.shape[0]
    patterns, inverse = np.unique(matrix.astype(bool), axis=0, return_inverse=True)  # (P, M), (N,)
    shares = np.bincount(inverse.reshape(-1), minlength=len(patterns)) / n  # (P,)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, shares, size=resamples)  # (B, P): segments drawn per pattern
    means = counts @ patterns.astype(np.float64) / n  # (B, M)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)  # (M,) each
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for (task, k), lo_v, hi_v in zip(keys, low, high):
        out.setdefault(task, {})[k] = (float(lo_v), float(hi_v))
    return out


def chance_levels(
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    n_verbs: int,
    n_nouns: int,
    ks: Sequence[int] = (1, 5),
) -> dict[str, dict[str, dict[int, float]]]:
    """Chance top-k accuracies (fractions) on a labelled split.

    * ``uniform``: a guess that ignores the input and ranks classes at random, in expectation
      ``min(k, C) / C`` with C the number of classes; actions are the ``V * C_n`` verb-noun pairs.
    * ``majority``: always predicting the split's own k most frequent classes (actions: verb-noun
      pairs), i.e. the share of segments whose label is among them: the best any input-blind
      ranking does on this split, knowing its label counts.

    Args:
        verb_labels, noun_labels: ``(N,)`` int class labels of the split.
        n_verbs, n_nouns: the class counts the models rank (V and C_n).
        ks: the k values.

    Returns:
        ``{"uniform": {task: {k: acc}}, "majority": {task: {k: acc}}}``.
    """
    verb_labels = np.asarray(verb_labels, dtype=np.int64)
    noun_labels = np.asarray(noun_labels, dtype=np.int64)
    if verb_labels.ndim != 1 or verb_labels.shape != noun_labels.shape or len(verb_labels) == 0:
        raise ValueError(f"labels must be two (N,) arrays with N >= 1, got {verb_labels.shape} and {noun_labels.shape}")
    if n_verbs < 1 or n_nouns < 1:
        raise ValueError(f"class counts must be >= 1, got {n_verbs} verbs and {n_nouns} nouns")
    labels = {"verb": verb_labels, "noun": noun_labels, "action": action_id(verb_labels, noun_labels)}
    n_classes = {"verb": n_verbs, "noun": n_nouns, "action": n_verbs * n_nouns}
    uniform = {task: {k: min(k, c) / c for k in ks} for task, c in n_classes.items()}
    majority = {}
    for task, lab in labels.items():
        counts = np.sort(np.unique(lab, return_counts=True)[1])[::-1]
        # Ties at the k-th count do not matter: any k classes of the largest counts cover the same.
        majority[task] = {k: float(counts[:k].sum() / len(lab)) for k in ks}
    return {"uniform": uniform, "majority": majority}
