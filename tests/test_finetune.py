"""Tiny end-to-end fine-tuning runs (TBN and I3D) on the fixture video: outputs, resume, init, errors."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from _backbone_fixtures import _one_thread, write_config, write_dataset  # noqa: F401 (autouse fixture)

from extractors import finetune
from extractors.backbones.weights import read_checkpoint


def _files(paths):
    """The input flags the workflow gives (finetune_flags): the frame archive, the video (sound
    track) and the flow archive of every source_train video."""
    return ["--frames", str(paths["frames"]), "--video", str(paths["audio"]), "--flow", str(paths["flow"])]


@pytest.fixture(scope="module")
def tbn_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    paths = write_dataset(root)
    cfg = write_config(root, paths)
    out = root / "finetune" / "tbn" / "checkpoint.pt"
    assert finetune.main([*_files(paths), "--config", str(cfg), "--backbone", "tbn", "--out", str(out)]) == 0
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


def _error_line(capsys) -> str:
    """The one stderr line of a bad input (m3em.epic.cli.run_entry_point)."""
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("python -m extractors.finetune: error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_partial_bn_on_random_weights_is_an_error(tbn_run, tmp_path, capsys):
    _, paths, _, _ = tbn_run
    cfg = write_config(tmp_path, paths, finetune={"tbn": {"epochs": 1, "partial_bn": True}})
    rc = finetune.main([*_files(paths), "--config", str(cfg), "--backbone", "tbn", "--out", str(tmp_path / "p" / "c.pt")])
    assert rc == 1
    line = _error_line(capsys)
    assert "finetune.tbn.partial_bn" in line and "pretrained weights" in line


def test_partial_bn_freezes_all_but_first_bn(tbn_run, tmp_path):
    _, paths, _, out = tbn_run
    init = read_checkpoint(out)["state_dict"]
    cfg = write_config(tmp_path, paths, finetune={"tbn": {"epochs": 1, "partial_bn": True}})
    new = tmp_path / "p" / "c.pt"
    assert finetune.main([*_files(paths), "--config", str(cfg), "--backbone", "tbn", "--out", str(new), "--init", str(out)]) == 0
    sd = read_checkpoint(new)["state_dict"]
    # A frozen BN keeps its initial affine and statistics; the first BN of each stream trains.
    for key in ("rgb.inception_5b_1x1_bn.weight", "rgb.inception_5b_1x1_bn.running_var"):
        assert torch.equal(sd[key], init[key])
    assert not torch.equal(sd["rgb.conv1_7x7_s2_bn.weight"], init["rgb.conv1_7x7_s2_bn.weight"])


def test_random_init_is_warned(tbn_run, tmp_path, caplog):
    _, paths, _, _ = tbn_run
    cfg = write_config(tmp_path, paths, finetune={"tbn": {"epochs": 1}, "bn_recalibration_segments": 0})
    with caplog.at_level(logging.WARNING):
        assert finetune.main([*_files(paths), "--config", str(cfg), "--backbone", "tbn", "--out", str(tmp_path / "w" / "c.pt")]) == 0
    assert "RANDOM weights" in caplog.text
    assert read_checkpoint(tmp_path / "w" / "c.pt")["meta"]["bn_recalibration_segments"] == 0


def test_recalibrated_statistics_are_the_average_of_batch_statistics():
    from torch.utils.data import DataLoader

    from extractors.backbones.tbn import TBN, Modality

    torch.manual_seed(0)
    model = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 3, 4)
    batches = [{"rgb": torch.randint(0, 255, (2, 2, 64, 64, 3), dtype=torch.uint8),
                "flow": torch.randint(0, 255, (2, 2, 64, 64, 10), dtype=torch.uint8),
                "spec": torch.randn(2, 2, 64, 64), "verb": torch.zeros(2, dtype=torch.long)} for _ in range(3)]
    bn = model.rgb.inception_4a_1x1_bn
    seen = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().mean(dim=(0, 2, 3))))
    n = finetune.recalibrate_batchnorm(model, DataLoader(batches, batch_size=None), "tbn", 2, torch.device("cpu"))
    hook.remove()
    assert n == 6 and len(seen) == 3
    # momentum=None: a plain average over the batches, whatever the layer's momentum was.
    torch.testing.assert_close(bn.running_mean, torch.stack(seen).mean(0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and bn.num_batches_tracked == 3
    # Frozen layers keep their statistics.
    frozen = model.flow.inception_4a_1x1_bn
    before = frozen.running_mean.clone()
    finetune.recalibrate_batchnorm(model, DataLoader(batches, batch_size=None), "tbn", 2, torch.device("cpu"),
                                   frozen=[frozen])
    assert torch.equal(frozen.running_mean, before)


def test_extraction_mode_features_are_not_collapsed(tbn_run):
    """Regression: random weights + partial BN (or stale running statistics) made every segment's
    eval-mode feature the same vector (cosine 1.00000 between segments)."""
    from extractors.backbones.tbn import TBN, Modality

    _, _, _, out = tbn_run
    model = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 3, 4)
    model.load_state_dict(read_checkpoint(out)["state_dict"])
    model.eval()
    assert input_dependent_fraction(model) > 1e-3


def input_dependent_fraction(model) -> float:
    """|std over inputs| / |mean| of the eval-mode pooled RGB features of 8 different frames."""
    from extractors.backbones.tbn import Modality

    g = torch.Generator().manual_seed(1)
    level = torch.linspace(-1.5, 1.5, 8)[:, None, None, None]
    x = level + 0.5 * torch.randn(8, 3, 64, 64, generator=g)
    with torch.no_grad():
        f = model.spatial(Modality.RGB, x).mean(dim=(2, 3))
    return float(f.std(dim=0).norm() / f.mean(dim=0).norm())


def test_collapse_measure_detects_frozen_random_batchnorm():
    """The measure above is ~1e-4 for the collapsed network of the old default (random weights,
    every BN at its initial statistics), so the test above can fail."""
    from extractors.backbones.tbn import TBN, Modality

    torch.manual_seed(0)
    model = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 3, 4).eval()
    assert input_dependent_fraction(model) < 1e-3


def test_resume_continues_after_the_last_epoch(tbn_run, tmp_path):
    root, paths, _, out = tbn_run
    cfg = write_config(tmp_path, paths, finetune={"tbn": {"epochs": 3}})
    assert finetune.main([*_files(paths), "--config", str(cfg), "--backbone", "tbn", "--out", str(out), "--resume"]) == 0
    rows = _metrics(out.parent / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert read_checkpoint(out)["meta"]["epoch"] == 3


def test_init_from_checkpoint_and_bad_init_names_keys(tbn_run, tmp_path, capsys):
    root, paths, cfg, out = tbn_run
    ck = read_checkpoint(out)
    bad = dict(ck["state_dict"])
    del bad["flow.inception_3a_1x1.weight"]
    torch.save({"state_dict": bad}, tmp_path / "bad.pt")
    cfg1 = write_config(tmp_path, paths, finetune={"tbn": {"epochs": 1}})
    rc = finetune.main([*_files(paths), "--config", str(cfg1), "--backbone", "tbn", "--out", str(tmp_path / "x" / "c.pt"),
                        "--init", str(tmp_path / "bad.pt")])
    assert rc == 1
    assert "flow.inception_3a_1x1.weight" in _error_line(capsys)
    assert finetune.main([*_files(paths), "--config", str(cfg1), "--backbone", "tbn", "--out", str(tmp_path / "y" / "c.pt"),
                          "--init", str(out)]) == 0


def test_resume_without_state_and_missing_gpu_are_errors(tbn_run, tmp_path, capsys):
    _, paths, cfg, _ = tbn_run
    assert finetune.main([*_files(paths), "--config", str(cfg), "--backbone", "tbn", "--out", str(tmp_path / "a.pt"),
                          "--resume"]) == 1
    assert "no checkpoint to resume from" in _error_line(capsys)
    if not torch.cuda.is_available():
        cfg2 = write_config(tmp_path, paths, finetune={"device": "cuda"})
        assert finetune.main([*_files(paths), "--config", str(cfg2), "--backbone", "tbn", "--out", str(tmp_path / "b.pt")]) == 1
        assert "finetune.device: 'cuda' requested but CUDA is not available" in _error_line(capsys)


def test_missing_or_repeated_input_files_are_named(tbn_run, tmp_path, capsys):
    """The rule names every video's files; fine-tuning checks them all before building anything."""
    _, paths, cfg, _ = tbn_run
    out = tmp_path / "m" / "c.pt"
    # No flow archive for the source video.
    args = ["--config", str(cfg), "--backbone", "tbn", "--out", str(out)]
    assert finetune.main(["--frames", str(paths["frames"]), "--video", str(paths["audio"]), *args]) == 1
    assert "P01_01 (no --flow archive)" in _error_line(capsys)
    # TBN with audio reads the video's sound track: a frame archive alone is not enough.
    assert finetune.main(["--frames", str(paths["frames"]), "--flow", str(paths["flow"]), *args]) == 1
    assert "P01_01 (no --video for the sound track" in _error_line(capsys)
    # One video given twice.
    assert finetune.main([*_files(paths), "--flow", str(paths["flow"]), *args]) == 1
    assert "--flow gives video P01_01 twice" in _error_line(capsys)
    assert not out.parent.exists()


def test_i3d_finetune(tbn_run, tmp_path):
    _, paths, _, _ = tbn_run
    cfg = write_config(tmp_path, paths)
    out = tmp_path / "finetune" / "i3d" / "checkpoint.pt"
    assert finetune.main([*_files(paths), "--config", str(cfg), "--backbone", "i3d", "--out", str(out)]) == 0
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
