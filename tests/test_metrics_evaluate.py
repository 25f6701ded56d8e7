"""Evaluation CLI on the official annotation slice, and the report tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from m3em import evaluate, tables
from m3em.annotations import EpicAnnotations
from m3em.config import REPO_ROOT
from m3em.scores import ScoreFileError, read_scores, write_scores


@pytest.fixture
def cfg_path(tmp_path, epic_slice):
    cfg = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    cfg["data"]["annotations_dir"] = str(epic_slice)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _known_scores(labels, n_right_verb, n_right_noun):
    """Scores whose argmax is right for the first n rows and wrong (but 2nd) after."""
    n = len(labels)
    verb = np.zeros((n, 97), np.float32)
    noun = np.zeros((n, 300), np.float32)
    vl, nl = labels["verb_class"].to_numpy(), labels["noun_class"].to_numpy()
    for i in range(n):
        verb[i, vl[i]] = 5.0 if i < n_right_verb else 4.0
        verb[i, (vl[i] + 1) % 97] = 4.0 if i < n_right_verb else 5.0
        noun[i, nl[i]] = 5.0 if i < n_right_noun else 4.0
        noun[i, (nl[i] + 1) % 300] = 4.0 if i < n_right_noun else 5.0
    return verb, noun


def test_evaluate_cli_known_accuracies(tmp_path, cfg_path, epic_slice):
    labels = EpicAnnotations.open(epic_slice).split("target_val")
    n = len(labels)
    verb, noun = _known_scores(labels, 30, 20)
    order = np.random.default_rng(0).permutation(n)  # score rows in another order than the split
    write_scores(tmp_path / "s.npz", labels["narration_id"].to_numpy()[order], verb[order], noun[order],
                 {"model": "A", "method": "m3em"})
    out = tmp_path / "m.json"
    assert evaluate.main(["--config", str(cfg_path), "--scores", str(tmp_path / "s.npz"), "--split", "target_val",
                          "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["n_segments"] == n and rec["model"] == "A" and rec["method"] == "m3em"
    acc = rec["accuracy"]
    assert acc["verb"] == {"1": pytest.approx(100 * 30 / n), "5": 100.0}
    assert acc["noun"] == {"1": pytest.approx(100 * 20 / n), "5": 100.0}
    assert acc["action"]["1"] == pytest.approx(100 * 20 / n)  # both right only in the first 20 rows
    # top-5 action: (right, right) is within the 4 best pairs of every row.
    assert acc["action"]["5"] == 100.0


def test_evaluate_refuses_mismatched_ids(tmp_path, cfg_path, epic_slice):
    labels = EpicAnnotations.open(epic_slice).split("target_val")
    verb, noun = _known_scores(labels, 1, 1)
    ids = labels["narration_id"].tolist()
    write_scores(tmp_path / "s.npz", ids[:-1] + ["P99_999_0"], verb, noun)
    scores = read_scores(tmp_path / "s.npz")
    with pytest.raises(ScoreFileError, match=rf"1 narration id\(s\) of the split have no scores, e.g. \['{ids[-1]}'\]"):
        evaluate.evaluate_scores(scores, labels)
    with pytest.raises(Exception, match="not a labelled split"):
        evaluate.main(["--config", str(cfg_path), "--scores", str(tmp_path / "s.npz"), "--split", "target_test",
                       "--out", str(tmp_path / "m.json")])


def _rec(model, method, v1, split="target_val", name=None):
    acc = {"1": v1, "5": v1 + 10}
    return {"format": evaluate.METRICS_FORMAT, "split": split, "model": model, "method": method, "name": name,
            "accuracy": {"verb": acc, "noun": acc, "action": acc}, "top_k": [1, 5]}


def test_table1_layout_and_order(tmp_path):
    recs = [(f"{m}{k}", _rec(m, k, i)) for i, (m, k) in enumerate(
        [("B", "ta3n"), ("A", "m3em"), ("A", "source_only"), ("A", "ta3n"), ("D", "m3em"), ("A", "ta3n_late")])]
    df = tables.build_table1(recs)
    assert list(df.columns) == ["Model", "Method", "Verb top-1", "Noun top-1", "Action top-1",
                                "Verb top-5", "Noun top-5", "Action top-5"]
    assert df[["Model", "Method"]].values.tolist() == [["A", "Source-only"], ["A", "TA3N"], ["A", "TA3N late fusion"],
                                                      ["A", "TA3N + M3EM"], ["B", "TA3N"], ["D", "TA3N + M3EM"]]
    md = tables.to_markdown(df, "Table 1")
    assert "| A | TA3N + M3EM | 1.00 | 1.00 | 1.00 | 11.00 | 11.00 | 11.00 |" in md
    assert "|---|---|---:|---:|---:|---:|---:|---:|" in md  # text left, numbers right
    for metrics_file, rec in recs:
        (tmp_path / f"{metrics_file}.json").write_text(json.dumps(rec))
    assert tables.main(["--table", "1", "--metrics", *[str(tmp_path / f"{m}.json") for m, _ in recs],
                        "--out-md", str(tmp_path / "t1.md"), "--out-csv", str(tmp_path / "t1.csv")]) == 0
    assert (tmp_path / "t1.csv").read_text().splitlines()[1].startswith("A,Source-only,2.0000")
    with pytest.raises(ValueError, match="second metrics file"):
        tables.build_table1(recs + [("dup", _rec("A", "ta3n", 0))])
    with pytest.raises(ValueError, match="mix splits"):
        tables.build_table1(recs + [("x", _rec("C", "ta3n", 0, split="source_val"))])
    with pytest.raises(ValueError, match="method"):
        tables.build_table1([("x", _rec("C", "dann", 0))])
    # One spelling per method: the old run name "ta3n_m3em" is not a method.
    with pytest.raises(ValueError, match="method 'ta3n_m3em'"):
        tables.build_table1([("x", _rec("C", "ta3n_m3em", 0))])


def test_table2_ensembles():
    recs = [(n, _rec(n, "ensemble", i, name=n)) for i, n in enumerate(["A+B", "A+B+C", "A+B+C+D"])]
    df = tables.build_table2(recs)
    assert df["Ensemble"].tolist() == ["A+B", "A+B+C", "A+B+C+D"]
    assert df["Action top-5"].tolist() == [10.0, 11.0, 12.0]
