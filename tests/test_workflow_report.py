"""m3em.report: tables, plots and stage costs from small synthetic run outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.atomic import atomic_write_text
from m3em.epic.scores import write_scores
from m3em.evaluate import EvaluateConfig, Evaluation, metrics_record
from m3em.report import ReportError, main, per_class_accuracy, stage_costs, training_figure, uniform_loss_y

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _metrics(path, *, model, method, name=None, verb=50.0):
    acc = {"verb": {1: verb / 100, 5: 0.9}, "noun": {1: 0.3, 5: 0.6}, "action": {1: 0.2, 5: 0.4}}
    interval = {t: {k: (a - 0.1, min(a + 0.1, 1.0)) for k, a in by_k.items()} for t, by_k in acc.items()}
    chance = {"uniform": {t: {1: 0.125, 5: 0.625} for t in acc}, "majority": {t: {1: 0.25, 5: 0.75} for t in acc}}
    ev = Evaluation(accuracy=acc, interval=interval, chance=chance, n_classes={"verb": 8, "noun": 8, "action": 64},
                    n_segments=40, config=EvaluateConfig())
    rec = metrics_record(ev, split="target_val", scores_path="x.npz", meta={}, model=model, method=method, name=name)
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


def test_training_figure_puts_each_loss_on_its_own_axis():
    import matplotlib.pyplot as plt

    epochs = np.arange(1, 6)
    da = pd.DataFrame({"epoch": epochs, "lr": 0.01, "loss": 3.0 / epochs, "loss_y": 2.0 / epochs ** 2,
                       "loss_adv": np.full(5, 2.07), "loss_ent": np.full(5, 0.05), "domain_acc": 0.5,
                       "source_verb_top1": 10.0 * epochs, "seconds": 1.0})
    fig = training_figure(da, "DA run", chance_loss_y=2.5)
    try:
        cls_ax, dom_ax, acc_ax = fig.axes
        assert [ln.get_label() for ln in cls_ax.get_lines()] == ["loss_y", "uniform prediction"]
        np.testing.assert_allclose(cls_ax.get_lines()[0].get_ydata(), 2.0 / epochs ** 2)
        assert cls_ax.get_yscale() == "log"  # loss_y spans more than a decade (2.0 -> 0.08)
        assert [ln.get_label() for ln in dom_ax.get_lines()] == ["loss", "loss_adv", "loss_ent"]
        assert dom_ax.get_yscale() == "log"  # 2.07 and 0.05 on one axis
        assert [ln.get_label() for ln in acc_ax.get_lines()] == ["domain_acc", "source_verb_top1"]
        np.testing.assert_allclose(acc_ax.get_lines()[0].get_ydata(), 50.0)  # fraction drawn in %
    finally:
        plt.close(fig)
    # Source-only: zero domain losses, total = loss_y, no domain accuracy: no domain panel, and a
    # loss_y within a decade stays on a linear axis.
    so = pd.DataFrame({"epoch": epochs, "loss": 2.2 - 0.1 * epochs, "loss_y": 2.2 - 0.1 * epochs,
                       "loss_adv": 0.0, "loss_ent": 0.0, "domain_acc": np.nan, "source_verb_top1": 10.0 * epochs})
    fig = training_figure(so, "source-only")
    try:
        (cls_ax, acc_ax) = fig.axes
        assert cls_ax.get_yscale() == "linear" and [ln.get_label() for ln in cls_ax.get_lines()] == ["loss_y"]
        assert [ln.get_label() for ln in acc_ax.get_lines()] == ["source_verb_top1"]
    finally:
        plt.close(fig)
    with pytest.raises(ReportError, match="no 'loss_y' column"):
        training_figure(so.drop(columns="loss_y"), "x")


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


def test_report_end_to_end(tmp_path, epic_slice, capsys):
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
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [2.0, 1.5, 1.0], "loss_y": [1.8, 1.2, 0.9],
                  "loss_adv": [2.1, 2.0, 2.05], "loss_ent": [0.0, 0.0, 0.0], "domain_acc": [0.5, 0.6, 0.55],
                  "target_val_verb_top1": [20.0, 30.0, 40.0], "lr": [0.1, 0.1, 0.01]}).to_csv(train_csv, index=False)
    _bench(tmp_path / "bench" / "train" / "A_m3em.tsv", 12.5, 200.0, 20.0)

    cfg = tmp_path / "config.yaml"
    with open(REPO_CONFIG, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    config["data"]["annotations_dir"] = str(epic_slice)
    cfg.write_text(yaml.safe_dump(config))

    out = tmp_path / "report.md"
    figures = tmp_path / "report"
    assert main(["--config", str(cfg), "--metrics", *map(str, metrics), "--train-metrics", str(train_csv),
                 "--class-scores", str(scores), "--class-split", "target_val", "--benchmarks", str(tmp_path / "bench"),
                 "--figures", str(figures), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Table 1: single models" in text and "Table 2: ensembles" in text
    assert "| A | Source-only | 40.00 [30.0, 50.0] |" in text and "| A | TA3N + M3EM | 55.50 [45.5, 65.5] |" in text
    assert "| A+B | 60.25 [50.2, 70.2] |" in text
    # Both tables carry their chance rows and the caption saying what they are.
    assert text.count("| *chance: uniform* | 12.50 |") == 2 and text.count("*chance: majority class*") == 2
    assert text.count("in brackets its 95 % interval (percentile bootstrap over segments: 40 segments") == 2
    # The loss table: first and last epoch's loss_y, and what a uniform prediction scores.
    ann_classes = len(ann.verbs), len(ann.nouns)
    assert f"A uniform prediction has `loss_y` = {uniform_loss_y(*ann_classes):.4f}." in text
    assert "| A_m3em | 1-3 | 1.8000 | 0.9000 | -50.0 % | 2.1000 | 2.0500 |" in text
    assert "| train | 1 | 12.5 | 20.0 | 200 | 200 |" in text
    for png in ("training_A_m3em.png", "per_class_ensemble_A+B_target_val.png"):
        assert (figures / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](report/{png})" in text

    # A training CSV without an epoch column, or without loss_y, is an error naming the file: one
    # line on stderr and exit status 1.
    capsys.readouterr()
    pd.DataFrame({"loss": [1.0]}).to_csv(train_csv, index=False)
    assert main(["--config", str(cfg), "--metrics", *map(str, metrics), "--train-metrics", str(train_csv),
                 "--benchmarks", str(tmp_path / "bench"), "--figures", str(figures), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"python -m m3em.report: error: {train_csv}: no 'epoch' column "
                                       "(have ['loss'])\n")
    pd.DataFrame({"epoch": [1], "loss": [1.0]}).to_csv(train_csv, index=False)
    assert main(["--config", str(cfg), "--metrics", *map(str, metrics), "--train-metrics", str(train_csv),
                 "--benchmarks", str(tmp_path / "bench"), "--figures", str(figures), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"python -m m3em.report: error: {train_csv}: no 'loss_y' column "
                                       "(have ['epoch', 'loss'])\n")
