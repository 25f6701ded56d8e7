"""TBN (Kazakos et al. 2019, "EPIC-Fusion"): one BN-Inception per modality + mid-fusion head.

Matches the released TBN models (ekazakos/temporal-binding-network ``models.py`` and
``fusion_classification_network.py``) so their state dicts load strictly:

* streams registered as ``rgb`` (3 ch), ``flow`` (10 ch: 5 stacked x/y pairs, interleaved
  x1,y1,...,x5,y5) and ``spec`` (1-ch 256x256 log spectrogram), each a :class:`BNInception`
  without ``fc``;
* ``fusion_classification_net.fc1`` Linear(n_modalities*1024, 512) -> ReLU -> Dropout ->
  ``fc_verb`` / ``fc_noun``; with a single modality there is no ``fc1`` (the heads sit on the
  1024-d vector), as in the reference;
* average consensus of the per-snippet logits over the K segments.

The 1024-d per-snippet vector is the global average of ``inception_5b_output``
(:func:`pool_vector`). The reference uses ``AvgPool2d(7)`` (RGB/Flow at 224) or ``AvgPool2d(8)``
(audio at 256); a pool whose kernel is the whole map gives bit-identical numbers on those sizes
and is also defined for the smaller demo inputs.

Input normalisation (:func:`normalise`): RGB as BGR 0-255 minus [104, 117, 128]; flow 0-255
minus 128; audio unnormalised (the raw log power).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from extractors.backbones.bninception import OUT_CHANNELS, BNInception
from extractors.backbones.weights import (
    CheckpointError,
    adapt_first_conv,
    describe_mismatch,
    load_strict,
    shapes_of,
    strip_module_prefix,
)

FLOW_STACK = 5  # TBN new_length for flow: 5 (x, y) pairs per snippet
FUSION_DIM = 512


class Modality(enum.Enum):
    """A TBN stream; the value is the submodule name (and state-dict prefix)."""

    RGB = "rgb"
    FLOW = "flow"
    SPEC = "spec"

    @property
    def in_channels(self) -> int:
        return {Modality.RGB: 3, Modality.FLOW: 2 * FLOW_STACK, Modality.SPEC: 1}[self]


RGB_MEAN_BGR = (104.0, 117.0, 128.0)
FLOW_MEAN = 128.0


def normalise(modality: Modality, x: torch.Tensor) -> torch.Tensor:
    """Turn raw inputs into what the released TBN streams expect.

    Args:
        modality: which stream.
        x: RGB ``(N, H, W, 3)`` uint8 in RGB order; flow ``(N, H, W, 10)`` uint8, channels
            x1,y1,...,x5,y5; spectrogram ``(N, 256, 256)`` float (log power).

    Returns:
        float32 ``(N, C, H, W)``: RGB as BGR 0-255 minus [104,117,128]; flow minus 128; the
        spectrogram unchanged with a channel axis.
    """
    if not torch.is_floating_point(x) and modality is Modality.SPEC:
        raise ValueError("spectrogram input must be floating point (log power)")
    if modality is Modality.SPEC:
        if x.ndim != 3:
            raise ValueError(f"spectrogram batch must be (N, F, T), got {tuple(x.shape)}")
        return x.float().unsqueeze(1)
    if x.ndim != 4 or x.shape[-1] != modality.in_channels:
        raise ValueError(f"{modality.value} batch must be (N, H, W, {modality.in_channels}), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    if modality is Modality.RGB:
        x = x.flip(1)  # RGB -> BGR (Caffe order; TBN's Stack(roll=True))
        mean = torch.tensor(RGB_MEAN_BGR, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return x - mean
    return x - FLOW_MEAN


def pool_vector(spatial_map: torch.Tensor) -> torch.Tensor:
    """``(N, 1024, h, w)`` -> ``(N, 1024)``: average over the whole map (TBN's ``global_pool``)."""
    return F.avg_pool2d(spatial_map, spatial_map.shape[-2:]).flatten(1)


class FusionClassificationNet(nn.Module):
    """TBN's mid-fusion head (``midfusion='concat'``).

    Args:
        n_modalities: number of fused streams.
        num_verbs, num_nouns: class counts (97 / 300 on EPIC-100).
        dropout: dropout before the heads (TBN's default 0.5 on EPIC).
    """

    def __init__(self, n_modalities: int, num_verbs: int, num_nouns: int, dropout: float) -> None:
        super().__init__()
        self.n_modalities = n_modalities
        head_in = OUT_CHANNELS
        if n_modalities > 1:
            self.fc1 = nn.Linear(n_modalities * OUT_CHANNELS, FUSION_DIM)
            nn.init.normal_(self.fc1.weight, 0.0, 0.001)
            nn.init.zeros_(self.fc1.bias)
            head_in = FUSION_DIM
        self.dropout = nn.Dropout(dropout)
        self.fc_verb = nn.Linear(head_in, num_verbs)
        self.fc_noun = nn.Linear(head_in, num_nouns)
        for fc in (self.fc_verb, self.fc_noun):
            nn.init.normal_(fc.weight, 0.0, 0.001)
            nn.init.zeros_(fc.bias)

    def forward(self, vectors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_modalities`` x ``(N, 1024)`` -> verb ``(N, V)``, noun ``(N, C)`` snippet logits."""
        x = torch.cat(list(vectors), dim=1)
        if self.n_modalities > 1:
            x = torch.relu(self.fc1(x))
        x = self.dropout(x)
        return self.fc_verb(x), self.fc_noun(x)


class TBN(nn.Module):
    """Temporal Binding Network.

    Args:
        modalities: streams in fusion order (the released models use RGB, Flow, Spec).
        num_verbs, num_nouns: head sizes.
        dropout: fusion dropout.
    """

    def __init__(
        self,
        modalities: Sequence[Modality] = (Modality.RGB, Modality.FLOW, Modality.SPEC),
        num_verbs: int = 97,
        num_nouns: int = 300,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct and non-empty, got {modalities}")
        self.modalities = tuple(modalities)
        for m in self.modalities:
            self.add_module(m.value, BNInception(m.in_channels))
        self.fusion_classification_net = FusionClassificationNet(len(self.modalities), num_verbs, num_nouns, dropout)

    def stream(self, modality: Modality) -> BNInception:
        return getattr(self, modality.value)

    def spatial(self, modality: Modality, x: torch.Tensor) -> torch.Tensor:
        """One stream's ``inception_5b_output``: ``(N, C_in, H, W)`` -> ``(N, 1024, h, w)``."""
        return self.stream(modality)(x)

    def forward(
        self, inputs: Mapping[Modality, torch.Tensor], num_segments: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify B clips of K segments each.

        Args:
            inputs: per modality, normalised ``(B*K, C_in, H, W)`` (clip-major).
            num_segments: K.

        Returns:
            verb ``(B, V)`` and noun ``(B, C)`` logits, averaged over the K segments.
        """
        vectors = [pool_vector(self.spatial(m, inputs[m])) for m in self.modalities]
        verb, noun = self.fusion_classification_net(vectors)
        return verb.view(-1, num_segments, verb.shape[-1]).mean(1), noun.view(-1, num_segments, noun.shape[-1]).mean(1)


# ---------------------------------------------------------------------------------------------
# Loaders. Each reads a state dict (weights.read_checkpoint + state_dict_of) and loads strictly.


def load_tbn(model: TBN, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a released/fine-tuned TBN state dict (``rgb.``, ``flow.``, ``spec.``,
    ``fusion_classification_net.`` keys, optional ``module.`` prefix) strictly."""
    load_strict(model, sd, source)


def load_tbn_streams(model: TBN, sd: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load only the streams of a TBN checkpoint, dropping its fusion head.

    For initialising fine-tuning from a TBN trained with other class counts (e.g. EPIC-55's
    125/352 heads): every stream key must match (errors name the full keys, e.g.
    ``flow.inception_3a_1x1.weight``); ``fusion_classification_net.*`` is dropped and the names
    returned.
    """
    head = "fusion_classification_net."
    sd = strip_module_prefix(sd)
    dropped = sorted(k for k in sd if k.startswith(head))
    body = {k: v for k, v in sd.items() if not k.startswith(head)}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(head)}
    problems = describe_mismatch(own, shapes_of(body), [k for k in own if k.endswith("num_batches_tracked")])
    if problems:
        raise CheckpointError(f"{source}: TBN streams do not match:\n  " + "\n  ".join(problems))
    model.load_state_dict(body, strict=False)  # checked above; the head keeps its initialisation
    return dropped


def load_imagenet_stream(stream: BNInception, sd: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load ImageNet BN-Inception weights (``bn_inception-9f5701afb96c8044.pth`` layout) into a stream.

    The ImageNet file stores some tensors with a leading singleton axis (the reference squeezes
    dim 0) and carries the 1000-way ``fc``, which is dropped. For a flow or audio stream the first
    convolution is averaged over its RGB inputs and replicated (:func:`adapt_first_conv`).

    Returns:
        the dropped keys (``fc.weight``, ``fc.bias``).
    """
    own = stream.state_dict()
    fixed: dict[str, torch.Tensor] = {}
    for k, v in strip_module_prefix(sd).items():
        if k in own and v.ndim == own[k].ndim + 1 and v.shape[0] == 1:
            v = v.squeeze(0)
        fixed[k] = v
    key = "conv1_7x7_s2.weight"
    if key in fixed and fixed[key].shape[1] == 3 and stream.in_channels != 3:
        fixed[key] = adapt_first_conv(fixed[key], stream.in_channels)
    return load_strict(stream, fixed, source, drop_prefixes=("fc.",))


def load_tsn_flow_stream(stream: BNInception, sd: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load the Kinetics TSN flow weights (``TSN-kinetics-flow.pth``, BN-Inception names) into a flow stream.

    TBN loads this file with ``strict=False``; here every trunk key must match, and the classifier
    (``fc.``) is dropped and reported. A 3-channel first conv is adapted like ImageNet weights.
    """
    if stream.in_channels != Modality.FLOW.in_channels:
        raise CheckpointError(f"{source}: TSN flow weights go into a {Modality.FLOW.in_channels}-channel stream")
    return load_imagenet_stream(stream, sd, source)
