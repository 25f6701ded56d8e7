"""BN-Inception (Ioffe & Szegedy 2015) as converted from Caffe and used by TSN and TBN.

Layer names, biases and pooling follow the Caffe definition that TBN builds its streams from
(``bn_inception.yaml`` in ekazakos/temporal-binding-network, ``tf_model_zoo/bninception``), so
released state dicts load by name: every convolution has a bias, is followed by ``<name>_bn``
(``BatchNorm2d``, eps 1e-5, momentum 0.1) and an in-place ReLU; every pooling uses Caffe's
``ceil_mode=True``; the 3x3 average pools count padding (``count_include_pad=True``).

Modules are registered flat, under their Caffe names (``conv1_7x7_s2``, ``inception_5b_pool_proj``,
...), because those names *are* the checkpoint keys. There is no ``fc``: TBN removes it, and the
ImageNet loader drops it explicitly (:func:`extractors.backbones.tbn.load_imagenet_stream`).

Input sizes: the two reduction blocks (3c, 4e) concatenate a stride-2 convolution with a ceil-mode
stride-2 max pool; the two agree only on even inputs, so the side must be a multiple of 32 with
an even quotient at 1/16 (96, 128, 160, 224, 256 work; 112 does not). :func:`spatial_size` checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

#: Channels of ``inception_5b_output``, the spatial map and (pooled) the 1024-d feature.
OUT_CHANNELS = 1024


@dataclass(frozen=True)
class _Block:
    """One inception block: branch widths as in the Caffe prototxt (0 = branch absent)."""

    name: str
    c1x1: int  # 1x1 branch
    c3x3_reduce: int
    c3x3: int
    cd3x3_reduce: int  # double 3x3 branch
    cd3x3: int
    pool: str  # "avg", "max" (stride 1, pad 1, then pool_proj) or "max_s2" (reduction, no proj)
    pool_proj: int
    stride: int  # 2 for the reduction blocks 3c and 4e


_BLOCKS: tuple[_Block, ...] = (
    _Block("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    _Block("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    _Block("3c", 0, 128, 160, 64, 96, "max_s2", 0, 2),
    _Block("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    _Block("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    _Block("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    _Block("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    _Block("4e", 0, 128, 192, 192, 256, "max_s2", 0, 2),
    _Block("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    _Block("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


def _pool_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a ceil-mode pool (PyTorch's rule: the last window starts inside the input)."""
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def spatial_size(side: int) -> int:
    """Side of ``inception_5b_output`` for a square ``side`` x ``side`` input; error if unsupported.

    224 -> 7 (RGB/Flow), 256 -> 8 (audio spectrogram), 96 -> 3, 128 -> 4.
    """
    s = (side + 2 * 3 - 7) // 2 + 1  # conv1_7x7_s2
    s = _pool_out(s, 3, 2, 0)  # pool1_3x3_s2
    s = _pool_out(s, 3, 2, 0)  # pool2_3x3_s2
    for _ in ("3c", "4e"):
        conv = (s + 2 - 3) // 2 + 1
        pool = _pool_out(s, 3, 2, 0)
        if conv != pool:
            raise ValueError(
                f"BN-Inception cannot take a {side}x{side} input: at a reduction block the stride-2 conv "
                f"gives {conv} and the ceil-mode pool {pool}; use a multiple of 32 such as 96, 128, 224, 256"
            )
        s = conv
    return s


class BNInception(nn.Module):
    """BN-Inception trunk up to ``inception_5b_output``.

    Args:
        in_channels: 3 (RGB, BGR order), 10 (5 stacked flow x/y pairs) or 1 (log spectrogram).

    Shapes:
        ``forward``: ``(B, in_channels, H, W)`` -> ``(B, 1024, h, w)``; h = w = 7 for 224 inputs,
        8 for the 256x256 spectrogram.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self._add_conv("conv1_7x7_s2", in_channels, 64, 7, stride=2, pad=3)
        self._add_conv("conv2_3x3_reduce", 64, 64, 1)
        self._add_conv("conv2_3x3", 64, 192, 3, pad=1)
        channels = 192
        for b in _BLOCKS:
            channels = self._add_block(b, channels)
        assert channels == OUT_CHANNELS

    def _add_conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> None:
        setattr(self, name, nn.Conv2d(cin, cout, k, stride, pad, bias=True))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))

    def _add_block(self, b: _Block, cin: int) -> int:
        p = f"inception_{b.name}"
        out = 0
        if b.c1x1:
            self._add_conv(f"{p}_1x1", cin, b.c1x1, 1)
            out += b.c1x1
        self._add_conv(f"{p}_3x3_reduce", cin, b.c3x3_reduce, 1)
        self._add_conv(f"{p}_3x3", b.c3x3_reduce, b.c3x3, 3, stride=b.stride, pad=1)
        self._add_conv(f"{p}_double_3x3_reduce", cin, b.cd3x3_reduce, 1)
        self._add_conv(f"{p}_double_3x3_1", b.cd3x3_reduce, b.cd3x3, 3, pad=1)
        self._add_conv(f"{p}_double_3x3_2", b.cd3x3, b.cd3x3, 3, stride=b.stride, pad=1)
        out += b.c3x3 + b.cd3x3
        if b.pool_proj:
            self._add_conv(f"{p}_pool_proj", cin, b.pool_proj, 1)
            out += b.pool_proj
        else:
            out += cin  # the reduction block's max-pool branch passes its input channels through
        return out

    def _cbr(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """conv -> BN -> ReLU, the unit every Caffe layer of the trunk is built from."""
        x = getattr(self, name)(x)
        return F.relu(getattr(self, f"{name}_bn")(x), inplace=True)

    def _block(self, b: _Block, x: torch.Tensor) -> torch.Tensor:
        p = f"inception_{b.name}"
        branches = []
        if b.c1x1:
            branches.append(self._cbr(f"{p}_1x1", x))
        branches.append(self._cbr(f"{p}_3x3", self._cbr(f"{p}_3x3_reduce", x)))
        d = self._cbr(f"{p}_double_3x3_reduce", x)
        branches.append(self._cbr(f"{p}_double_3x3_2", self._cbr(f"{p}_double_3x3_1", d)))
        if b.pool == "avg":
            pooled = F.avg_pool2d(x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
            branches.append(self._cbr(f"{p}_pool_proj", pooled))
        elif b.pool == "max":
            pooled = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
            branches.append(self._cbr(f"{p}_pool_proj", pooled))
        else:  # "max_s2": reduction block
            branches.append(F.max_pool2d(x, 3, 2, 0, ceil_mode=True))
        return torch.cat(branches, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``inception_5b_output`` ``(B, 1024, h, w)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"BNInception expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x = self._cbr("conv1_7x7_s2", x)
        x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)  # pool1_3x3_s2
        x = self._cbr("conv2_3x3", self._cbr("conv2_3x3_reduce", x))
        x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)  # pool2_3x3_s2
        for b in _BLOCKS:
            x = self._block(b, x)
        return x
