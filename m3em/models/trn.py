"""Multi-scale temporal relation module (TRN-m), with the parameter names of TA3N's ``TRNmodule.py``.

For ``num_frames = 5`` the scales are 5, 4, 3, 2 frames. Scale 5 uses its single 5-frame tuple; every
other scale sums the outputs of 3 tuples chosen *deterministically and evenly* from the
lexicographically ordered combinations (indices ``ceil(i * n / 3)``), exactly as the reference does.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


def relation_tuples(num_frames: int, scale: int, subsample_num: int = 3) -> list[tuple[int, ...]]:
    """The frame-index tuples TRN-m uses at one scale.

    The largest scale (``scale == num_frames``) has one tuple. Smaller scales take
    ``min(subsample_num, C(num_frames, scale))`` tuples at indices ``ceil(i * n / k)`` of
    ``itertools.combinations(range(num_frames), scale)``.
    """
    combos = list(itertools.combinations(range(num_frames), scale))
    if scale == num_frames:
        return combos[:1]
    k = min(subsample_num, len(combos))
    return [combos[int(math.ceil(i * len(combos) / k))] for i in range(k)]


class RelationModuleMultiScale(nn.Module):
    """TRN-m: one ``ReLU -> Linear(scale * d, bottleneck) -> ReLU`` per scale.

    Args:
        img_feature_dim: per-frame feature size ``d`` (512 in TA3N).
        num_bottleneck: relation feature size (256 in TA3N).
        num_frames: number of frames ``P`` (5); relations are built for this fixed count.

    Shapes:
        input ``(B, P, d)`` -> output ``(B, P - 1, bottleneck)``, one relation feature per scale,
        largest scale first.
    """

    def __init__(self, img_feature_dim: int, num_bottleneck: int, num_frames: int) -> None:
        super().__init__()
        if num_frames < 2:
            raise ValueError(f"TRN-m needs at least 2 frames, got {num_frames}")
        self.img_feature_dim = img_feature_dim
        self.num_frames = num_frames
        self.scales = list(range(num_frames, 1, -1))
        self.relations = [relation_tuples(num_frames, s) for s in self.scales]
        # The name ``fc_fusion_scales`` and the (ReLU, Linear, ReLU) layout give the keys
        # ``fc_fusion_scales.<i>.1.weight`` of the released TA3N checkpoints.
        self.fc_fusion_scales = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(s * img_feature_dim, num_bottleneck), nn.ReLU()) for s in self.scales
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, P, d)`` -> ``(B, P - 1, bottleneck)``."""
        if x.shape[1] != self.num_frames:
            raise ValueError(f"TRN-m was built for {self.num_frames} frames, got input {tuple(x.shape)}")
        outs = []
        for fc, tuples in zip(self.fc_fusion_scales, self.relations):
            acc = None
            for idx in tuples:
                y = fc(x[:, list(idx), :].reshape(x.shape[0], -1))
                acc = y if acc is None else acc + y
            outs.append(acc)
        return torch.stack(outs, dim=1)
