"""Ensemble of softmax probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from workflow_util import REPO

from m3em import ensemble as ens_mod
from m3em.epic.scores import ScoreFileError, Scores, read_scores, softmax, write_scores
from m3em.metrics import compute_accuracies


def _scores(seed, ids=None, n=20, meta=None):
    rng = np.random.default_rng(seed)
    ids = ids or [f"v_{i}" for i in range(n)]
    return Scores(tuple(ids), rng.normal(size=(len(ids), 97)).astype(np.float32) * 2,
                  rng.normal(size=(len(ids), 300)).astype(np.float32) * 2, meta or {"model": f"M{seed}"})


def test_one_model_is_the_model():
    s = _scores(0)
    e = ens_mod.ensemble_scores([s], [3.0], name="solo")
    np.testing.assert_allclose(softmax(e.verb), softmax(s.verb), atol=1e-6)
    np.testing.assert_allclose(softmax(e.noun), softmax(s.noun), atol=1e-6)
    labels = np.arange(20) % 97, np.arange(20) % 300
    assert compute_accuracies(e.verb, e.noun, *labels) == compute_accuracies(s.verb, s.noun, *labels)
    assert e.meta["kind"] == "log_probs"
    assert np.all(e.verb <= 1e-6)


def test_weighted_mean_of_probabilities_with_row_alignment():
    a, b = _scores(0), _scores(1)
    # b in another row order: the ensemble aligns by narration id.
    perm = np.random.default_rng(2).permutation(len(b))
    b_perm = Scores(tuple(np.array(b.narration_ids)[perm]), b.verb[perm], b.noun[perm], b.meta)
    e = ens_mod.ensemble_scores([a, b_perm], [1.0, 3.0])
    expected = (softmax(a.verb) + 3 * softmax(b.verb)) / 4
    np.testing.assert_allclose(np.exp(e.verb.astype(np.float64)), expected, rtol=1e-5)
    assert e.narration_ids == a.narration_ids
    # Zero weight drops a member.
    z = ens_mod.ensemble_scores([a, b], [1.0, 0.0])
    np.testing.assert_allclose(softmax(z.noun), softmax(a.noun), atol=1e-6)


def test_extreme_logits_stay_finite():
    s = _scores(0)
    huge = Scores(s.narration_ids, s.verb * 1e4, s.noun * 1e4, s.meta)
    e = ens_mod.ensemble_scores([huge, s], [1, 1])
    assert np.isfinite(e.verb).all() and np.isfinite(e.noun).all()


def test_refusals():
    a = _scores(0)
    with pytest.raises(ScoreFileError, match="missing"):
        ens_mod.ensemble_scores([a, _scores(1, ids=[f"v_{i}" for i in range(19)] + ["zz"])], [1, 1])
    with pytest.raises(ValueError, match="weights"):
        ens_mod.ensemble_scores([a, _scores(1)], [1])
    with pytest.raises(ValueError, match="non-negative"):
        ens_mod.ensemble_scores([a, _scores(1)], [1, -1])
    short = Scores(a.narration_ids, a.verb[:, :96], a.noun, a.meta)
    with pytest.raises(ScoreFileError, match="classes"):
        ens_mod.ensemble_scores([a, short], [1, 1])


def test_cli_with_config_combination(tmp_path, capsys):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["ensemble"]["combinations"] = [{"name": "A+B", "members": ["A", "B"], "weights": [2.0, 1.0]}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    paths = []
    for seed, model in ((0, "A"), (1, "B")):
        s = _scores(seed, meta={"model": model, "uses_hand_object_boxes": model == "B"})
        paths.append(tmp_path / f"{model}.npz")
        write_scores(paths[-1], s.narration_ids, s.verb, s.noun, s.meta)
    out = tmp_path / "ens.npz"
    assert ens_mod.main(["--config", str(tmp_path / "c.yaml"), "--combination", "A+B", "--scores",
                         *map(str, paths), "--out", str(out)]) == 0
    e = read_scores(out)
    assert e.meta["name"] == "A+B" and e.meta["members"] == ["A", "B"]
    assert e.meta["weights"] == [2.0, 1.0]
    assert e.meta["uses_hand_object_boxes"] is True
    a, b = read_scores(paths[0]), read_scores(paths[1])
    np.testing.assert_allclose(np.exp(e.noun.astype(np.float64)),
                               (2 * softmax(a.noun) + softmax(b.noun)) / 3, rtol=1e-5)
    capsys.readouterr()
    assert ens_mod.main(["--config", str(tmp_path / "c.yaml"), "--combination", "A+B", "--scores",
                         str(paths[0]), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"python -m m3em.ensemble: error: {tmp_path / 'c.yaml'}: ensemble A+B has "
                                       "members ['A', 'B'] but 1 score files were given\n")
