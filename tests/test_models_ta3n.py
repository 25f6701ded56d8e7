"""TA3N: GRL, TRN-m, shapes, losses, and loading a checkpoint with the released baseline's key names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from m3em.models.grl import grad_reverse
from m3em.models.ta3n import (
    TA3N,
    UNUSED_LAYERS,
    DomainBetas,
    ReferenceCheckpointError,
    attentive_entropy,
    dann_coefficient,
    load_reference_checkpoint,
)
from m3em.models.trn import relation_tuples


def released_ta3n_keys(d: int = 3072, v: int = 97, n: int = 300) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the released EPIC-100 TA3N ``ALL`` checkpoint, written out from the
    reference description (model_references.md section 1.2), independently of our module."""
    keys = {
        "fc_feature_shared_source": (512, d), "fc_feature_source": (512, 512), "fc_feature_domain": (512, 512),
        "fc_classifier_source_verb": (v, 512), "fc_classifier_source_noun": (n, 512), "fc_classifier_domain": (2, 512),
        "fc_feature_video_source": (256, 256), "fc_feature_video_source_2": (256, 256),
        "fc_feature_domain_video": (256, 256), "fc_classifier_video_verb_source": (v, 256),
        "fc_classifier_video_noun_source": (n, 256), "fc_classifier_domain_video": (2, 256),
    }
    for i, scale in enumerate((5, 4, 3, 2)):
        keys[f"TRN.fc_fusion_scales.{i}.1"] = (256, scale * 512)
    for i in range(4):
        keys[f"relation_domain_classifier_all.{i}.0"] = (256, 256)
        keys[f"relation_domain_classifier_all.{i}.2"] = (2, 256)
    out = {}
    for k, shape in keys.items():
        out[f"{k}.weight"] = shape
        out[f"{k}.bias"] = (shape[0],)
    for bn in ("bn_trn_S", "bn_trn_T"):
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{bn}.{p}"] = (256,)
        out[f"{bn}.num_batches_tracked"] = ()
    return out


def write_released_like_checkpoint(path, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in released_ta3n_keys().items():
        state[k] = torch.tensor(7) if k.endswith("num_batches_tracked") else 0.05 * torch.randn(shape, generator=g)
    torch.save({"epoch": 30, "arch": "TBN", "state_dict": {f"module.{k}": t for k, t in state.items()},
                "optimizer": {"state": {}, "param_groups": []}, "best_prec1": 0.0, "prec1": 12.5}, path)
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The EPIC TA3N test-time forward written directly from the description (eval: no dropout)."""
    def lin(name, t):
        return F.linear(t, state[f"{name}.weight"], state[f"{name}.bias"])

    frame = F.relu(lin("fc_feature_shared_source", x))  # (B, 5, 512)
    tuples = {0: [(0, 1, 2, 3, 4)], 1: [(0, 1, 2, 3), (0, 1, 3, 4), (1, 2, 3, 4)],
              2: [(0, 1, 2), (0, 2, 4), (1, 2, 4)], 3: [(0, 1), (1, 2), (2, 3)]}
    rel = []
    for s, tups in tuples.items():
        acc = 0
        for t in tups:
            acc = acc + F.relu(lin(f"TRN.fc_fusion_scales.{s}.1", F.relu(frame[:, list(t)].flatten(1))))
        rel.append(acc)
    rel = torch.stack(rel, 1)  # (B, 4, 256)
    out = []
    for i in range(4):
        d = lin(f"relation_domain_classifier_all.{i}.2", F.relu(lin(f"relation_domain_classifier_all.{i}.0", rel[:, i])))
        p = F.softmax(d, 1)
        w = 1 - (-(p * torch.log(p)).sum(1))
        out.append((w[:, None] + 1) * rel[:, i])
    video = torch.stack(out, 1).sum(1)
    return lin("fc_classifier_video_verb_source", video), lin("fc_classifier_video_noun_source", video)


def test_grl_flips_sign_and_scales_by_beta():
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_reverse(x, 0.35)
    assert torch.equal(y, x)
    g = torch.randn(4, 3)
    y.backward(g)
    torch.testing.assert_close(x.grad, -0.35 * g)


def test_trn_tuples_are_the_reference_even_subsample():
    # Tuples #0, #2, #4 of C(5,4) and #0, #4, #7 of C(5,3) / C(5,2).
    assert relation_tuples(5, 5) == [(0, 1, 2, 3, 4)]
    assert relation_tuples(5, 4) == [(0, 1, 2, 3), (0, 1, 3, 4), (1, 2, 3, 4)]
    assert relation_tuples(5, 3) == [(0, 1, 2), (0, 2, 4), (1, 2, 4)]
    assert relation_tuples(5, 2) == [(0, 1), (1, 2), (2, 3)]


def test_shapes_and_source_only_has_no_domain_terms():
    x = torch.randn(3, 5, 40)
    da = TA3N(40, 7, 9, fc_dim=32, num_bottleneck=16)(x, DomainBetas(0.75, 0.75, 0.5))
    assert da.verb.shape == (3, 7) and da.noun.shape == (3, 9) and da.feat_video.shape == (3, 16)
    assert da.domain_frame.shape == (3, 5, 2) and da.domain_relation.shape == (3, 4, 2)
    assert da.domain_video.shape == (3, 2) and da.attention.shape == (3, 4)
    assert ((da.attention >= 1 - math.log(2) - 1e-6) & (da.attention <= 1 + 1e-6)).all()
    so = TA3N(40, 7, 9, fc_dim=32, num_bottleneck=16, domain_adaptation=False)(x)
    assert so.domain_video is None and so.attention is None and so.verb.shape == (3, 7)


def test_unused_reference_layers_exist_frozen():
    m = TA3N(3072, 97, 300)
    for name in UNUSED_LAYERS:
        assert all(not p.requires_grad for p in getattr(m, name).parameters())
    assert set(m.state_dict()) == set(released_ta3n_keys())


def test_loads_released_key_names_and_matches_reference_forward(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    state = write_released_like_checkpoint(path)
    m = TA3N(3072, 97, 300)
    extra = load_reference_checkpoint(m, path)
    assert extra["epoch"] == 30 and "state_dict" not in extra
    for k, t in m.state_dict().items():
        assert torch.equal(t, state[k]), k
    m.eval()
    x = torch.randn(2, 5, 3072)
    with torch.no_grad():
        out = m(x)
        verb, noun = reference_forward(state, x)
    torch.testing.assert_close(out.verb, verb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.noun, noun, rtol=1e-4, atol=1e-5)


def test_checkpoint_of_another_architecture_names_the_key(tmp_path):
    path = tmp_path / "rgb.pth.tar"
    write_released_like_checkpoint(path)
    with pytest.raises(ReferenceCheckpointError, match=r"fc_feature_shared_source\.weight.*\(512, 3072\)"):
        load_reference_checkpoint(TA3N(1024, 97, 300), path)  # an RGB-only network
    with pytest.raises(ReferenceCheckpointError, match="checkpoint not found"):
        load_reference_checkpoint(TA3N(1024, 97, 300), tmp_path / "missing.pth.tar")


def test_dann_coefficient_reference_rate():
    assert dann_coefficient(0.0, 1.0) == 0.0
    assert dann_coefficient(1.0, 1.0) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # ~0.46
    assert dann_coefficient(1.0, 10.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)


def test_attentive_entropy_formula():
    pred = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    dom = torch.tensor([[0.0, 0.0], [5.0, -5.0]])

    def h(t):
        p = F.softmax(t, 1)
        return -(p * p.log()).sum(1)

    expected = ((1 + h(dom)) * h(pred)).mean()
    torch.testing.assert_close(attentive_entropy(pred, dom), expected)
