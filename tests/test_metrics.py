"""Metric parity with the official EPIC scorer, re-implemented here independently and plainly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from m3em import metrics
from m3em.metrics import (
    action_id,
    action_rankings,
    bootstrap_intervals,
    chance_levels,
    class_rankings,
    compute_accuracies,
    compute_hits,
    topk_accuracy,
)


def _official_like(verb, noun, verb_labels, noun_labels, top_n=100, ks=(1, 5)):
    """Straightforward transcription of C1 ``compute_action_scores`` + ``topk_accuracy``."""
    def top(scores):
        idx = np.argsort(scores)[:, ::-1][:, :top_n]
        return idx, scores[np.arange(len(scores))[:, None], idx]

    tv, tvs = top(verb)
    tn, tns = top(noun)
    pv, pn = softmax(tvs), softmax(tns)  # no axis: normalised over the whole array, as officially
    mat = pv[:, :, None] * pn[:, None, :]
    n = len(mat)
    ranks = mat.reshape(n, -1).argsort(axis=-1)[:, ::-1][:, :top_n]
    vi, ni = np.unravel_index(ranks, mat.shape[1:])
    seg = np.arange(n)[:, None]
    actions = tv[seg, vi] * 1000 + tn[seg, ni]

    def acc(rankings, labels):
        out = {}
        for k in ks:
            out[k] = float(np.mean([labels[i] in rankings[i, :k] for i in range(len(labels))]))
        return out

    return {
        "verb": acc(np.argsort(verb)[:, ::-1], verb_labels),
        "noun": acc(np.argsort(noun)[:, ::-1], noun_labels),
        "action": acc(actions, verb_labels * 1000 + noun_labels),
    }


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 3.0), (2, 0.3)])
def test_parity_with_official_scorer_on_random_scores(seed, scale):
    rng = np.random.default_rng(seed)
    n = 400
    verb = rng.normal(size=(n, 97)) * scale
    noun = rng.normal(size=(n, 300)) * scale
    vl = rng.integers(0, 97, n)
    nl = rng.integers(0, 300, n)
    # Plant the right answer near the top for a good share of rows so accuracies are not ~0.
    boost = rng.random(n) < 0.5
    verb[boost, vl[boost]] += 2.5 * max(scale, 1.0)
    noun[boost, nl[boost]] += 2.5 * max(scale, 1.0)
    ours = compute_accuracies(verb, noun, vl, nl, ks=(1, 5))
    ref = _official_like(verb, noun, vl, nl)
    assert ours == ref
    assert 0.05 < ours["action"][5] < 0.95  # the case actually exercises the action ranking


def test_action_ranking_matches_official_pairs_on_log_probs():
    rng = np.random.default_rng(3)
    verb = np.log(softmax(rng.normal(size=(50, 97)), axis=1))
    noun = np.log(softmax(rng.normal(size=(50, 300)) * 2, axis=1))
    actions, probs = action_rankings(verb, noun)
    assert actions.shape == (50, 100) and probs.shape == (50, 100)
    assert np.all(np.diff(probs, axis=1) <= 0)
    # Reference: full outer product over all classes, top 100 by v+n.
    joint = verb[:, :, None] + noun[:, None, :]
    flat = joint.reshape(50, -1)
    ref = np.argsort(flat, axis=1)[:, ::-1][:, :100]
    v, n_ = np.unravel_index(ref, (97, 300))
    np.testing.assert_array_equal(actions, v * 1000 + n_)


def test_hand_made_case():
    # 3 segments, 4 verbs, 5 nouns.
    verb = np.array([[0.1, 0.9, 0.0, 0.0],      # argmax verb 1
                     [0.5, 0.1, 0.3, 0.2],      # ranking 0, 2, 3, 1
                     [0.0, 0.0, 0.1, 0.9]])     # argmax verb 3
    noun = np.array([[0.0, 0.0, 4.0, 0.0, 0.0],  # argmax noun 2
                     [0.0, 1.0, 0.0, 0.0, 0.5],  # ranking 1, 4, ...
                     [3.0, 0.0, 0.0, 0.0, 0.0]])  # argmax noun 0
    vl = np.array([1, 3, 3])
    nl = np.array([2, 4, 1])
    acc = compute_accuracies(np.log(verb + 1e-9), noun, vl, nl, ks=(1, 2, 5))
    assert acc["verb"] == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 5: 1.0}
    # seg 1: noun 4 is 2nd; seg 2: noun 1 is tied with 2,3,4 behind 0 -> within top 5 only
    assert acc["noun"][1] == pytest.approx(1 / 3)
    assert acc["noun"][2] == pytest.approx(2 / 3)
    assert acc["noun"][5] == 1.0
    # action top-1 = verb top-1 and noun top-1 both right: only segment 0.
    assert acc["action"][1] == pytest.approx(1 / 3)


def test_action_top1_is_argmax_pair():
    rng = np.random.default_rng(5)
    verb, noun = rng.normal(size=(30, 97)), rng.normal(size=(30, 300))
    actions, _ = action_rankings(verb, noun)
    np.testing.assert_array_equal(actions[:, 0], action_id(verb.argmax(1), noun.argmax(1)))


def test_topk_accuracy_definition_and_errors():
    ranks = np.array([[3, 1, 2], [0, 2, 1]])
    assert topk_accuracy(ranks, np.array([1, 0]), ks=(1, 2)) == [0.5, 1.0]
    with pytest.raises(ValueError):
        topk_accuracy(ranks, np.array([1]))
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((0, 3), int), np.zeros(0, int))
    np.testing.assert_array_equal(class_rankings(np.array([[0.1, 0.5, 0.3]])), [[1, 2, 0]])


def test_action_ranking_in_chunks_equals_all_at_once(monkeypatch):
    rng = np.random.default_rng(7)
    verb, noun = rng.normal(size=(23, 97)), rng.normal(size=(23, 300))
    whole = action_rankings(verb, noun)
    # 3 segments per chunk (97 x 100 joint scores each): 8 chunks, the last one short.
    monkeypatch.setattr(metrics, "ACTION_CHUNK_ELEMENTS", 3 * 97 * 100)
    chunked = action_rankings(verb, noun)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])


def test_hits_are_the_accuracies_per_segment():
    rng = np.random.default_rng(8)
    verb, noun = rng.normal(size=(60, 97)), rng.normal(size=(60, 300))
    vl, nl = verb.argmax(1), rng.integers(0, 300, 60)
    vl[:20] = (vl[:20] + 1) % 97  # the first 20 verbs wrong at top-1
    hits = compute_hits(verb, noun, vl, nl)
    assert hits["verb"][1].dtype == bool and hits["verb"][1].shape == (60,)
    assert not hits["verb"][1][:20].any() and hits["verb"][1][20:].all()
    assert (hits["verb"][5] >= hits["verb"][1]).all()  # top-1 right implies top-5 right
    acc = compute_accuracies(verb, noun, vl, nl)
    assert {t: {k: float(h.mean()) for k, h in by_k.items()} for t, by_k in hits.items()} == acc


def _explicit_bootstrap(hits, resamples, seed, confidence=0.95):
    """The textbook version: draw N indices with replacement per resample, score each."""
    mat = np.stack(hits).astype(float)
    n = mat.shape[1]
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = mat[:, idx].mean(axis=2)  # (M, B)
    tail = 100 * (1 - confidence) / 2
    return np.percentile(means, [tail, 100 - tail], axis=1).T  # (M, 2)


def test_bootstrap_hand_cases():
    ones, zeros = np.ones(40, bool), np.zeros(40, bool)
    ci = bootstrap_intervals({"verb": {1: ones, 5: ones}, "noun": {1: zeros}})
    assert ci == {"verb": {1: (1.0, 1.0), 5: (1.0, 1.0)}, "noun": {1: (0.0, 0.0)}}
    # Two segments, one right: a resample scores 0, 1/2 or 1 with probability 1/4, 1/2, 1/4, so
    # the 2.5 % and 97.5 % quantiles of 1,000 resamples are 0 and 1.
    assert bootstrap_intervals({"verb": {1: np.array([1, 0])}}) == {"verb": {1: (0.0, 1.0)}}
    # A 99 % interval is at least as wide as the 95 % one from the same resamples.
    h = {"verb": {1: np.arange(50) % 3 == 0}}
    lo95, hi95 = bootstrap_intervals(h)["verb"][1]
    lo99, hi99 = bootstrap_intervals(h, confidence=0.99)["verb"][1]
    assert lo99 <= lo95 < hi95 <= hi99


def test_bootstrap_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(0)
    for n, p in ((30, 0.1), (200, 0.5), (1000, 0.9)):
        hits = {"verb": {1: rng.random(n) < p, 5: rng.random(n) < min(1.0, 2 * p)}, "action": {1: rng.random(n) < p / 2}}
        ci = bootstrap_intervals(hits, seed=3)
        for task, by_k in hits.items():
            for k, h in by_k.items():
                lo, hi = ci[task][k]
                assert 0.0 <= lo <= h.mean() <= hi <= 1.0
                assert (lo < hi) == (0 < h.mean() < 1)  # no spread only when all agree
        assert bootstrap_intervals(hits, seed=3) == ci
        assert bootstrap_intervals(hits, seed=4) != ci


def test_bootstrap_shrinks_with_more_segments_like_the_binomial():
    widths = {}
    for n in (50, 500, 5000):
        h = np.arange(n) % 5 < 2  # 40 % right
        lo, hi = bootstrap_intervals({"noun": {1: h}})["noun"][1]
        widths[n] = hi - lo
        # The normal approximation of a binomial proportion: 2 * 1.96 * sqrt(p (1 - p) / n).
        assert widths[n] == pytest.approx(2 * 1.96 * np.sqrt(0.4 * 0.6 / n), rel=0.15)
    assert widths[50] > widths[500] > widths[5000]


def test_bootstrap_matches_resampling_indices():
    # Grouping segments by hit pattern draws the same distribution as drawing indices: with many
    # resamples both give the same quantiles (up to one segment's worth, 1/N).
    rng = np.random.default_rng(1)
    n = 40
    v1 = rng.random(n) < 0.3
    v5 = v1 | (rng.random(n) < 0.4)
    a1 = v1 & (rng.random(n) < 0.5)
    ours = bootstrap_intervals({"verb": {1: v1, 5: v5}, "action": {1: a1}}, resamples=20000, seed=0)
    ref = _explicit_bootstrap([v1, v5, a1], 20000, seed=1)
    got = np.array([ours["verb"][1], ours["verb"][5], ours["action"][1]])
    np.testing.assert_allclose(got, ref, atol=1.01 / n)


def test_bootstrap_refusals():
    h = np.array([1, 0, 1], bool)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_intervals({"verb": {1: h}}, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_intervals({"verb": {1: h}}, confidence=1.0)
    with pytest.raises(ValueError, match="common N"):
        bootstrap_intervals({"verb": {1: h, 5: h[:2]}})
    with pytest.raises(ValueError, match="common N"):
        bootstrap_intervals({"verb": {1: h[:0]}})
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_intervals({"verb": {1: np.array([0.5, 1.0])}})
    with pytest.raises(ValueError, match="no hit vectors"):
        bootstrap_intervals({})


def test_chance_levels_hand_case():
    # 6 segments out of 4 verbs and 10 nouns; the most frequent classes are not the lowest ids.
    vl = np.array([0, 1, 1, 1, 2, 2])
    nl = np.array([3, 4, 4, 5, 5, 6])
    ch = chance_levels(vl, nl, 4, 10, ks=(1, 2, 5))
    assert ch["uniform"]["verb"] == {1: 0.25, 2: 0.5, 5: 1.0}  # k >= classes: always right
    assert ch["uniform"]["noun"] == {1: 0.1, 2: 0.2, 5: 0.5}
    assert ch["uniform"]["action"] == {1: 1 / 40, 2: 2 / 40, 5: 5 / 40}
    assert ch["majority"]["verb"] == {1: 3 / 6, 2: 5 / 6, 5: 1.0}
    assert ch["majority"]["noun"] == {1: 2 / 6, 2: 4 / 6, 5: 1.0}  # tied counts: any two cover 4
    # actions (1,4) x2, (0,3), (1,5), (2,5), (2,6)
    assert ch["majority"]["action"] == {1: 2 / 6, 2: 3 / 6, 5: 1.0}
    with pytest.raises(ValueError, match="labels"):
        chance_levels(vl, nl[:3], 4, 10)
    with pytest.raises(ValueError, match="class counts"):
        chance_levels(vl, nl, 0, 10)
