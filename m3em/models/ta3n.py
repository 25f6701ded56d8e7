"""TA3N (Temporal Attentive Adversarial Adaptation Network) as in the EPIC-KITCHENS-100 UDA baseline.

Re-implemented from the description of ``jonmun/EPIC-KITCHENS-100_UDA_TA3N: models.py`` (the
configuration of ``script_test_ta3n.sh``: ``baseline_type=video``, ``frame_aggregation=trn-m``,
``add_fc=1``, ``fc_dim=512``, ``share_params=Y``, ``use_attn=TransAttn``, ``use_bn=none``,
``place_adv=Y Y Y``). Parameter names equal the reference's so that the released checkpoints load
(:func:`load_reference_checkpoint`), including the layers the reference creates but never uses
(:data:`UNUSED_LAYERS`).

Data flow for one batch (``B`` clips, ``P = 5`` frames, input size ``D``)::

    x (B, P, D) -> fc_feature_shared_source -> ReLU -> Dropout(dropout_i)      frame feat (B, P, 512)
      +-> frame discriminator: GRL(beta_frame) -> Linear(512,512) -> ReLU -> Linear(512,2)  (B, P, 2)
    TRN-m                                                                    relations (B, P-1, 256)
      +-> P-1 relation discriminators: GRL(beta_relation) -> Linear -> ReLU -> Linear  (B, P-1, 2)
    domain attention: (1 + (1 - H(softmax(d_relation)))) * relation          (B, P-1, 256)
    sum over relations -> Dropout(dropout_v)                                 video feat (B, 256)
      +-> verb / noun classifiers                                            (B, n_verbs), (B, n_nouns)
      +-> video discriminator: GRL(beta_video) -> Linear(256,256) -> ReLU -> Linear(256,2)  (B, 2)

Source-only is the same network built with ``domain_adaptation=False``: no discriminator, no
attention (the reference's ``use_target=none`` run keeps TRN-m and every layer; its
discriminators exist but receive no loss).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from m3em.epic.errors import InputError
from m3em.models.grl import grad_reverse
from m3em.models.trn import RelationModuleMultiScale

#: Layers the reference builds (so they are in its state dict) but never uses in ``forward`` for
#: the EPIC configuration. They are kept, frozen (``requires_grad=False``), so released
#: checkpoints load strictly and distributed training has no unused trainable parameters.
UNUSED_LAYERS: tuple[str, ...] = (
    "fc_feature_source",
    "fc_classifier_source_verb",
    "fc_classifier_source_noun",
    "fc_feature_video_source",
    "fc_feature_video_source_2",
    "bn_trn_S",
    "bn_trn_T",
)


class ReferenceCheckpointError(ValueError, InputError):
    """A TA3N checkpoint whose keys or shapes do not match the network; names the file and key."""


@dataclasses.dataclass(frozen=True)
class DomainBetas:
    """Gradient-reversal coefficients per discriminator level (already times the DANN warm-up)."""

    relation: float
    video: float
    frame: float


@dataclasses.dataclass
class TA3NOutput:
    """Outputs of :class:`TA3N` for a batch of ``B`` clips.

    Attributes:
        verb: ``(B, n_verbs)`` logits.
        noun: ``(B, n_nouns)`` logits.
        feat_video: ``(B, bottleneck)`` video feature after ``dropout_v``.
        domain_frame: ``(B, P, 2)`` frame-discriminator logits, or None (source-only).
        domain_relation: ``(B, P - 1, 2)`` relation-discriminator logits, or None.
        domain_video: ``(B, 2)`` video-discriminator logits, or None.
        attention: ``(B, P - 1)`` domain attention ``1 - H(d)`` per relation, or None.
    """

    verb: torch.Tensor
    noun: torch.Tensor
    feat_video: torch.Tensor
    domain_frame: torch.Tensor | None = None
    domain_relation: torch.Tensor | None = None
    domain_video: torch.Tensor | None = None
    attention: torch.Tensor | None = None


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Natural-log entropy of ``softmax(logits)`` over the last axis: ``(..., K)`` -> ``(...)``."""
    return -(F.softmax(logits, dim=-1) * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def transferable_attention(domain_logits: torch.Tensor) -> torch.Tensor:
    """TA3N's ``TransAttn`` weights ``w = 1 - H(softmax(d))`` in ``[1 - ln 2, 1]``; ``(..., 2)`` -> ``(...)``.

    Not detached: as in the reference, the attention back-propagates into the discriminators.
    """
    return 1.0 - entropy(domain_logits)


def attentive_entropy(logits: torch.Tensor, domain_logits: torch.Tensor) -> torch.Tensor:
    """``mean_i (1 + H(softmax(d_i))) * H(softmax(pred_i))`` (TA3N ``loss.py``); ``(N, C), (N, 2)`` -> scalar."""
    return ((1.0 + entropy(domain_logits)) * entropy(logits)).mean()


def dann_coefficient(progress: float, rate: float) -> float:
    """DANN warm-up ``2 / (1 + exp(-rate * p)) - 1``.

    The EPIC-100 fork uses ``rate = 1.0`` (the DANN paper and the original TA3N use 10), so the
    coefficient only grows from about 0.02 to about 0.46 over training; that is the reference
    behaviour and therefore our default (``train.dann_warmup_rate``).
    """
    return 2.0 / (1.0 + math.exp(-rate * progress)) - 1.0


def _reference_init(layer: nn.Linear, std: float = 0.001) -> nn.Linear:
    # The reference initialises every VideoModel Linear except TRN and relation discriminators
    # with N(0, 0.001) and zero bias; with such small weights the logits start near uniform.
    nn.init.normal_(layer.weight, 0.0, std)
    nn.init.zeros_(layer.bias)
    return layer


class TA3N(nn.Module):
    """The EPIC-100 TA3N video model on per-frame feature vectors.

    Args:
        feature_dim: input size ``D`` per frame (3072 for the reference RGB+Flow+Audio concat).
        n_verbs, n_nouns: class counts (97, 300 on EPIC-100).
        num_frames: ``P``, frames per clip (5); TRN-m is built for this fixed count.
        fc_dim: ``fc_dim`` of the reference (512); the shared layer has ``min(fc_dim, D)`` units.
        num_bottleneck: TRN-m relation size (256).
        dropout_i, dropout_v: dropout on frame features and on the video feature (0.5, 0.5).
        domain_adaptation: build the forward with discriminators and domain attention (TA3N);
            False gives the source-only network (same layers, no domain terms).

    Shapes:
        ``forward(x)`` with ``x (B, P, D)`` returns a :class:`TA3NOutput`.
    """

    def __init__(
        self,
        feature_dim: int,
        n_verbs: int,
        n_nouns: int,
        *,
        num_frames: int = 5,
        fc_dim: int = 512,
        num_bottleneck: int = 256,
        dropout_i: float = 0.5,
        dropout_v: float = 0.5,
        domain_adaptation: bool = True,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_frames = num_frames
        self.domain_adaptation = domain_adaptation
        shared = min(fc_dim, feature_dim)
        self.relu = nn.ReLU()
        self.dropout_i = nn.Dropout(dropout_i)
        self.dropout_v = nn.Dropout(dropout_v)
        # Frame level.
        self.fc_feature_shared_source = _reference_init(nn.Linear(feature_dim, shared))
        self.fc_feature_source = _reference_init(nn.Linear(shared, shared))  # unused (reference)
        self.fc_feature_domain = _reference_init(nn.Linear(shared, shared))
        self.fc_classifier_source_verb = _reference_init(nn.Linear(shared, n_verbs))  # unused ('video' baseline)
        self.fc_classifier_source_noun = _reference_init(nn.Linear(shared, n_nouns))  # unused
        self.fc_classifier_domain = _reference_init(nn.Linear(shared, 2))
        # Temporal aggregation.
        self.TRN = RelationModuleMultiScale(shared, num_bottleneck, num_frames)
        self.bn_trn_S = nn.BatchNorm1d(num_bottleneck)  # unused: AdaBN only (use_bn != none)
        self.bn_trn_T = nn.BatchNorm1d(num_bottleneck)  # unused
        # Video level.
        self.fc_feature_video_source = _reference_init(nn.Linear(num_bottleneck, num_bottleneck))  # unused
        self.fc_feature_video_source_2 = _reference_init(nn.Linear(num_bottleneck, num_bottleneck))  # unused
        self.fc_feature_domain_video = _reference_init(nn.Linear(num_bottleneck, num_bottleneck))
        self.fc_classifier_video_verb_source = _reference_init(nn.Linear(num_bottleneck, n_verbs))
        self.fc_classifier_video_noun_source = _reference_init(nn.Linear(num_bottleneck, n_nouns))
        self.fc_classifier_domain_video = _reference_init(nn.Linear(num_bottleneck, 2))
        self.relation_domain_classifier_all = nn.ModuleList(
            nn.Sequential(nn.Linear(num_bottleneck, num_bottleneck), nn.ReLU(), nn.Linear(num_bottleneck, 2))
            for _ in range(num_frames - 1)
        )
        for name in UNUSED_LAYERS:
            getattr(self, name).requires_grad_(False)

    def forward(self, x: torch.Tensor, betas: DomainBetas | None = None) -> TA3NOutput:
        """Run the network on ``x (B, P, D)``; ``betas`` scale the reversed gradients (None = 0)."""
        if x.ndim != 3 or x.shape[1] != self.num_frames or x.shape[2] != self.feature_dim:
            raise ValueError(
                f"TA3N expects (B, {self.num_frames}, {self.feature_dim}) input, got {tuple(x.shape)}"
            )
        betas = betas or DomainBetas(0.0, 0.0, 0.0)
        b, p, _ = x.shape
        frame = self.dropout_i(self.relu(self.fc_feature_shared_source(x)))  # (B, P, 512)
        relation = self.TRN(frame)  # (B, P-1, 256)
        out = TA3NOutput(verb=x.new_empty(0), noun=x.new_empty(0), feat_video=x.new_empty(0))
        if self.domain_adaptation:
            out.domain_frame = self.fc_classifier_domain(
                self.relu(self.fc_feature_domain(grad_reverse(frame, betas.frame)))
            )  # (B, P, 2)
            out.domain_relation = torch.stack(
                [disc(grad_reverse(relation[:, i], betas.relation)) for i, disc in
                 enumerate(self.relation_domain_classifier_all)],
                dim=1,
            )  # (B, P-1, 2)
            out.attention = transferable_attention(out.domain_relation)  # (B, P-1)
            relation = (out.attention.unsqueeze(-1) + 1.0) * relation
        video = self.dropout_v(relation.sum(dim=1))  # (B, 256)
        out.feat_video = video
        out.verb = self.fc_classifier_video_verb_source(video)
        out.noun = self.fc_classifier_video_noun_source(video)
        if self.domain_adaptation:
            out.domain_video = self.fc_classifier_domain_video(
                self.relu(self.fc_feature_domain_video(grad_reverse(video, betas.video)))
            )
        return out


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix that ``DataParallel``/DDP adds to every key."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise :class:`ReferenceCheckpointError` naming the first missing, unexpected or mis-shaped key."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        raise ReferenceCheckpointError(
            f"{where}: key {missing[0]!r} missing from the checkpoint ({len(missing)} missing in all); "
            "is it a checkpoint of another architecture?"
        )
    if unexpected:
        raise ReferenceCheckpointError(
            f"{where}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all); "
            "is it a checkpoint of another architecture?"
        )
    for k, v in own.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise ReferenceCheckpointError(
                f"{where}: key {k!r} has shape {tuple(state_dict[k].shape)} in the checkpoint, "
                f"the network expects {tuple(v.shape)}"
            )


def load_reference_checkpoint(model: TA3N, path: str | Path) -> dict:
    """Load a checkpoint written by the reference ``main.py`` (``checkpoint.pth.tar``) into ``model``.

    The file is a dict ``{'epoch', 'arch', 'state_dict', 'optimizer', 'best_prec1', 'prec1'}``
    whose ``state_dict`` keys carry DataParallel's ``module.`` prefix. It is read with
    ``torch.load(weights_only=True)`` (no code runs), the prefix is stripped and the weights are
    loaded strictly.

    Returns:
        the checkpoint's other entries (``epoch``, ``arch``, ...), without ``state_dict``/``optimizer``.
    """
    path = Path(path)
    if not path.exists():
        raise ReferenceCheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler's errors are of many types
        raise ReferenceCheckpointError(f"{path}: not a loadable weights-only checkpoint: {exc}") from exc
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ReferenceCheckpointError(f"{path}: no 'state_dict' key (keys: {list(ckpt)[:10]})")
    state = strip_module_prefix(ckpt["state_dict"])
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer")}
