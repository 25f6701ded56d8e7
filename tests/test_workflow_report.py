"""m3em.report: tables, plots and stage costs from small synthetic run outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from m3em.annotations import EpicAnnotations
from m3em.atomic import atomic_write_text
from m3em.evaluate import metrics_record
from m3em.report import ReportError, main, per_class_accuracy, stage_costs
from m3em.scores import write_scores

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _metrics(path, *, model, method, name=None, verb=50.0):
    acc = {"verb": {1: verb / 100, 5: 0.9}, "noun": {1: 0.3, 5: 0.6}, "action": {1: 0.2, 5: 0.4}}
    rec = metrics_record(acc, split="target_val", n_segments=40, scores_path="x.npz", meta={},
                         model=model, method=method, name=name)
    atomic_write_text(path, json.dumps(rec))
    return path


def _bench(path, seconds, rss, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t0\t{cpu}\n")


def test_per_class_accuracy_counts_each_class():
    scores = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([0, 0, 0, 2])
    acc = per_class_accuracy(scores, labels, 3)
    assert list(acc.index) == [0, 2]  # class 1 has no segment; most frequent first
    assert acc.loc[0, "support"] == 3 and acc.loc[0, "accuracy"] == pytest.approx(200 / 3)
    assert acc.loc[2, "accuracy"] == 100.0
    with pytest.raises(ReportError, match="shape"):
        per_class_accuracy(scores[:, :2], labels, 3)


def test_stage_costs_sums_time_and_takes_peak_memory(tmp_path):
    _bench(tmp_path / "flow" / "P01_01.tsv", 10.0, 100.0, 8.0)
    _bench(tmp_path / "flow" / "P01_02.tsv", 5.0, 300.0, 4.0)
    _bench(tmp_path / "features" / "tbn_rgb" / "P01_01.tsv", 2.0, 50.0, 1.0)
    costs = stage_costs(tmp_path)
    assert costs.loc["flow", "jobs"] == 2
    assert costs.loc["flow", "wall_s"] == 15.0 and costs.loc["flow", "cpu_s"] == 12.0
    assert costs.loc["flow", "peak_rss_mb"] == 300.0 and costs.loc["flow", "sum_rss_mb"] == 400.0
    assert costs.loc["features", "jobs"] == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ReportError, match="x.tsv"):
        stage_costs(tmp_path)


def test_report_end_to_end(tmp_path, epic_slice):
    ann = EpicAnnotations.open(epic_slice)
    val = ann.split("target_val")
    n = len(val)
    rng = np.random.default_rng(0)
    verb = rng.normal(size=(n, len(ann.verbs))).astype(np.float32)
    verb[np.arange(n), val["verb_class"].to_numpy()] += 10.0  # every verb right
    noun = rng.normal(size=(n, len(ann.nouns))).astype(np.float32)
    scores = tmp_path / "scores" / "ensemble_A+B" / "target_val.npz"
    write_scores(scores, val["narration_id"].tolist(), verb, noun, {"name": "A+B"})

    metrics = [
        _metrics(tmp_path / "m" / "A_source_only.json", model="A", method="source_only", verb=40.0),
        _metrics(tmp_path / "m" / "A_m3em.json", model="A", method="m3em", verb=55.5),
        _metrics(tmp_path / "m" / "ens.json", model="A+B", method="ensemble", name="A+B", verb=60.25),
    ]
    train_csv = tmp_path / "train" / "A_m3em" / "metrics.csv"
    train_csv.parent.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [2.0, 1.5, 1.0], "val_verb_top1": [20.0, 30.0, 40.0]}).to_csv(
        train_csv, index=False)
    _bench(tmp_path / "bench" / "train" / "A_m3em.tsv", 12.5, 200.0, 20.0)

    cfg = tmp_path / "config.yaml"
    with open(REPO_CONFIG, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    config["data"]["annotations_dir"] = str(epic_slice)
    cfg.write_text(yaml.safe_dump(config))

    out = tmp_path / "report.md"
    figures = tmp_path / "report"
    main(["--config", str(cfg), "--metrics", *map(str, metrics), "--train-metrics", str(train_csv),
          "--class-scores", str(scores), "--class-split", "target_val", "--benchmarks", str(tmp_path / "bench"), "--figures", str(figures),
          "--out", str(out)])
    text = out.read_text()
    assert "Table 1: single models" in text and "Table 2: ensembles" in text
    assert "| A | Source-only | 40.00" in text and "| A | TA3N + M3EM | 55.50" in text
    assert "| A+B | 60.25" in text
    assert "| train | 1 | 12.5 | 20.0 | 200 | 200 |" in text
    for png in ("training_A_m3em.png", "per_class_ensemble_A+B_target_val.png"):
        assert (figures / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](report/{png})" in text

    # A training CSV without an epoch column is an error naming the file.
    pd.DataFrame({"loss": [1.0]}).to_csv(train_csv, index=False)
    with pytest.raises(ReportError, match="metrics.csv: no 'epoch' column"):
        main(["--config", str(cfg), "--metrics", *map(str, metrics), "--train-metrics", str(train_csv),
              "--benchmarks", str(tmp_path / "bench"), "--figures", str(figures), "--out", str(out)])
