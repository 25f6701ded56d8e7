"""I3D (Carreira & Zisserman 2017), Inception-v1 inflated to 3D, with piergiaj/pytorch-i3d key names.

Keys: ``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.running_var``,
``Mixed_5c.b3b.conv3d.weight``, ... (``Unit3D`` = ``conv3d`` without bias + ``bn`` with eps 1e-3,
momentum 0.01, ReLU; inception branches ``b0``, ``b1a``/``b1b``, ``b2a``/``b2b``, ``b3b`` after
the parameter-free max pool ``b3a``). Convolutions and max pools use TensorFlow "SAME" padding,
computed from the input size at run time (front gets the smaller half), zero-valued as in the
reference (the pools only see post-ReLU, non-negative values, so zero padding equals -inf padding).

Inputs are in [-1, 1] (``x / 255 * 2 - 1``), RGB in RGB order, flow channels ``[x, y]``, layout
``(B, C, T, H, W)``. The spatial map is ``Mixed_5c``: ``(B, 1024, ceil(T/8), ceil(H/32), ceil(W/32))``
(``1024 x T/8 x 7 x 7`` at 224). The released classifier ``logits.*`` (Kinetics-400 or Charades)
is not part of this module; :func:`load_i3d_backbone` drops it and says so. Fine-tuning adds
``fc_verb`` / ``fc_noun`` on the time- and space-averaged ``Mixed_5c``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from extractors.backbones.weights import adapt_first_conv, load_strict, strip_module_prefix

OUT_CHANNELS = 1024


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) along one axis."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    if not any(pt + ph + pw):
        return x
    return F.pad(x, (*pw, *ph, *pt))


class Unit3D(nn.Module):
    """Conv3d (SAME padding, no bias) -> BatchNorm3d(eps 1e-3, momentum 0.01) -> ReLU.

    Shapes: ``(B, C_in, T, H, W)`` -> ``(B, C_out, ceil(T/s_t), ceil(H/s_h), ceil(W/s_w))``.
    """

    def __init__(self, cin: int, cout: int, kernel: Sequence[int] = (1, 1, 1), stride: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv3d(_pad_same(x, self.kernel, self.stride))), inplace=True)


class MaxPool3dSame(nn.Module):
    """Max pool with TF SAME padding (parameter-free)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool 3x3 -> 1x1, concatenated.

    Args:
        cin: input channels.
        widths: (b0, b1a, b1b, b2a, b2b, b3b) output channels.
    """

    def __init__(self, cin: int, widths: Sequence[int]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(cin, w0)
        self.b1a = Unit3D(cin, w1a)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a = Unit3D(cin, w2a)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


#: Endpoint order of the reference (``VALID_ENDPOINTS`` up to ``Mixed_5c``).
ENDPOINTS: tuple[str, ...] = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
)


class I3D(nn.Module):
    """I3D trunk to ``Mixed_5c`` plus optional verb/noun heads.

    Args:
        in_channels: 3 (RGB) or 2 (flow x, y).
        num_verbs, num_nouns: head sizes; 0 builds the trunk only (extraction).
        dropout: before the heads (the reference's 0.5).
    """

    def __init__(self, in_channels: int = 3, num_verbs: int = 0, num_nouns: int = 0, dropout: float = 0.5) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = InceptionModule(256, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(480, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = InceptionModule(512, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = InceptionModule(512, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = InceptionModule(512, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = InceptionModule(528, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(832, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = InceptionModule(832, (384, 192, 384, 48, 128, 128))
        self.has_heads = num_verbs > 0 and num_nouns > 0
        if self.has_heads:
            self.dropout = nn.Dropout(dropout)
            self.fc_verb = nn.Linear(OUT_CHANNELS, num_verbs)
            self.fc_noun = nn.Linear(OUT_CHANNELS, num_nouns)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W)`` in [-1, 1] -> ``Mixed_5c`` ``(B, 1024, ceil(T/8), ceil(H/32), ceil(W/32))``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip classification: ``(B, C_in, T, H, W)`` -> verb ``(B, V)``, noun ``(B, C)`` logits."""
        if not self.has_heads:
            raise RuntimeError("this I3D was built without heads (num_verbs/num_nouns = 0)")
        v = self.dropout(self.spatial(x).mean(dim=(2, 3, 4)))
        return self.fc_verb(v), self.fc_noun(v)


def mixed_5c_size(clip_length: int, side: int) -> tuple[int, int]:
    """(T', h) of the ``Mixed_5c`` map for a clip of ``clip_length`` frames at ``side`` x ``side``."""
    return math.ceil(clip_length / 8), math.ceil(side / 32)


def normalise_i3d(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, H, W, C)`` -> float ``(B, C, T, H, W)`` in [-1, 1] (``x/255*2-1``)."""
    if x.ndim != 5:
        raise ValueError(f"I3D clips must be (B, T, H, W, C), got {tuple(x.shape)}")
    return x.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def load_i3d_backbone(model: I3D, sd: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load a piergiaj-format I3D state dict (``rgb_imagenet.pt``, ``flow_imagenet.pt``, ...) into the trunk.

    The released classifier ``logits.conv3d.*`` is dropped and the dropped names returned; all
    other keys must match (old files lack ``num_batches_tracked``, which is tolerated). A
    3-channel first conv loaded into a 2-channel (flow) model is averaged and replicated.
    """
    sd = strip_module_prefix(sd)
    heads = {k for k in sd if k.startswith(("fc_verb.", "fc_noun."))}
    if heads and model.has_heads:
        return load_strict(model, sd, source, drop_prefixes=("logits.",))
    sd = {k: v for k, v in sd.items() if k not in heads}
    key = "Conv3d_1a_7x7.conv3d.weight"
    if key in sd and sd[key].shape[1] == 3 and model.in_channels != 3:
        sd[key] = adapt_first_conv(sd[key], model.in_channels)
    if model.has_heads:
        # Trunk-only init of a model with heads: the heads keep their fresh initialisation.
        own_heads = {k: v for k, v in model.state_dict().items() if k.startswith(("fc_verb.", "fc_noun."))}
        sd = {**sd, **own_heads}
    return load_strict(model, sd, source, drop_prefixes=("logits.",)) + sorted(heads)


class I3DTwoStream(nn.Module):
    """RGB and flow I3D with verb/noun heads, late fusion by averaging logits (model D's backbone).

    State-dict keys: ``rgb.<piergiaj key>``, ``flow.<piergiaj key>``, ``{rgb,flow}.fc_{verb,noun}.*``.

    Args:
        num_verbs, num_nouns: head sizes.
        dropout: before each head.
    """

    def __init__(self, num_verbs: int, num_nouns: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.rgb = I3D(3, num_verbs, num_nouns, dropout)
        self.flow = I3D(2, num_verbs, num_nouns, dropout)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B*K, 3, T, H, W)``, ``(B*K, 2, T, H, W)`` in [-1, 1] -> verb ``(B, V)``, noun ``(B, C)``.

        Logits are averaged over the two streams and the K clips of each sample.
        """
        vr, nr = self.rgb(rgb)
        vf, nf = self.flow(flow)
        verb, noun = (vr + vf) / 2, (nr + nf) / 2
        return verb.view(-1, num_segments, verb.shape[-1]).mean(1), noun.view(-1, num_segments, noun.shape[-1]).mean(1)
