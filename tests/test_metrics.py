"""Metric parity with the official EPIC scorer, re-implemented here independently and plainly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from m3em.metrics import action_id, action_rankings, class_rankings, compute_accuracies, topk_accuracy


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
