"""Training/prediction entry points on tiny synthetic features (CPU)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import pickle

import numpy as np
import pytest
import torch
import yaml
from _m3em_fixtures import VIDEOS, write_dataset

from m3em.checkpoint import CheckpointError, load_checkpoint
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.config import ConfigError, build_dataclass, validate_config
from m3em.epic.scores import read_scores
from m3em.predict import main as predict_main
from m3em.predict import run_prediction as _run_prediction
from m3em.runtime import DeviceError
from m3em.train import INSTRUMENT_COLUMNS, METRIC_COLUMNS, TrainingError, TrainJobConfig, main
from m3em.train import run_training as _run_training


def job(cfg: dict) -> TrainJobConfig:
    """The job config the CLI builds from ``cfg`` (validated, then the sections it reads)."""
    validate_config(cfg)
    names = [f.name for f in dataclasses.fields(TrainJobConfig)]
    return build_dataclass(TrainJobConfig, {n: cfg[n] for n in names if n in cfg}, "config")


def run_training(cfg: dict, *args, **kwargs):
    return _run_training(job(cfg), *args, **kwargs)


def run_prediction(cfg: dict, *args, **kwargs):
    return _run_prediction(job(cfg), *args, **kwargs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    cfg = write_dataset(root, per_video=5)
    return root, cfg


def states_equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_killed_and_resumed_run_ends_with_the_same_weights(tiny, tmp_path):
    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = 3
    full = run_training(cfg, "A", "m3em", tmp_path / "full", progress=False)
    stopped = run_training(cfg, "A", "m3em", tmp_path / "killed", stop_after_epoch=1, progress=False)
    assert stopped.name == "checkpoint.pt" and not (tmp_path / "killed" / "model.pt").exists()
    assert load_checkpoint(stopped)["epoch"] == 1
    with pytest.raises(TrainingError, match="--resume"):
        run_training(cfg, "A", "m3em", tmp_path / "killed", progress=False)
    resumed = run_training(cfg, "A", "m3em", tmp_path / "killed", resume=True, progress=False)
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    assert a["epoch"] == b["epoch"] == 3
    assert states_equal(a["model"], b["model"])
    with open(tmp_path / "killed" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and tuple(rows[0]) == METRIC_COLUMNS
    assert float(rows[-1]["domain_acc"]) >= 0 and rows[-1]["target_val_verb_top1"] != ""
    # Checkpoint contents: everything a resume needs, loadable without running code.
    for key in ("optimizer", "scheduler", "rng", "config", "git_revision", "architecture", "global_step"):
        assert key in a
    assert a["scheduler"]["last_epoch"] == 3


def test_deterministic_for_a_fixed_seed(tiny, tmp_path):
    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = 1
    one = run_training(cfg, "D", "ta3n", tmp_path / "one", progress=False)
    two = run_training(cfg, "D", "ta3n", tmp_path / "two", progress=False)
    assert states_equal(load_checkpoint(one)["model"], load_checkpoint(two)["model"])
    cfg["train"]["seed"] = 2
    three = run_training(cfg, "D", "ta3n", tmp_path / "three", progress=False)
    assert not states_equal(load_checkpoint(one)["model"], load_checkpoint(three)["model"])


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("method", ["m3em", "m3em_cmc", "ta3n_late", "ta3n"])
def test_m3em_instruments_in_metrics(tiny, tmp_path, method):
    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = 1
    run_training(cfg, "D", method, tmp_path / method, max_steps=1, progress=False)
    (row,) = _rows(tmp_path / method / "metrics.csv")
    assert set(INSTRUMENT_COLUMNS) <= set(row)
    values = {k: float(row[k]) for k in INSTRUMENT_COLUMNS}
    has_smr, has_cmc = method == "m3em", method in ("m3em", "m3em_cmc")
    for k, v in values.items():
        assert np.isfinite(v) == (has_smr if k.startswith("smr_") else has_cmc), (k, v)
    if has_cmc:
        assert 0 < values["cmc_weight_entropy"] <= 1 and values["cmc_c_spread"] > 0
    if has_smr:
        for k in ("smr_self_gate_mean", "smr_cross_gate_mean"):
            assert 0 < values[k] < 1
        assert values["smr_self_gate_std"] > 0


def test_predict_labelled_and_unlabelled_splits(tiny, tmp_path):
    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = 1
    ckpt = run_training(cfg, "B", "m3em", tmp_path / "run", progress=False)
    ann = EpicAnnotations.open(root / "annotations")
    for split in ("target_val", "target_test"):
        out = run_prediction(cfg, ckpt, split, tmp_path / f"{split}.npz", progress=False)
        scores = read_scores(out, n_verbs=len(ann.verbs), n_nouns=len(ann.nouns))
        assert list(scores.narration_ids) == list(ann.split(split, labelled=False)["narration_id"])
        assert scores.meta["model"] == "B" and scores.meta["method"] == "m3em"
        # B's object stream comes from hand-object boxes: the submission must declare SLS TL 4.
        assert scores.meta["uses_hand_object_boxes"] is True
    again = read_scores(run_prediction(cfg, ckpt, "target_val", tmp_path / "again.npz", progress=False))
    np.testing.assert_array_equal(again.verb, read_scores(tmp_path / "target_val.npz").verb)
    # The CLI scores several splits in one process (the workflow's one predict job per run), one
    # file per split in the order given, equal to scoring them one by one (up to float rounding:
    # the CLI runs without autograd, whose kernels round differently in the last bits).
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    outs = [tmp_path / "cli" / "tv.npz", tmp_path / "cli" / "tt.npz"]
    assert predict_main(["--config", str(cfg_path), "--checkpoint", str(ckpt), "--split", "target_val", "target_test",
                         "--out", *map(str, outs), "--no-progress"]) == 0
    for split, out in zip(("target_val", "target_test"), outs):
        np.testing.assert_allclose(read_scores(out).noun, read_scores(tmp_path / f"{split}.npz").noun, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit):  # argparse error: one --out per --split
        predict_main(["--config", str(cfg_path), "--checkpoint", str(ckpt), "--split", "target_val", "target_test",
                      "--out", str(outs[0])])


def test_checkpoint_of_another_architecture_is_refused(tiny, tmp_path):
    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = 1
    ckpt = run_training(cfg, "D", "source_only", tmp_path / "run", progress=False)
    other = copy.deepcopy(cfg)
    other["models"]["D"]["modalities"]["rgb"]["stream"] = "tbn_rgb"
    with pytest.raises(CheckpointError, match=r"model\.pt: key 'architecture\.modalities'"):
        run_prediction(other, ckpt, "target_val", tmp_path / "x.npz", progress=False)
    with pytest.raises(CheckpointError, match="not a weights-only torch checkpoint|key 'format'"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        run_prediction(cfg, tmp_path / "junk.pt", "target_val", tmp_path / "x.npz", progress=False)


def test_official_pooled_features_train_ta3n_and_m3em(tiny, tmp_path):
    root, cfg = tiny
    ann = EpicAnnotations.open(root / "annotations")
    rng = np.random.default_rng(0)
    off = tmp_path / "official"
    off.mkdir()
    for split in VIDEOS:
        ids = list(ann.split(split, labelled=False)["narration_id"])
        feats = {"RGB": rng.normal(size=(len(ids), 25, 16)).astype(np.float32),
                 "Flow": rng.normal(size=(len(ids), 25, 16)).astype(np.float32),
                 "Audio": rng.normal(size=(len(ids), 25, 8)).astype(np.float32)}
        with open(off / f"{split}.pkl", "wb") as fh:
            pickle.dump({"features": feats, "narration_ids": ids}, fh)
    cfg = copy.deepcopy(cfg)
    cfg["inputs"]["official_features_dir"] = str(off)
    cfg["train"]["epochs"] = 1
    cfg["features"]["features_dir"] = str(tmp_path / "nothing_here")
    for method in ("ta3n", "m3em"):
        ckpt = run_training(cfg, "A", method, tmp_path / method, progress=False)
        data = load_checkpoint(ckpt)
        assert data["architecture"]["map_sizes"]["rgb"] == [1, 1]
        assert data["architecture"]["consensus_pair"] == (["rgb", "flow"] if method == "m3em" else None)
        assert not any(k.startswith("m3em.cmc") for k in data["model"])  # consensus skipped
        out = run_prediction(cfg, ckpt, "target_test", tmp_path / f"{method}.npz", progress=False)
        assert len(read_scores(out)) == len(ann.split("target_test", labelled=False))
    with pytest.raises(ValueError, match="no modality for models.B.modalities.object"):
        run_training(cfg, "B", "ta3n", tmp_path / "b", progress=False)


def test_bad_requests_fail_before_training(tiny, tmp_path, capsys):
    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"]["device"] = "cuda"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="train.device.*CUDA is not available"):
            run_training(cfg, "A", "ta3n", tmp_path / "cuda", progress=False)
    cfg["train"]["device"] = "cpu"
    cfg["models"]["A"]["methods"] = ["ta3n"]
    with pytest.raises(ConfigError, match="methods"):
        run_training(cfg, "A", "m3em", tmp_path / "m", progress=False)
    with pytest.raises(ConfigError, match="no model 'Z'"):
        run_training(cfg, "Z", "ta3n", tmp_path / "z", progress=False)
    assert not (tmp_path / "m").exists()


def test_cli_reports_errors_with_exit_code(tiny, tmp_path, capsys):
    root, cfg = tiny
    import yaml

    bad = copy.deepcopy(cfg)
    bad["features"]["features_dir"] = str(tmp_path / "missing")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(bad))
    rc = main(["--config", str(path), "--model", "A", "--method", "m3em", "--out-dir", str(tmp_path / "o"),
               "--no-progress"])
    assert rc == 1
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, naming the file
    assert line.startswith("python -m m3em.train: error: ") and "feature file not found" in line
    assert str(tmp_path / "missing") in line
    # A config key that no longer exists is an error naming it (P and the directory are features:'s).
    bad = copy.deepcopy(cfg)
    bad["train"]["positions"] = 5
    path.write_text(yaml.safe_dump(bad))
    assert main(["--config", str(path), "--model", "A", "--method", "m3em", "--out-dir", str(tmp_path / "o")]) == 1
    assert "train: unknown key(s) ['positions']" in capsys.readouterr().err
    bad = copy.deepcopy(cfg)
    bad["features"]["positions"] = 1
    with pytest.raises(ConfigError, match="features.positions: TRN-m needs at least 2"):
        run_training(bad, "A", "m3em", tmp_path / "p1", progress=False)


def test_feature_statistics_are_per_channel_over_segments_positions_and_cells():
    from m3em.train import feature_statistics

    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(3, 4, 2, 2)).astype(np.float16) * np.array([1, 10, 0.1, 0])[None, :, None, None]
          for _ in range(5)]
    data = [({"rgb": x, "audio": x[:, :, 0, 0]}, 0, 0, i) for i, x in enumerate(xs)]
    stats = feature_statistics(data, max_segments=4)
    ref = np.stack(xs[:4]).astype(np.float64).transpose(2, 0, 1, 3, 4).reshape(4, -1)
    mean, std = stats["rgb"]
    np.testing.assert_allclose(mean.numpy(), ref.mean(1), rtol=1e-5, atol=1e-6)
    floor = 0.1 * ref.std(1).mean()
    np.testing.assert_allclose(std.numpy(), np.maximum(ref.std(1), floor), rtol=1e-5)
    assert std[3] > 0  # a constant channel gets the floor, not 0
    assert stats["audio"][0].shape == (4,)


def test_standardisation_statistics_travel_with_the_model(tiny, tmp_path):
    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"].update(epochs=1, standardise_features=True)
    ckpt = run_training(cfg, "A", "source_only", tmp_path / "std", progress=False)
    state = load_checkpoint(ckpt)["model"]
    assert {"standardiser.mean_rgb", "standardiser.std_audio"} <= set(state)
    assert state["standardiser.std_rgb"].min() > 0 and not torch.all(state["standardiser.mean_rgb"] == 0)
    scores = read_scores(run_prediction(cfg, ckpt, "target_val", tmp_path / "s.npz", progress=False))
    assert np.isfinite(scores.verb).all()
    # A config without standardisation describes another network: refused, not silently mis-scored.
    off = copy.deepcopy(cfg)
    off["train"]["standardise_features"] = False
    with pytest.raises(CheckpointError, match="standardise_features"):
        run_prediction(off, ckpt, "target_val", tmp_path / "t.npz", progress=False)
    plain = load_checkpoint(run_training(off, "A", "source_only", tmp_path / "raw", progress=False))["model"]
    assert not any(k.startswith("standardiser.") for k in plain)


def test_kill_between_checkpoint_and_metrics_loses_no_row(tiny, tmp_path, monkeypatch):
    """A kill after epoch 2's checkpoint, before its metrics.csv, and a resume give the uninterrupted metrics."""
    import m3em.train as train_mod

    root, cfg = tiny
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = 3
    run_training(cfg, "A", "m3em", tmp_path / "full", progress=False)
    real = train_mod.write_training_metrics

    def dies_at_epoch_2(path, rows):
        if int(rows[-1]["epoch"]) == 2:
            raise KeyboardInterrupt("killed between the checkpoint and metrics.csv")
        real(path, rows)

    monkeypatch.setattr(train_mod, "write_training_metrics", dies_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, "A", "m3em", tmp_path / "killed", progress=False)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 2
    monkeypatch.setattr(train_mod, "write_training_metrics", real)
    run_training(cfg, "A", "m3em", tmp_path / "killed", resume=True, progress=False)

    def table(run):
        with open(tmp_path / run / "metrics.csv") as fh:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]

    assert [int(r["epoch"]) for r in table("killed")] == [1, 2, 3]
    assert table("killed") == table("full")
    assert [r["epoch"] for r in load_checkpoint(tmp_path / "killed" / "model.pt")["metrics"]] == [1, 2, 3]
