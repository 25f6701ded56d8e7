"""TBN / BN-Inception / I3D: key names and shapes of the released models, strict loading, shapes, gradients.

The expected key lists (``extractors/backbones/expected_keys/*.json``) were written from the
reference implementations' module definitions (ekazakos/temporal-binding-network
``models.TBN(num_class=(97, 300), modality=[RGB, Flow, Spec], base_model=BNInception)``, and
piergiaj/pytorch-i3d ``InceptionI3d(400, in_channels=3 / 2)``); see docs/benchmarks_backbones.md
for the regeneration step and the output parity numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backbone_fixtures import _one_thread  # noqa: F401 (autouse fixture)

from extractors.backbones.bninception import BNInception, spatial_size
from extractors.backbones.i3d import I3D, I3DTwoStream, load_i3d_backbone, normalise_i3d
from extractors.backbones.tbn import (
    TBN,
    Modality,
    load_imagenet_stream,
    load_tbn,
    load_tbn_streams,
    normalise,
    pool_vector,
)
from extractors.backbones.weights import (
    CheckpointError,
    adapt_first_conv,
    load_strict,
    read_checkpoint,
    read_expected_keys,
    shapes_of,
    state_dict_of,
)

KEYS = Path(__file__).resolve().parents[1] / "extractors" / "backbones" / "expected_keys"


@pytest.fixture(scope="module")
def tbn() -> TBN:
    torch.manual_seed(0)
    return TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 97, 300).eval()


def test_tbn_keys_and_shapes_match_released_model(tbn):
    expected = read_expected_keys(KEYS / "tbn_epic100.json")
    assert shapes_of(tbn.state_dict()) == expected
    assert expected["flow.conv1_7x7_s2.weight"] == (64, 10, 7, 7)
    assert expected["spec.conv1_7x7_s2.weight"] == (64, 1, 7, 7)
    assert expected["fusion_classification_net.fc1.weight"] == (512, 3072)


@pytest.mark.parametrize(("name", "cin"), [("i3d_rgb_imagenet.json", 3), ("i3d_flow_imagenet.json", 2)])
def test_i3d_keys_and_shapes_match_piergiaj(name, cin):
    expected = read_expected_keys(KEYS / name)
    trunk = {k: v for k, v in expected.items() if not k.startswith("logits.")}
    ours = {k: v for k, v in shapes_of(I3D(cin).state_dict()).items() if not k.endswith("num_batches_tracked")}
    assert ours == trunk
    assert expected["Conv3d_1a_7x7.conv3d.weight"] == (64, cin, 7, 7, 7)
    assert expected["Mixed_5c.b3b.conv3d.weight"] == (128, 832, 1, 1, 1)


def test_released_tbn_checkpoint_loads_strictly_with_module_prefix(tbn, tmp_path):
    sd = {f"module.{k}": torch.randn_like(v) if v.is_floating_point() else v for k, v in tbn.state_dict().items()}
    path = tmp_path / "TBN-epic-kitchens-100.pth"
    torch.save({"epoch": 80, "best_prec1": 0.0, "state_dict": sd}, path)
    fresh = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 97, 300)
    load_tbn(fresh, state_dict_of(read_checkpoint(path), str(path)), str(path))
    assert torch.equal(fresh.flow.inception_5b_pool_proj.weight, sd["module.flow.inception_5b_pool_proj.weight"])


def test_bad_checkpoint_names_every_bad_key(tbn):
    sd = dict(tbn.state_dict())
    del sd["rgb.conv1_7x7_s2.bias"]
    del sd["spec.inception_4e_3x3_bn.running_var"]
    sd["rgb.fc.weight"] = torch.zeros(1000, 1024)
    sd["flow.conv1_7x7_s2.weight"] = torch.zeros(64, 3, 7, 7)
    with pytest.raises(CheckpointError) as err:
        load_tbn(TBN(), sd, "bad.pth")
    msg = str(err.value)
    for key in ("bad.pth", "rgb.conv1_7x7_s2.bias", "spec.inception_4e_3x3_bn.running_var", "rgb.fc.weight",
                "flow.conv1_7x7_s2.weight: checkpoint [64, 3, 7, 7] vs model [64, 10, 7, 7]"):
        assert key in msg


def test_checkpoint_without_bn_counters_loads_but_nothing_else_may_be_missing():
    net = I3D(2)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_strict(I3D(2), sd, "old.pt")
    del sd["Mixed_4b.b1b.bn.weight"]
    with pytest.raises(CheckpointError, match="Mixed_4b.b1b.bn.weight"):
        load_strict(I3D(2), sd, "old.pt")


def test_tbn_streams_from_other_head_sizes(tbn):
    other = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 125, 352)  # EPIC-55 heads
    dropped = load_tbn_streams(tbn_copy := TBN(), other.state_dict(), "epic55.pth")
    assert "fusion_classification_net.fc_verb.weight" in dropped
    assert torch.equal(tbn_copy.rgb.conv2_3x3.weight, other.rgb.conv2_3x3.weight)


def test_imagenet_weights_adapt_first_conv_for_flow_and_audio():
    rgb = BNInception(3)
    sd = {k: v.clone() for k, v in rgb.state_dict().items()}
    sd["conv1_7x7_s2_bn.weight"] = sd["conv1_7x7_s2_bn.weight"][None]  # ImageNet file: leading singleton axis
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 1024), torch.zeros(1000)
    flow = BNInception(10)
    dropped = load_imagenet_stream(flow, sd, "bn_inception.pth")
    assert dropped == ["fc.bias", "fc.weight"]
    mean = rgb.conv1_7x7_s2.weight.mean(dim=1)
    for c in range(10):
        assert torch.allclose(flow.conv1_7x7_s2.weight[:, c], mean)
    spec = BNInception(1)
    load_imagenet_stream(spec, sd, "bn_inception.pth")
    assert torch.allclose(spec.conv1_7x7_s2.weight[:, 0], mean)
    assert adapt_first_conv(torch.ones(4, 3, 7, 7, 7), 2).shape == (4, 2, 7, 7, 7)


def test_i3d_loader_drops_kinetics_logits_and_adapts_rgb_conv_for_flow():
    sd = dict(I3D(3).state_dict())
    sd["logits.conv3d.weight"], sd["logits.conv3d.bias"] = torch.zeros(400, 1024, 1, 1, 1), torch.zeros(400)
    flow = I3D(2, 3, 4)
    dropped = load_i3d_backbone(flow, sd, "rgb_imagenet.pt")
    assert dropped == ["logits.conv3d.bias", "logits.conv3d.weight"]
    assert torch.allclose(flow.Conv3d_1a_7x7.conv3d.weight[:, 1], sd["Conv3d_1a_7x7.conv3d.weight"].mean(1))


@pytest.mark.parametrize(("side", "out"), [(224, 7), (256, 8), (96, 3), (128, 4), (64, 2)])
def test_bninception_spatial_sizes(side, out):
    assert spatial_size(side) == out


def test_bninception_rejects_sizes_where_reduction_branches_disagree():
    with pytest.raises(ValueError, match="112x112"):
        spatial_size(112)


def test_tbn_forward_shapes_and_consensus(tbn):
    x = {Modality.RGB: torch.randn(4, 3, 64, 64), Modality.FLOW: torch.randn(4, 10, 64, 64),
         Modality.SPEC: torch.randn(4, 1, 64, 64)}
    with torch.no_grad():
        assert tbn.spatial(Modality.RGB, x[Modality.RGB]).shape == (4, 1024, 2, 2)
        verb, noun = tbn(x, num_segments=2)
        assert verb.shape == (2, 97) and noun.shape == (2, 300)
        vecs = [pool_vector(tbn.spatial(m, x[m])) for m in tbn.modalities]
        v_snip, _ = tbn.fusion_classification_net(vecs)
        assert torch.allclose(verb, v_snip.view(2, 2, -1).mean(1), atol=1e-6)


def test_tbn_gradients_reach_every_parameter():
    torch.manual_seed(1)
    net = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 3, 4, dropout=0.0).train()
    x = {Modality.RGB: torch.randn(2, 3, 64, 64), Modality.FLOW: torch.randn(2, 10, 64, 64),
         Modality.SPEC: torch.randn(2, 1, 64, 64)}
    verb, noun = net(x, num_segments=1)
    (verb.logsumexp(1).sum() + noun.logsumexp(1).sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_i3d_shapes_and_gradients():
    torch.manual_seed(2)
    net = I3DTwoStream(3, 4, dropout=0.0).train()
    rgb = torch.rand(2, 3, 8, 64, 64) * 2 - 1
    flow = torch.rand(2, 2, 8, 64, 64) * 2 - 1
    assert net.rgb.spatial(rgb).shape == (2, 1024, 1, 2, 2)
    verb, noun = net(rgb, flow, num_segments=2)
    assert verb.shape == (1, 3) and noun.shape == (1, 4)
    (verb.sum() + noun.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


def test_i3d_same_padding_time_and_space_sizes():
    net = I3D(3).eval()
    with torch.no_grad():
        assert net.spatial(torch.zeros(1, 3, 9, 64, 96)).shape == (1, 1024, 2, 2, 3)


def test_normalisation_conventions():
    rgb = torch.tensor([[[[10, 20, 30]]]], dtype=torch.uint8)  # (1, 1, 1, 3) RGB
    out = normalise(Modality.RGB, rgb)
    assert out.flatten().tolist() == [30 - 104, 20 - 117, 10 - 128]  # BGR minus Caffe means
    flow = torch.full((1, 1, 1, 10), 128, dtype=torch.uint8)
    assert normalise(Modality.FLOW, flow).abs().sum() == 0
    spec = torch.randn(2, 64, 64)
    assert torch.equal(normalise(Modality.SPEC, spec)[:, 0], spec)  # audio unnormalised
    clip = torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1, 1, 1)
    assert normalise_i3d(clip).flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="10"):
        normalise(Modality.FLOW, torch.zeros(1, 4, 4, 2, dtype=torch.uint8))
