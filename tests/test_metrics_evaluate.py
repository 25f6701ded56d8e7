"""Evaluation CLI on the official annotation slice, and the report tables."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml
from workflow_util import REPO as REPO_ROOT

from m3em import evaluate, tables
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.scores import ScoreFileError, read_scores, write_scores


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

    # Every accuracy has its bootstrap interval: around it, [100, 100] where every segment is right.
    ci = rec["accuracy_ci"]
    assert rec["ci"] == {"method": "percentile bootstrap over segments", "confidence": 0.95, "resamples": 1000,
                         "seed": 0}
    for task in ("verb", "noun", "action"):
        assert set(ci[task]) == {"1", "5"}
        assert ci[task]["5"] == [100.0, 100.0]
        lo, hi = ci[task]["1"]
        assert 0.0 < lo < acc[task]["1"] < hi < 100.0
    # Chance levels: k / classes, and the share of the split's most frequent labels.
    assert rec["n_classes"] == {"verb": 97, "noun": 300, "action": 97 * 300}
    assert rec["chance"]["uniform"]["verb"] == {"1": pytest.approx(100 / 97, abs=1e-4),
                                                "5": pytest.approx(500 / 97, abs=1e-4)}
    assert rec["chance"]["uniform"]["action"]["1"] == pytest.approx(100 / (97 * 300), abs=1e-4)
    verb_counts = sorted(Counter(labels["verb_class"]).values(), reverse=True)
    assert rec["chance"]["majority"]["verb"] == {"1": pytest.approx(100 * verb_counts[0] / n, abs=1e-4),
                                                 "5": pytest.approx(100 * sum(verb_counts[:5]) / n, abs=1e-4)}
    # The same scores give the same file (fixed bootstrap seed).
    again = tmp_path / "m2.json"
    evaluate.main(["--config", str(cfg_path), "--scores", str(tmp_path / "s.npz"), "--split", "target_val",
                   "--out", str(again)])
    assert again.read_text() == out.read_text()
    assert evaluate.read_metrics(out)["accuracy_ci"] == ci
    # Several score files in one call (the workflow's one evaluate job per run): paired in order,
    # each output equal to its own call; unpaired counts are an argparse error.
    pair = [tmp_path / "p1.json", tmp_path / "p2.json"]
    assert evaluate.main(["--config", str(cfg_path), "--scores", str(tmp_path / "s.npz"), str(tmp_path / "s.npz"),
                          "--split", "target_val", "target_val", "--out", *map(str, pair)]) == 0
    assert [p.read_text() for p in pair] == [out.read_text()] * 2
    with pytest.raises(SystemExit):
        evaluate.main(["--config", str(cfg_path), "--scores", str(tmp_path / "s.npz"), "--split", "target_val",
                       "target_val", "--out", str(tmp_path / "x.json")])


def test_evaluate_refuses_mismatched_ids(tmp_path, cfg_path, epic_slice, capsys):
    labels = EpicAnnotations.open(epic_slice).split("target_val")
    verb, noun = _known_scores(labels, 1, 1)
    ids = labels["narration_id"].tolist()
    write_scores(tmp_path / "s.npz", ids[:-1] + ["P99_999_0"], verb, noun)
    scores = read_scores(tmp_path / "s.npz")
    with pytest.raises(ScoreFileError, match=rf"1 narration id\(s\) of the split have no scores, e.g. \['{ids[-1]}'\]"):
        evaluate.evaluate_scores(scores, labels)
    # From the command line: one line on stderr, exit status 1, no metrics file.
    assert evaluate.main(["--config", str(cfg_path), "--scores", str(tmp_path / "s.npz"), "--split", "target_test",
                          "--out", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m m3em.evaluate: error: --split target_test: not a labelled split")
    assert err.count("\n") == 1
    assert evaluate.main(["--config", str(cfg_path), "--scores", str(tmp_path / "s.npz"), "--split", "target_val",
                          "--out", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"python -m m3em.evaluate: error: {tmp_path / 's.npz'}: 1 narration id(s) of the split")
    assert err.count("\n") == 1
    assert not (tmp_path / "m.json").exists()


def _rec(model, method, v1, split="target_val", name=None):
    acc = {"1": v1, "5": v1 + 10}
    ci = {"1": [v1 - 0.5, v1 + 0.5], "5": [v1 + 9, v1 + 11]}
    chance = {"verb": {"1": 12.5, "5": 62.5}, "noun": {"1": 6.25, "5": 31.25}, "action": {"1": 0.78125, "5": 3.90625}}
    majority = {t: {"1": 20.0, "5": 70.0} for t in ("verb", "noun", "action")}
    return {"format": evaluate.METRICS_FORMAT, "split": split, "model": model, "method": method, "name": name,
            "accuracy": {"verb": acc, "noun": acc, "action": acc}, "top_k": [1, 5], "n_segments": 150,
            "accuracy_ci": {"verb": ci, "noun": ci, "action": ci},
            "ci": {"method": evaluate.CI_METHOD, "confidence": 0.95, "resamples": 1000, "seed": 0},
            "n_classes": {"verb": 8, "noun": 16, "action": 128}, "chance": {"uniform": chance, "majority": majority}}


def test_table1_layout_and_order(tmp_path):
    recs = [(f"{m}{k}", _rec(m, k, i)) for i, (m, k) in enumerate(
        [("B", "ta3n"), ("A", "m3em"), ("A", "source_only"), ("A", "ta3n"), ("D", "m3em"), ("A", "ta3n_late")])]
    df = tables.build_table1(recs)
    metric_cols = ["Verb top-1", "Noun top-1", "Action top-1", "Verb top-5", "Noun top-5", "Action top-5"]
    assert list(df.columns) == ["Model", "Method", *[c + s for c in metric_cols for s in ("", " CI low", " CI high")]]
    assert df[["Model", "Method"]].values.tolist() == [["A", "Source-only"], ["A", "TA3N"], ["A", "TA3N late fusion"],
                                                      ["A", "TA3N + M3EM"], ["B", "TA3N"], ["D", "TA3N + M3EM"]]
    md = tables.to_markdown(df, "Table 1")
    assert ("| Model | Method | Verb top-1 | Noun top-1 | Action top-1 | Verb top-5 | Noun top-5 | Action top-5 |"
            in md)
    assert ("| A | TA3N + M3EM | 1.00 [0.5, 1.5] | 1.00 [0.5, 1.5] | 1.00 [0.5, 1.5] | 11.00 [10.0, 12.0] | "
            "11.00 [10.0, 12.0] | 11.00 [10.0, 12.0] |") in md
    assert "|---|---|---:|---:|---:|---:|---:|---:|" in md  # text left, numbers right
    # Chance rows under the models, and a caption saying what the brackets and the rows are.
    assert "|  | *chance: uniform* | 12.50 | 6.25 | 0.78 | 62.50 | 31.25 | 3.91 |" in md
    assert "|  | *chance: majority class* | 20.00 | 20.00 | 20.00 | 70.00 | 70.00 | 70.00 |" in md
    assert md.index("| D | TA3N + M3EM") < md.index("*chance: uniform*")
    assert ("in brackets its 95 % interval (percentile bootstrap over segments: 150 segments, 1000 resamples, "
            "seed 0)") in md
    assert "*uniform* = k / number of classes" in md and "(8 verbs, 16 nouns, actions: k / (8 x 16)" in md
    for metrics_file, rec in recs:
        (tmp_path / f"{metrics_file}.json").write_text(json.dumps(rec))
    assert tables.main(["--table", "1", "--metrics", *[str(tmp_path / f"{m}.json") for m, _ in recs],
                        "--out-md", str(tmp_path / "t1.md"), "--out-csv", str(tmp_path / "t1.csv")]) == 0
    csv = (tmp_path / "t1.csv").read_text().splitlines()
    assert csv[0].startswith("Model,Method,Verb top-1,Verb top-1 CI low,Verb top-1 CI high,Noun top-1,")
    assert csv[1].startswith("A,Source-only,2.0000,1.5000,2.5000,2.0000")
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
    assert df["Action top-5 CI high"].tolist() == [11.0, 12.0, 13.0]
    md = tables.to_markdown(df, "Table 2")
    assert "| A+B+C | 1.00 [0.5, 1.5] |" in md
    assert "| *chance: uniform* | 12.50 | 6.25 | 0.78 | 62.50 | 31.25 | 3.91 |" in md


def test_tables_refuse_mixed_evaluations_and_old_files(tmp_path):
    a, b = _rec("A", "ta3n", 1), _rec("B", "ta3n", 2)
    b["chance"]["uniform"]["verb"]["1"] = 1.03  # evaluated against other class lists
    with pytest.raises(ValueError, match="'chance' differs"):
        tables.build_table1([("a.json", a), ("b.json", b)])
    c = _rec("C", "ta3n", 3)
    c["n_segments"] = 151
    with pytest.raises(ValueError, match="c.json: 'n_segments' differs"):
        tables.build_table1([("a.json", a), ("c.json", c)])
    # A metrics file of the format before the intervals is refused with what to do.
    old = {k: v for k, v in _rec("A", "ta3n", 1).items() if k not in ("accuracy_ci", "ci", "chance")}
    old["format"] = "m3em-metrics/1"
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="old.json.*rerun the evaluate stage"):
        evaluate.read_metrics(tmp_path / "old.json")
    no_ci = dict(_rec("A", "ta3n", 1), accuracy_ci={"verb": {"1": [0, 1]}})
    (tmp_path / "no_ci.json").write_text(json.dumps(no_ci))
    with pytest.raises(ValueError, match="no_ci.json: 'accuracy_ci' must hold an interval for every accuracy"):
        evaluate.read_metrics(tmp_path / "no_ci.json")


def test_ensemble_metrics_carry_intervals_and_chance(tmp_path, cfg_path, epic_slice):
    # Table 2 rows come from the same evaluate entry point on the ensemble's score file.
    from m3em import ensemble

    labels = EpicAnnotations.open(epic_slice).split("target_val")
    ids = labels["narration_id"].tolist()
    members = []
    for model, (nv, nn) in (("A", (30, 20)), ("B", (25, 35))):
        verb, noun = _known_scores(labels, nv, nn)
        members.append(tmp_path / f"{model}.npz")
        write_scores(members[-1], ids, verb, noun, {"model": model, "method": "m3em"})
    ens = tmp_path / "ens.npz"
    ensemble.main(["--config", str(cfg_path), "--combination", "A+B", "--scores", *map(str, members), "--out", str(ens)])
    out = tmp_path / "ens.json"
    evaluate.main(["--config", str(cfg_path), "--scores", str(ens), "--split", "target_val", "--name", "A+B",
                   "--out", str(out)])
    rec = evaluate.read_metrics(out)
    assert rec["method"] == "ensemble" and rec["name"] == "A+B"
    for task in ("verb", "noun", "action"):
        for k in ("1", "5"):
            lo, hi = rec["accuracy_ci"][task][k]
            assert lo <= rec["accuracy"][task][k] <= hi
    md = tables.to_markdown(tables.build_table2([(str(out), rec)]), "Table 2")
    v1, (lo, hi) = rec["accuracy"]["verb"]["1"], rec["accuracy_ci"]["verb"]["1"]
    assert f"| A+B | {v1:.2f} [{lo:.1f}, {hi:.1f}] |" in md and "| *chance: uniform* | 1.03 |" in md
