"""Output parity of our TBN / I3D against the reference implementations, and the expected-key lists.

    git clone https://github.com/ekazakos/temporal-binding-network /tmp/tbn     # outside the project
    git clone https://github.com/piergiaj/pytorch-i3d /tmp/i3d
    python benchmarks/parity_backbones.py --tbn-repo /tmp/tbn --i3d-repo /tmp/i3d [--write-keys]

The reference code is imported from the given checkouts at run time and never copied. Only three
run-time patches make the 2019 code import on current PyTorch/PyYAML, none touching the maths:
``yaml.load`` gets ``SafeLoader``; the ImageNet download in ``BNInception.__init__`` is skipped (its
``load_url`` returns None and the following ``load_state_dict`` is a no-op during construction);
the legacy ``SegmentConsensus`` autograd Function (fails on PyTorch >= 1.5) is replaced by the mean
it computes.

Both models get the *same* random weights (reference state dict -> our strict loaders, with a
``module.`` prefix for TBN as in the released checkpoints) and the same fp32 inputs; the table
gives the max abs difference of ``inception_5b_output`` per stream (224 / 256 audio), the pooled
1024-d vectors, the fused verb/noun logits, and I3D ``Mixed_5c`` for RGB and flow at T = 16 and 9.

``--write-keys`` (re)writes ``extractors/backbones/expected_keys/*.json`` (key -> shape of the
released TBN EPIC-100 model and piergiaj's I3D files, unprefixed) from the reference modules;
``tests/test_backbone.py`` compares our modules against them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
from pathlib import Path

import torch
import yaml

from extractors.backbones.i3d import I3D, load_i3d_backbone
from extractors.backbones.tbn import TBN, Modality, load_tbn, pool_vector
from extractors.backbones.weights import save_expected_keys

REPO = Path(__file__).resolve().parents[1]


def reference_models(tbn_repo: Path, i3d_repo: Path):
    sys.path[:0] = [str(tbn_repo), str(i3d_repo)]
    yaml.load = functools.partial(yaml.load, Loader=yaml.SafeLoader)
    import torch.utils.model_zoo as model_zoo

    model_zoo.load_url = lambda *a, **k: {}
    cwd = os.getcwd()
    os.chdir(tbn_repo)  # BNInception opens 'tf_model_zoo/bninception/bn_inception.yaml' relative to the cwd
    original_load = torch.nn.Module.load_state_dict
    try:
        torch.nn.Module.load_state_dict = lambda self, sd, strict=True: None  # the skipped ImageNet weights
        with contextlib.redirect_stdout(io.StringIO()):
            import ops.basic_ops as basic_ops
            from models import TBN as RefTBN

            basic_ops.ConsensusModule.forward = lambda self, x: x.mean(dim=self.dim, keepdim=True)
            ref_tbn = RefTBN((97, 300), 1, ["RGB", "Flow", "Spec"], base_model="BNInception", dropout=0.5)
    finally:
        torch.nn.Module.load_state_dict = original_load
        os.chdir(cwd)
    from pytorch_i3d import InceptionI3d

    return ref_tbn, InceptionI3d(400, in_channels=3), InceptionI3d(400, in_channels=2)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights and BN statistics (BN-sensible ranges) in place."""
    g = torch.Generator().manual_seed(seed)
    for k, v in model.state_dict().items():
        if not v.dtype.is_floating_point:
            continue
        if k.endswith("running_var") or (k.endswith("weight") and v.ndim == 1):
            v.copy_(torch.rand(v.shape, generator=g) * 0.5 + 0.75)
        elif k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif v.ndim >= 2:
            v.copy_(torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5)
        else:
            v.copy_(torch.randn(v.shape, generator=g) * 0.05)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tbn-repo", type=Path, required=True)
    p.add_argument("--i3d-repo", type=Path, required=True)
    p.add_argument("--write-keys", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref, ref_i3d_rgb, ref_i3d_flow = reference_models(args.tbn_repo.resolve(), args.i3d_repo.resolve())
    if args.write_keys:
        out = REPO / "extractors" / "backbones" / "expected_keys"
        save_expected_keys(out / "tbn_epic100.json", ref.state_dict())
        for name, m in (("i3d_rgb_imagenet.json", ref_i3d_rgb), ("i3d_flow_imagenet.json", ref_i3d_flow)):
            # piergiaj's files predate BatchNorm's num_batches_tracked
            save_expected_keys(out / name, {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")})
        print(f"wrote {out}/*.json")

    rows = []
    randomise(ref, 1)
    ref.eval()
    ours = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 97, 300).eval()
    load_tbn(ours, {f"module.{k}": v for k, v in ref.state_dict().items()}, "reference TBN")
    g = torch.Generator().manual_seed(2)
    x = {"RGB": torch.randn(2, 3, 224, 224, generator=g) * 50, "Flow": torch.randn(2, 10, 224, 224, generator=g) * 30,
         "Spec": torch.randn(2, 1, 256, 256, generator=g) * 3}
    mods = {"RGB": Modality.RGB, "Flow": Modality.FLOW, "Spec": Modality.SPEC}
    with torch.no_grad():
        for name, m in mods.items():
            base = getattr(ref, name.lower())
            captured: dict[str, torch.Tensor] = {}
            hook = base.global_pool.register_forward_pre_hook(
                lambda _m, inp, store=captured: store.setdefault("map", inp[0].clone()))
            ref_vec = base(x[name]).flatten(1)
            hook.remove()
            our_map = ours.spatial(m, x[name])
            rows.append((f"TBN {name} inception_5b_output {tuple(our_map.shape)}",
                         (our_map - captured["map"]).abs().max().item(), captured["map"].abs().max().item()))
            rows.append((f"TBN {name} pooled 1024-d", (pool_vector(our_map) - ref_vec).abs().max().item(),
                         ref_vec.abs().max().item()))
        ref_out = ref(dict(x))
        our_out = ours({mods[k]: v for k, v in x.items()}, num_segments=1)
        for i, name in enumerate(("verb", "noun")):
            rows.append((f"TBN fused {name} logits {tuple(our_out[i].shape)}",
                         (our_out[i] - ref_out[i]).abs().max().item(), ref_out[i].abs().max().item()))
        for cin, refm in ((3, ref_i3d_rgb), (2, ref_i3d_flow)):
            randomise(refm, 3 + cin)
            refm.eval()
            ours_i3d = I3D(cin).eval()
            load_i3d_backbone(ours_i3d, refm.state_dict(), "reference I3D")
            for t in (16, 9):
                xi = torch.rand(1, cin, t, 224, 224, generator=g) * 2 - 1
                r = xi
                for ep in refm.VALID_ENDPOINTS:
                    if ep in refm.end_points:
                        r = refm._modules[ep](r)
                o = ours_i3d.spatial(xi)
                rows.append((f"I3D {cin}-ch T={t} Mixed_5c {tuple(o.shape)}", (o - r).abs().max().item(),
                             r.abs().max().item()))
    print("| output | max abs diff | max abs value |")
    print("|---|---|---|")
    for name, d, s in rows:
        print(f"| {name} | {d:.3g} | {s:.3g} |")
    worst = max(d for _, d, _ in rows)
    print(f"\nworst max abs diff: {worst:.3g} (fp32; goal <= 1e-4)")


if __name__ == "__main__":
    main()
