"""Score files: round trip, validation, atomicity."""

from __future__ import annotations

import numpy as np
import pytest

from m3em.epic.scores import ScoreFileError, log_softmax, read_scores, softmax, write_scores


def _arrays(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [f"P01_1{i:02d}_{i}" for i in range(n)], rng.normal(size=(n, 97)), rng.normal(size=(n, 300))


def test_round_trip(tmp_path):
    ids, v, n = _arrays()
    write_scores(tmp_path / "a.npz", ids, v, n, {"model": "A", "method": "m3em", "split": "target_val"})
    s = read_scores(tmp_path / "a.npz", n_verbs=97, n_nouns=300)
    assert s.narration_ids == tuple(ids)
    np.testing.assert_allclose(s.verb, v.astype(np.float32))
    np.testing.assert_allclose(s.noun, n.astype(np.float32))
    assert s.meta["model"] == "A" and s.kind == "logits"
    sel = s.select([ids[3], ids[0]])
    np.testing.assert_array_equal(sel.verb, s.verb[[3, 0]])
    with pytest.raises(ScoreFileError, match="no scores"):
        s.select(["nope"])
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary left behind


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda ids, v, n: (ids, v[:-1], n), "rows"),
        (lambda ids, v, n: (ids[:1] * len(ids), v, n), "duplicate"),
        (lambda ids, v, n: (ids, np.where(np.eye(*v.shape, dtype=bool), np.nan, v), n), "NaN"),
        (lambda ids, v, n: (ids, v, np.full_like(n, np.inf)), "NaN or inf"),
        (lambda ids, v, n: (ids, v[:, :, None], n), "2-d"),
    ],
)
def test_write_refuses_bad_arrays(tmp_path, mutate, match):
    ids, v, n = mutate(*_arrays())
    with pytest.raises(ScoreFileError, match=match):
        write_scores(tmp_path / "a.npz", ids, v, n)
    assert not list(tmp_path.iterdir())


def test_read_checks_class_counts_and_files(tmp_path):
    ids, v, n = _arrays()
    write_scores(tmp_path / "a.npz", ids, v, n)
    with pytest.raises(ScoreFileError, match="96"):
        read_scores(tmp_path / "a.npz", n_verbs=96)
    with pytest.raises(ScoreFileError, match="not found"):
        read_scores(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ScoreFileError, match="not a readable"):
        read_scores(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", verb=v)
    with pytest.raises(ScoreFileError, match="missing array"):
        read_scores(tmp_path / "other.npz")
    with pytest.raises(ScoreFileError, match="kind"):
        write_scores(tmp_path / "k.npz", ids, v, n, {"kind": "probabilities"})


def test_log_softmax():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    ls = log_softmax(x)
    assert np.isfinite(ls).all()
    np.testing.assert_allclose(softmax(x).sum(1), 1.0)
    np.testing.assert_allclose(ls[1], np.log(np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum()))
