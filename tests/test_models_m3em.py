"""M3EM: SMR/CMC shapes for 1-4 modalities, gradients everywhere, CMC weighting behaviour."""

from __future__ import annotations

import pytest
import torch

from m3em.models import (
    M3EM,
    ActionModel,
    BranchSpec,
    DomainBetas,
    ModalitySpec,
    compute_losses,
    consensus_weighted_pool,
)
from m3em.models.m3em import CrossModalityConsensus, SemanticMutualRefinement

ALL = [ModalitySpec("rgb", 16, True), ModalitySpec("flow", 12, True), ModalitySpec("audio", 8, False),
       ModalitySpec("object", 7, False)]
TA3N_KW = dict(fc_dim=32, num_bottleneck=16)


def make_inputs(mods, b=3, p=5, hw=3):
    return {m.name: torch.randn(b, p, m.channels, hw, hw) if m.spatial else torch.randn(b, p, m.channels) for m in mods}


def make_model(mods, *, m3em=True):
    pair = ("rgb", "flow") if {"rgb", "flow"} <= {m.name for m in mods} else None
    module = M3EM(mods, reduction=4, consensus_pair=pair, cmc_latent_channels=8, cmc_scales=2) if m3em else None
    if m3em:
        branches = [BranchSpec(m.name, (m.name,), 1.0 if m.spatial else 0.5) for m in mods]
    else:
        branches = [BranchSpec("all", tuple(m.name for m in mods), 1.0)]
    return ActionModel(mods, branches, 5, 6, num_frames=5, m3em=module, ta3n_kwargs=TA3N_KW)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_smr_and_model_shapes(n):
    mods = ALL[:n]
    maps = {m.name: torch.randn(10, m.channels, 3, 3) if m.spatial else torch.randn(10, m.channels, 1, 1) for m in mods}
    refined = SemanticMutualRefinement(mods, reduction=4)(maps)
    for m in mods:
        assert refined[m.name].shape == (10, 2 * m.channels) + maps[m.name].shape[2:]
    model = make_model(mods)
    out = model(make_inputs(mods), DomainBetas(0.75, 0.75, 0.5))
    assert out.verb.shape == (3, 5) and out.noun.shape == (3, 6)
    vecs = model.frame_vectors(make_inputs(mods))
    assert {k: tuple(v.shape) for k, v in vecs.items()} == {m.name: (3, 5, 2 * m.channels) for m in mods}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("m3em", [True, False])
def test_every_trainable_parameter_gets_a_gradient(n, m3em):
    torch.manual_seed(0)
    mods = ALL[:n]
    model = make_model(mods, m3em=m3em)
    out = model(make_inputs(mods, b=4), DomainBetas(0.75, 0.75, 0.5))
    terms = compute_losses(out, 2, torch.tensor([0, 1]), torch.tensor([2, 3]), gamma=0.003, lambda_y=1.0, lambda_d=1.0)
    terms.total.backward()
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not missing, missing


def test_late_fusion_weights():
    mods = ALL[:3]
    model = make_model(mods).eval()
    out = model(make_inputs(mods))
    weights = {"rgb": 1.0, "flow": 1.0, "audio": 0.5}
    expected = sum(weights[k] * o.verb for k, o in out.branches.items()) / 2.5
    torch.testing.assert_close(out.verb, expected)


def test_consensus_pool_zero_consensus_is_average_pooling():
    f = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(consensus_weighted_pool(f, torch.zeros(2, 4, 4)), f.mean(dim=(2, 3)))


def test_cmc_uncorrelated_noise_gives_near_uniform_weights():
    torch.manual_seed(0)
    cmc = CrossModalityConsensus(256, 256, 256, num_scales=2)
    c = cmc.consensus(torch.randn(64, 256, 7, 7), torch.randn(64, 256, 7, 7))
    assert c.shape == (64, 7, 7)
    weights = 1 + c
    weights = weights / weights.sum(dim=(1, 2), keepdim=True)
    # Uncorrelated latent vectors: cosine ~ N(0, 1/256) per position, so weights stay within a
    # few percent of uniform 1/49 and the pooled features equal plain average pooling closely.
    assert c.abs().mean() < 0.06
    assert (weights * 49 - 1).abs().max() < 0.35
    a = torch.randn(64, 256, 7, 7)
    pooled, _, _ = cmc(a, torch.randn(64, 256, 7, 7))
    rel = (pooled - a.mean(dim=(2, 3))).norm(dim=1) / a.mean(dim=(2, 3)).norm(dim=1)
    assert rel.mean() < 0.1


def test_cmc_peaks_where_the_modalities_agree():
    torch.manual_seed(1)
    cmc = CrossModalityConsensus(128, 128, 128, num_scales=2)
    with torch.no_grad():  # one shared latent space: both 1x1 convs identical
        cmc.proj_b.weight.copy_(cmc.proj_a.weight)
        cmc.proj_b.bias.copy_(cmc.proj_a.bias)
    a, b = torch.randn(8, 128, 7, 7), torch.randn(8, 128, 7, 7)
    b[:, :, 2, 5] = a[:, :, 2, 5]  # agreement at one position
    c = cmc.consensus(a, b)
    flat = c.flatten(1).argmax(dim=1)
    assert (flat == 2 * 7 + 5).all()
    assert (c[:, 2, 5] > 0.3).all()


def test_pooled_inputs_skip_cmc():
    mods = [ModalitySpec("rgb", 16, False), ModalitySpec("flow", 12, False), ModalitySpec("audio", 8, False)]
    module = M3EM(mods, reduction=4, consensus_pair=None, cmc_latent_channels=8, cmc_scales=2)
    assert module.cmc is None
    model = ActionModel(mods, [BranchSpec("rf", ("rgb", "flow"), 1.0), BranchSpec("a", ("audio",), 0.5)], 5, 6,
                        num_frames=5, m3em=module, ta3n_kwargs=TA3N_KW)
    out = model({m.name: torch.randn(2, 5, m.channels) for m in mods})
    assert out.verb.shape == (2, 5)


def test_wrong_input_shape_is_a_clear_error():
    model = make_model(ALL[:2])
    bad = make_inputs(ALL[:2])
    bad["flow"] = torch.randn(3, 5, 11, 3, 3)
    with pytest.raises(ValueError, match="modality 'flow'"):
        model(bad)


def test_m3em_fast_path_equals_pooling_the_refined_maps():
    torch.manual_seed(3)
    mods = ALL[:3]
    module = M3EM(mods, reduction=4, consensus_pair=("rgb", "flow"), cmc_latent_channels=8, cmc_scales=2).double()
    maps = {m.name: torch.randn(6, m.channels, 5, 5 if m.spatial else 1).double() if m.spatial
            else torch.randn(6, m.channels, 1, 1).double() for m in mods}
    maps["rgb"], maps["flow"] = torch.randn(6, 16, 5, 5).double(), torch.randn(6, 12, 5, 5).double()
    fast = module(maps)
    refined = module.smr(maps)  # explicit Fr = concat(F ts, F tc)
    conv = torch.nn.functional.conv2d
    za = conv(refined["rgb"], module.cmc.proj_a.weight, module.cmc.proj_a.bias).permute(0, 2, 3, 1)
    zb = conv(refined["flow"], module.cmc.proj_b.weight, module.cmc.proj_b.bias).permute(0, 2, 3, 1)
    c = module.cmc.consensus_from_latent(za, zb)
    torch.testing.assert_close(fast["rgb"], consensus_weighted_pool(refined["rgb"], c))
    torch.testing.assert_close(fast["flow"], consensus_weighted_pool(refined["flow"], c))
    torch.testing.assert_close(fast["audio"], refined["audio"].mean(dim=(2, 3)))
