"""Tiny end-to-end fine-tuning runs (TBN and I3D) on the fixture video: outputs, resume, init, errors."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from _backbone_fixtures import _one_thread, write_config, write_dataset  # noqa: F401 (autouse fixture)

from extractors import finetune
from extractors.backbones.weights import read_checkpoint


@pytest.fixture(scope="module")
def tbn_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    paths = write_dataset(root)
    cfg = write_config(root, paths)
    out = root / "finetune" / "tbn" / "checkpoint.pt"
    assert finetune.main(["--config", str(cfg), "--backbone", "tbn", "--out", str(out)]) == 0
    return root, paths, cfg, out


def _metrics(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tbn_finetune_writes_checkpoint_metrics_and_last(tbn_run):
    root, _, _, out = tbn_run
    ck = read_checkpoint(out)
    assert ck["meta"]["backbone"] == "tbn" and ck["meta"]["epoch"] == 2
    assert ck["meta"]["modalities"] == ["rgb", "flow", "spec"]
    assert ck["state_dict"]["fusion_classification_net.fc_verb.weight"].shape == (3, 512)
    rows = _metrics(out.parent / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[0]["lr"]) == pytest.approx(0.01) and float(rows[1]["lr"]) == pytest.approx(0.001)
    assert all(int(r["segments"]) == 4 for r in rows)
    assert (out.parent / "last.pt").exists()
    assert not list(out.parent.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_partial_bn_freezes_all_but_first_bn(tbn_run):
    _, _, _, out = tbn_run
    sd = read_checkpoint(out)["state_dict"]
    # A frozen BN affine keeps its initial value (weight 1, bias 0); the first BN of each stream trains.
    assert torch.all(sd["rgb.inception_5b_1x1_bn.weight"] == 1)
    assert not torch.all(sd["rgb.conv1_7x7_s2_bn.weight"] == 1)


def test_resume_continues_after_the_last_epoch(tbn_run, tmp_path):
    root, paths, _, out = tbn_run
    cfg = write_config(tmp_path, paths, finetune={"tbn": {"epochs": 3}})
    assert finetune.main(["--config", str(cfg), "--backbone", "tbn", "--out", str(out), "--resume"]) == 0
    rows = _metrics(out.parent / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert read_checkpoint(out)["meta"]["epoch"] == 3


def test_init_from_checkpoint_and_bad_init_names_keys(tbn_run, tmp_path, caplog):
    root, paths, cfg, out = tbn_run
    ck = read_checkpoint(out)
    bad = dict(ck["state_dict"])
    del bad["flow.inception_3a_1x1.weight"]
    torch.save({"state_dict": bad}, tmp_path / "bad.pt")
    cfg1 = write_config(tmp_path, paths, finetune={"tbn": {"epochs": 1}})
    with caplog.at_level(logging.ERROR):
        rc = finetune.main(["--config", str(cfg1), "--backbone", "tbn", "--out", str(tmp_path / "x" / "c.pt"),
                            "--init", str(tmp_path / "bad.pt")])
    assert rc == 1
    assert "flow.inception_3a_1x1.weight" in caplog.text
    assert finetune.main(["--config", str(cfg1), "--backbone", "tbn", "--out", str(tmp_path / "y" / "c.pt"),
                          "--init", str(out)]) == 0


def test_resume_without_state_and_missing_gpu_are_errors(tbn_run, tmp_path, caplog):
    _, paths, cfg, _ = tbn_run
    with caplog.at_level(logging.ERROR):
        assert finetune.main(["--config", str(cfg), "--backbone", "tbn", "--out", str(tmp_path / "a.pt"), "--resume"]) == 1
    assert "no checkpoint to resume from" in caplog.text
    if not torch.cuda.is_available():
        cfg2 = write_config(tmp_path, paths, finetune={"device": "cuda"})
        with caplog.at_level(logging.ERROR):
            assert finetune.main(["--config", str(cfg2), "--backbone", "tbn", "--out", str(tmp_path / "b.pt")]) == 1
        assert "CUDA is not available" in caplog.text


def test_i3d_finetune(tbn_run, tmp_path):
    _, paths, _, _ = tbn_run
    cfg = write_config(tmp_path, paths)
    out = tmp_path / "finetune" / "i3d" / "checkpoint.pt"
    assert finetune.main(["--config", str(cfg), "--backbone", "i3d", "--out", str(out)]) == 0
    ck = read_checkpoint(out)
    assert ck["meta"]["backbone"] == "i3d" and ck["meta"]["clip_length"] == 8
    assert ck["state_dict"]["flow.Conv3d_1a_7x7.conv3d.weight"].shape == (64, 2, 7, 7, 7)
    assert len(_metrics(out.parent / "metrics.csv")) == 1


def test_initialise_from_imagenet_kinetics_released_tbn_and_i3d_files(tmp_path):
    from extractors.backbones.bninception import BNInception
    from extractors.backbones.config import BackbonesConfig, I3DConfig, TBNConfig
    from extractors.backbones.i3d import I3D, I3DTwoStream
    from extractors.backbones.tbn import TBN, Modality

    torch.manual_seed(3)
    imagenet = {**BNInception(3).state_dict(), "fc.weight": torch.zeros(1000, 1024), "fc.bias": torch.zeros(1000)}
    kinetics = {**BNInception(3).state_dict(), "fc.weight": torch.zeros(400, 1024), "fc.bias": torch.zeros(400)}
    torch.save(imagenet, tmp_path / "bn_inception.pth")
    torch.save(kinetics, tmp_path / "TSN-kinetics-flow.pth")
    bb = BackbonesConfig(tbn=TBNConfig(imagenet_checkpoint=tmp_path / "bn_inception.pth",
                                       kinetics_flow_checkpoint=tmp_path / "TSN-kinetics-flow.pth"))
    model = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 3, 4)
    how = finetune.initialise(model, "tbn", bb, None)
    assert "ImageNet" in how and "Kinetics" in how
    assert torch.equal(model.rgb.conv2_3x3.weight, imagenet["conv2_3x3.weight"])
    assert torch.equal(model.spec.conv2_3x3.weight, imagenet["conv2_3x3.weight"])
    assert torch.equal(model.flow.conv2_3x3.weight, kinetics["conv2_3x3.weight"])  # Kinetics wins for flow
    assert torch.allclose(model.flow.conv1_7x7_s2.weight[:, 9], kinetics["conv1_7x7_s2.weight"].mean(1))

    epic55 = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 125, 352)  # released EPIC-55 model: other heads
    torch.save({"state_dict": {f"module.{k}": v for k, v in epic55.state_dict().items()}}, tmp_path / "TBN-55.pth")
    how = finetune.initialise(model, "tbn", BackbonesConfig(), tmp_path / "TBN-55.pth")
    assert "re-initialised" in how
    assert torch.equal(model.flow.conv2_3x3.weight, epic55.flow.conv2_3x3.weight)

    rgb, flow = I3D(3), I3D(2)
    torch.save({**rgb.state_dict(), "logits.conv3d.weight": torch.zeros(400, 1024, 1, 1, 1),
                "logits.conv3d.bias": torch.zeros(400)}, tmp_path / "rgb_imagenet.pt")
    torch.save(flow.state_dict(), tmp_path / "flow_imagenet.pt")
    two = I3DTwoStream(3, 4)
    bb = BackbonesConfig(i3d=I3DConfig(rgb_checkpoint=tmp_path / "rgb_imagenet.pt",
                                       flow_checkpoint=tmp_path / "flow_imagenet.pt"))
    finetune.initialise(two, "i3d", bb, None)
    assert torch.equal(two.rgb.Mixed_4b.b1b.conv3d.weight, rgb.Mixed_4b.b1b.conv3d.weight)
    assert torch.equal(two.flow.Conv3d_1a_7x7.conv3d.weight, flow.Conv3d_1a_7x7.conv3d.weight)
