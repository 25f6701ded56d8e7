"""M3EM: SMR/CMC shapes for 1-4 modalities, gradients everywhere, CMC weighting behaviour, every method."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _m3em_fixtures import tiny_config

from m3em import tables
from m3em.epic.config import ConfigError
from m3em.models import (
    M3EM,
    METHOD_LABELS,
    ActionModel,
    BranchSpec,
    DomainBetas,
    Method,
    ModalitySpec,
    build_model,
    compute_losses,
    consensus_pool_weights,
    consensus_weighted_pool,
    model_config,
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
    cmc = CrossModalityConsensus(256, 256, 256, num_scales=2, combine="mean")
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


# --- methods (m3em.methods) built from the config, CMC's options, the consensus override ---

METHODS = [m.value for m in Method]


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    """The config's model B (rgb/flow spatial, audio and object vectors) at the test fixtures' tiny sizes."""
    cfg = tiny_config(tmp_path_factory.mktemp("cfg"))
    return model_config(cfg["models"], "B")


def build(model_b, method, *, spatial=True, **changes):
    mcfg, arch = model_b
    if changes:
        mcfg = dataclasses.replace(mcfg, **changes)
    sp = {"rgb": spatial, "flow": spatial, "audio": False, "object": False}
    return build_model(mcfg, arch, Method(method), n_verbs=5, n_nouns=6, num_frames=5, dropout_i=0.5, dropout_v=0.5,
                       spatial=sp)


def inputs_b(model, b=4, hw=3):
    return make_inputs(model.modalities, b=b, hw=hw)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_shapes_and_gradients(model_b, method):
    torch.manual_seed(0)
    model = build(model_b, method)
    m = Method(method)
    assert (model.m3em is not None) == m.late_fusion
    if m.late_fusion:
        assert (model.m3em.smr is not None) == m.smr and (model.m3em.cmc is not None) == m.cmc
        assert list(model.branches) == ["rgb_flow", "audio", "object"]
    else:
        assert list(model.branches) == ["all"]
    out = model(inputs_b(model), DomainBetas(0.75, 0.75, 0.5))
    assert out.verb.shape == (4, 5) and out.noun.shape == (4, 6)
    width = 2 if m.late_fusion else 1
    vecs = model.frame_vectors(inputs_b(model))
    assert {k: tuple(v.shape) for k, v in vecs.items()} == {x.name: (4, 5, width * x.channels) for x in model.modalities}
    terms = compute_losses(out, 2, torch.tensor([0, 1]), torch.tensor([2, 3]), gamma=0.003, lambda_y=1.0, lambda_d=1.0)
    terms.total.backward()
    assert torch.isfinite(terms.total)
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    if m is Method.SOURCE_ONLY:  # its discriminators exist (reference layout) but get no loss
        assert missing and all("domain" in n for n in missing), missing
    else:
        assert not missing, missing


def _shapes(model, exclude=()):
    return {n: (tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()
            if not n.startswith(exclude)}


def test_ta3n_late_is_m3em_minus_smr_and_cmc(model_b):
    full = build(model_b, "m3em")
    late = build(model_b, "ta3n_late")
    assert _shapes(late) == _shapes(full, exclude=("m3em.smr.", "m3em.cmc."))
    assert {n for n, _ in full.named_parameters() if n.startswith("m3em.")} == (
        {n for n, _ in full.named_parameters() if n.startswith(("m3em.smr.", "m3em.cmc."))})
    assert any(n.startswith("m3em.smr.") for n in _shapes(full)) and any(n.startswith("m3em.cmc.") for n in _shapes(full))
    assert not any(n.startswith("m3em.") for n in _shapes(late))
    # Each branch keeps its three discriminator levels.
    for name in ("rgb_flow", "audio", "object"):
        assert any(n.startswith(f"branches.{name}.relation_domain_classifier_all") for n in _shapes(late))
        assert f"branches.{name}.fc_classifier_domain_video.weight" in _shapes(late)
        assert f"branches.{name}.fc_classifier_domain.weight" in _shapes(late)
    # The single-part ablations: m3em's parameters minus the other part.
    assert _shapes(build(model_b, "m3em_smr")) == _shapes(full, exclude=("m3em.cmc.",))
    assert _shapes(build(model_b, "m3em_cmc")) == _shapes(full, exclude=("m3em.smr.",))
    # ...and ta3n is a different network (one early-fusion branch).
    assert _shapes(build(model_b, "ta3n")) != _shapes(late)


def test_smr_off_duplicates_the_pooled_features(model_b):
    model = build(model_b, "ta3n_late").eval()
    x = inputs_b(model)
    vecs = model.frame_vectors(x)
    for m in model.modalities:
        pooled = x[m.name].mean(dim=(3, 4)) if x[m.name].ndim == 5 else x[m.name]
        torch.testing.assert_close(vecs[m.name], torch.cat([pooled, pooled], dim=2))


def test_m3em_cmc_needs_spatial_maps(model_b):
    with pytest.raises(ConfigError, match="m3em_cmc: CMC needs a consensus_pair"):
        build(model_b, "m3em_cmc", spatial=False)
    assert build(model_b, "m3em", spatial=False).m3em.cmc is None  # m3em skips CMC on pooled inputs


def test_consensus_pool_normalised_and_residual():
    f = torch.randn(3, 4, 2, 2)
    c = torch.tensor([[0.5, -0.5], [1.0, 0.0]]).expand(3, 2, 2)
    w = (1 + c).unsqueeze(1)
    torch.testing.assert_close(consensus_weighted_pool(f, c, "normalised"), (f * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)))
    torch.testing.assert_close(consensus_weighted_pool(f, c, "residual"), (f * w).mean(dim=(2, 3)))
    # Sum over scales: 1 + C < 0 is clamped to weight 0 (not a negative weight).
    c2 = torch.tensor([[2.0, -2.5], [-1.0, 0.0]]).expand(3, 2, 2)
    expected = (3 * f[:, :, 0, 0] + 1 * f[:, :, 1, 1]) / 4
    torch.testing.assert_close(consensus_weighted_pool(f, c2, "normalised"), expected)
    torch.testing.assert_close(consensus_pool_weights(c2)[0], torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    # Disagreement everywhere: the guarded denominator (>= 1) keeps the output finite and small.
    c3 = torch.full((3, 2, 2), -0.9, requires_grad=True)
    out = consensus_weighted_pool(f, c3, "normalised")
    torch.testing.assert_close(out, 0.1 * f.sum(dim=(2, 3)))
    out.sum().backward()
    assert torch.isfinite(c3.grad).all()
    assert torch.isfinite(consensus_weighted_pool(f, torch.full((3, 2, 2), -3.0), "normalised")).all()
    with pytest.raises(ValueError, match="cmc_pooling"):
        consensus_weighted_pool(f, c, "max")


def test_cmc_sum_is_scales_times_mean():
    torch.manual_seed(2)
    a, b = torch.randn(4, 6, 7, 7), torch.randn(4, 6, 7, 7)
    summed = CrossModalityConsensus(6, 6, 5, num_scales=2, combine="sum")
    mean = CrossModalityConsensus(6, 6, 5, num_scales=2, combine="mean")
    mean.load_state_dict(summed.state_dict())
    torch.testing.assert_close(summed.consensus(a, b), 3 * mean.consensus(a, b))
    assert summed.consensus(a, b).abs().max() <= 3.0 + 1e-5
    with pytest.raises(ValueError, match="cmc_combine"):
        CrossModalityConsensus(6, 6, 5, num_scales=2, combine="max")


@pytest.mark.parametrize("pooling", ["normalised", "residual"])
def test_config_options_reach_the_model(model_b, pooling):
    model = build(model_b, "m3em", cmc_combine="mean", cmc_pooling=pooling)
    assert model.m3em.cmc.combine == "mean" and model.m3em.cmc.pooling == pooling
    assert build(model_b, "m3em").m3em.cmc.combine == "sum"  # the default: the report's sum
    out = model(inputs_b(model))
    assert torch.isfinite(out.verb).all()


def test_consensus_override(model_b):
    torch.manual_seed(4)
    model = build(model_b, "m3em").eval()
    x = inputs_b(model, b=2, hw=3)
    n = 2 * 5
    # The override is used exactly where C would be: passing CMC's own C changes nothing.
    probe = model.probe(x)
    assert probe.consensus.shape == (n, 3, 3)
    torch.testing.assert_close(model(x, consensus_override=probe.consensus).verb, model(x).verb)
    # C = 0: the pair is average pooled (SMR's gates still apply).
    vecs = model.frame_vectors(x, torch.zeros(n, 3, 3))
    ts, tc = probe.self_gates["rgb"], probe.cross_gates["rgb"]
    f = x["rgb"].reshape(n, -1, 3, 3).mean(dim=(2, 3))
    torch.testing.assert_close(vecs["rgb"].reshape(n, -1), torch.cat([f * ts, f * tc], dim=1))
    # An oracle hard mask C = 2m - 1: only the true cell is pooled (frame 3 of clip 1 = row 8).
    mask = torch.zeros(n, 3, 3)
    mask[:, 1, 2] = 1
    vecs = model.frame_vectors(x, 2 * mask - 1)
    cell = x["rgb"][1, 3, :, 1, 2]
    torch.testing.assert_close(vecs["rgb"][1, 3], torch.cat([cell * ts[8], cell * tc[8]]))
    # No gradient reaches CMC's convs when C is replaced.
    model.train()
    out = model(x, DomainBetas(0.5, 0.5, 0.5), consensus_override=torch.zeros(n, 3, 3))
    out.verb.sum().backward()
    assert model.m3em.cmc.proj_a.weight.grad is None
    with pytest.raises(ValueError, match=r"expected shape \(N, h, w\) = \(10, 3, 3\)"):
        model(x, consensus_override=torch.zeros(2, 5, 3, 3))
    with pytest.raises(ValueError, match="no CMC"):
        build(model_b, "m3em_smr")(x, consensus_override=torch.zeros(n, 3, 3))
    with pytest.raises(ValueError, match="no M3EM"):
        build(model_b, "ta3n")(x, consensus_override=torch.zeros(n, 3, 3))


def test_method_labels_in_one_place():
    assert [m.value for m in Method] == ["source_only", "ta3n", "ta3n_late", "m3em_smr", "m3em_cmc", "m3em"]
    assert list(tables.METHODS) == [m.value for m in Method]
    assert list(tables.METHODS.values()) == [METHOD_LABELS[m] for m in Method]
    assert Method.M3EM.label == "TA3N + M3EM"
    with pytest.raises(ValueError):
        Method("ta3n_m3em")  # one spelling per method: no alias
