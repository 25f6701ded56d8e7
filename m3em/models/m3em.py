"""M3EM (Multi-Modal Mutual Enhancement Module) on top of TA3N, and the late-fusion action model.

M3EM (Yang et al., EPIC@CVPR 2021 technical report, arXiv 2106.10026) sits between the backbone
features and TA3N and works per sampled frame:

* **SMR** (Semantic Mutual Refinement), for every modality ``M`` with map ``F_M (c, h, w)``
  (vector modalities have ``h = w = 1``): ``f_M = GAP(F_M)``; self gate
  ``ts_M = sigmoid(W2 relu(W1 f_M))``; cross gate ``tc_M = sigmoid(W2' relu(W1' f_in_M))`` where
  ``f_in_M`` concatenates the pooled vectors of all other modalities; bottleneck ratio ``r``;
  ``Fr_M = concat(F_M * ts_M, F_M * tc_M)`` with ``2c`` channels.
* **CMC** (Cross-Modality Consensus), for the spatial pair (RGB, Flow): 1x1 convs map ``Fr_R``
  and ``Fr_F`` into one latent space; both are downsampled by 2 repeatedly (scales ``k = 0..K``);
  at each scale the per-position cosine similarity gives ``C^k``, upsampled to ``h x w``; ``C`` is
  their sum (``cmc_combine: sum``, the report's "summed together to form a consensus map") or
  mean; each modality is pooled with :func:`consensus_weighted_pool` (``cmc_pooling``).
  Other modalities are globally average pooled.
* **Late fusion**: one TA3N branch per group of modalities (RGB+Flow, Audio, Object), scores
  fused as ``sum_b w_b s_b / sum_b w_b``.

The ablations (:mod:`m3em.methods`) switch SMR and/or CMC off inside the same module and branches.
The ``ta3n`` and ``source_only`` methods use the same :class:`ActionModel` without M3EM: every
modality is average pooled and concatenated (the reference's early fusion, 3072-d for
RGB+Flow+Audio) into a single TA3N branch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from m3em.models.ta3n import TA3N, DomainBetas, TA3NOutput, attentive_entropy


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """One input modality of a model: its name (``rgb``), channel count ``c`` and whether it has maps."""

    name: str
    channels: int
    spatial: bool


@dataclasses.dataclass(frozen=True)
class BranchSpec:
    """One late-fusion TA3N branch: which modalities it concatenates, and its fusion weight."""

    name: str
    modalities: tuple[str, ...]
    weight: float


class SemanticMutualRefinement(nn.Module):
    """SMR for a set of modalities.

    Args:
        modalities: the modalities, in a fixed order.
        reduction: bottleneck ratio ``r`` of both gates (16).

    Shapes:
        ``forward({name: (N, c_M, h_M, w_M)})`` -> ``{name: (N, 2 c_M, h_M, w_M)}``.

    With a single modality there is no other modality to exchange with; its cross gate then reads
    the modality's own pooled vector (a second, independent self gate) so the output keeps ``2c``
    channels and the downstream sizes do not depend on the number of modalities.
    """

    def __init__(self, modalities: Sequence[ModalitySpec], reduction: int) -> None:
        super().__init__()
        self.names = [m.name for m in modalities]
        channels = {m.name: m.channels for m in modalities}
        self.self_gates = nn.ModuleDict()
        self.cross_gates = nn.ModuleDict()
        for m in modalities:
            hidden = max(1, m.channels // reduction)
            others = sum(channels[n] for n in self.names if n != m.name) or m.channels
            self.self_gates[m.name] = nn.Sequential(
                nn.Linear(m.channels, hidden), nn.ReLU(), nn.Linear(hidden, m.channels), nn.Sigmoid()
            )
            self.cross_gates[m.name] = nn.Sequential(
                nn.Linear(others, hidden), nn.ReLU(), nn.Linear(hidden, m.channels), nn.Sigmoid()
            )

    def gates(self, maps: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Self and cross gates ``{name: (ts (N, c), tc (N, c))}`` from the maps ``(N, c, h, w)``."""
        pooled = {n: maps[n].mean(dim=(2, 3)) for n in self.names}  # f_M: (N, c_M)
        out = {}
        for n in self.names:
            others = [pooled[o] for o in self.names if o != n] or [pooled[n]]
            out[n] = (self.self_gates[n](pooled[n]), self.cross_gates[n](torch.cat(others, dim=1)))
        return out

    def forward(self, maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The refined maps ``Fr_M = concat(F_M * ts_M, F_M * tc_M)``, ``(N, 2c, h, w)``.

        :class:`M3EM` never builds them: the gates are constant over positions, so pooling and
        CMC's 1x1 projection are computed from ``F_M`` and the gates directly (same values, half
        the memory traffic).
        """
        out = {}
        for n, (ts, tc) in self.gates(maps).items():
            out[n] = torch.cat([maps[n] * ts[:, :, None, None], maps[n] * tc[:, :, None, None]], dim=1)
        return out


#: ``cmc_combine``: how the per-scale maps ``C^k`` (each in ``[-1, 1]``) become ``C``.
CMC_COMBINE = ("sum", "mean")
#: ``cmc_pooling``: how ``C`` weights the positions (see :func:`consensus_weighted_pool`).
CMC_POOLING = ("normalised", "residual")


def consensus_pool_weights(consensus: torch.Tensor) -> torch.Tensor:
    """The non-negative position weights ``w = max(0, 1 + C)`` of the normalised pooling; ``(N, h, w)``.

    With ``cmc_combine: mean`` ``C`` lies in ``[-1, 1]`` and the clamp never acts. With ``sum``
    over ``K + 1`` scales ``C`` lies in ``[-(K+1), K+1]``: a position where the modalities
    disagree (``C < -1``) gets weight 0 instead of a negative weight, which would make the
    "weighted average" leave the convex hull of the features (and could cancel the denominator).
    """
    return (1.0 + consensus).clamp(min=0.0)


def consensus_weighted_pool(features: torch.Tensor, consensus: torch.Tensor, pooling: str = "normalised") -> torch.Tensor:
    """Pool a map ``(N, c, h, w)`` with the consensus ``C (N, h, w)`` into ``(N, c)``.

    ``pooling``:

    * ``normalised`` (default, our reading of the report): a weighted average
      ``sum_ij w_ij F_ij / max(1, sum_ij w_ij)`` with ``w = max(0, 1 + C)``
      (:func:`consensus_pool_weights`). Guard: the denominator is at least 1 (one position's
      full weight), so when the modalities disagree almost everywhere (``sum w -> 0``, possible
      with ``cmc_combine: sum``) the output shrinks towards 0 instead of dividing by ~0; where
      ``sum w >= 1`` (always, unless ``C <= -1 + 1/(hw)`` nearly everywhere) it is the exact
      weighted average. ``C = 0`` gives global average pooling.
    * ``residual``: the un-normalised ``mean_ij (1 + C_ij) F_ij`` (global average pooling of
      ``(1 + C) * F``); no denominator, no clamp, ``|out| <= max|1 + C| mean|F|``.

    Kept in one place: every consensus pooling (training, prediction, benchmarks) calls this.
    """
    if pooling == "normalised":
        w = consensus_pool_weights(consensus).unsqueeze(1)  # (N, 1, h, w)
        return (features * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp(min=1.0)
    if pooling == "residual":
        return (features * (1.0 + consensus).unsqueeze(1)).mean(dim=(2, 3))
    raise ValueError(f"cmc_pooling: {pooling!r} is not one of {list(CMC_POOLING)}")


class CrossModalityConsensus(nn.Module):
    """CMC for one spatial pair.

    Args:
        channels_a, channels_b: channels of the two refined maps (``2c`` after SMR).
        latent_channels: size of the shared latent space of the 1x1 convs.
        num_scales: ``K``; scales ``k = 0..K`` (each a further 2x average-pool downsampling).
        combine: ``sum`` (the report: the upsampled maps are "summed together to form a
            consensus map", ``C`` in ``[-(K+1), K+1]``) or ``mean`` (``C`` in ``[-1, 1]``).
        pooling: ``normalised`` or ``residual`` (:func:`consensus_weighted_pool`).

    Shapes:
        ``consensus(a (N, Ca, h, w), b (N, Cb, h, w))`` -> ``C (N, h, w)``;
        ``forward(a, b)`` -> ``(pooled_a (N, Ca), pooled_b (N, Cb), C (N, h, w))``.
    """

    def __init__(self, channels_a: int, channels_b: int, latent_channels: int, num_scales: int,
                 combine: str = "sum", pooling: str = "normalised") -> None:
        super().__init__()
        if combine not in CMC_COMBINE:
            raise ValueError(f"cmc_combine: {combine!r} is not one of {list(CMC_COMBINE)}")
        if pooling not in CMC_POOLING:
            raise ValueError(f"cmc_pooling: {pooling!r} is not one of {list(CMC_POOLING)}")
        self.proj_a = nn.Conv2d(channels_a, latent_channels, kernel_size=1)
        self.proj_b = nn.Conv2d(channels_b, latent_channels, kernel_size=1)
        self.num_scales = num_scales
        self.combine = combine
        self.pooling = pooling

    @staticmethod
    def project(conv: nn.Conv2d, x: torch.Tensor, gates: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """A 1x1 conv as one matrix product over channels-last positions.

        Args:
            conv: the 1x1 convolution (weights ``(L, 2c, 1, 1)``).
            x: ``Fr (N, 2c, h, w)``; or, with ``gates = (ts, tc)`` each ``(N, c)``, the unrefined
                ``F (N, c, h, w)`` standing for ``Fr = concat(F * ts, F * tc)`` (not built).

        Returns:
            latent ``(N, h, w, L)``.
        """
        w = conv.weight[:, :, 0, 0]
        xl = x.permute(0, 2, 3, 1)  # (N, h, w, C)
        if gates is None:
            return F.linear(xl, w, conv.bias)
        ts, tc = gates
        c = x.shape[1]
        return (F.linear(xl * ts[:, None, None, :], w[:, :c])
                + F.linear(xl * tc[:, None, None, :], w[:, c:], conv.bias))

    def consensus_from_latent(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """``C (N, h, w)`` from the two latent maps ``(N, h, w, L)``: cosine per position at scales
        ``k = 0..K`` (2x average pooling each), upsampled bilinearly to ``h x w``, then summed or
        averaged (``combine``)."""
        if za.shape[1:3] != zb.shape[1:3]:
            raise ValueError(f"CMC needs maps of one size, got {tuple(za.shape[1:3])} and {tuple(zb.shape[1:3])}")
        h, w = za.shape[1:3]
        za, zb = za.permute(0, 3, 1, 2), zb.permute(0, 3, 1, 2)  # (N, L, h, w) views
        maps = []
        for k in range(self.num_scales + 1):
            if k > 0:
                # ceil_mode keeps odd sizes (7 -> 4 -> 2 -> 1) instead of dropping the border.
                za = F.avg_pool2d(za, 2, ceil_mode=True) if min(za.shape[2:]) > 1 else za
                zb = F.avg_pool2d(zb, 2, ceil_mode=True) if min(zb.shape[2:]) > 1 else zb
            c = F.cosine_similarity(za, zb, dim=1, eps=1e-6)  # (N, h_k, w_k)
            if c.shape[1:] != (h, w):
                c = F.interpolate(c.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
            maps.append(c)
        stacked = torch.stack(maps, dim=0)
        return stacked.sum(dim=0) if self.combine == "sum" else stacked.mean(dim=0)

    def consensus(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``C (N, h, w)`` from the refined maps ``a (N, Ca, h, w)``, ``b (N, Cb, h, w)``."""
        return self.consensus_from_latent(self.project(self.proj_a, a), self.project(self.proj_b, b))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.consensus(a, b)
        return consensus_weighted_pool(a, c, self.pooling), consensus_weighted_pool(b, c, self.pooling), c


@dataclasses.dataclass
class M3EMProbe:
    """What M3EM computed for ``N`` frames, for the training instruments (detached).

    Attributes:
        self_gates, cross_gates: ``{modality: (N, c)}`` SMR gates; empty when SMR is off.
        consensus: ``C (N, h, w)`` of the consensus pair, or None when CMC is off.
    """

    self_gates: dict[str, torch.Tensor]
    cross_gates: dict[str, torch.Tensor]
    consensus: torch.Tensor | None


class M3EM(nn.Module):
    """SMR for every modality, then CMC on the spatial pair (or average pooling).

    Args:
        modalities: all modalities of the model.
        reduction: SMR bottleneck ratio ``r``; None turns SMR off: both gates are 1, so
            ``Fr = concat(F, F)`` keeps ``2c`` channels and every downstream layer (CMC's 1x1
            convs, the TA3N branches) has the same shape as with SMR.
        consensus_pair: the two spatial modalities for CMC, or None to skip CMC (pooled inputs,
            or the ``ta3n_late`` / ``m3em_smr`` methods).
        cmc_latent_channels, cmc_scales, cmc_combine, cmc_pooling: CMC's settings
            (:class:`CrossModalityConsensus`).

    Shapes:
        ``forward({name: (N, c, h, w)})`` -> ``{name: (N, 2c)}`` per-frame vectors.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        *,
        reduction: int | None,
        consensus_pair: tuple[str, str] | None,
        cmc_latent_channels: int,
        cmc_scales: int,
        cmc_combine: str = "sum",
        cmc_pooling: str = "normalised",
    ) -> None:
        super().__init__()
        self.smr = SemanticMutualRefinement(modalities, reduction) if reduction is not None else None
        self.names = [m.name for m in modalities]
        self.consensus_pair = consensus_pair
        self.cmc: CrossModalityConsensus | None = None
        if consensus_pair is not None:
            spec = {m.name: m for m in modalities}
            a, b = consensus_pair
            self.cmc = CrossModalityConsensus(2 * spec[a].channels, 2 * spec[b].channels, cmc_latent_channels,
                                              cmc_scales, combine=cmc_combine, pooling=cmc_pooling)

    def gates(self, maps: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """SMR's ``{name: (ts (N, c), tc (N, c))}``; all ones when SMR is off."""
        if self.smr is not None:
            return self.smr.gates(maps)
        ones = {n: maps[n].new_ones(maps[n].shape[:2]) for n in self.names}
        return {n: (ones[n], ones[n]) for n in self.names}

    def consensus(self, maps: Mapping[str, torch.Tensor], gates: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """CMC's ``C (N, h, w)`` of the consensus pair (CMC must be on)."""
        if self.cmc is None:
            raise ValueError("this M3EM has no consensus pair (CMC off)")
        a, b = self.consensus_pair
        return self.cmc.consensus_from_latent(self.cmc.project(self.cmc.proj_a, maps[a], gates[a]),
                                              self.cmc.project(self.cmc.proj_b, maps[b], gates[b]))

    def forward(self, maps: Mapping[str, torch.Tensor], consensus_override: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-frame vectors ``{name: (N, 2c)}`` from the maps ``{name: (N, c, h, w)}``.

        Args:
            maps: per modality, ``N = B * P`` frame maps, clip-major (row ``b * P + t`` is frame
                ``t`` of clip ``b``, as :meth:`ActionModel.frame_vectors` flattens them).
            consensus_override: ``(N, h, w)`` float map used *instead of* CMC's ``C`` (after the
                scales are combined), with the consensus pair's ``h x w``; it goes through
                :func:`consensus_weighted_pool` with this module's ``cmc_pooling`` exactly as
                ``C`` would (normalised: weights ``max(0, 1 + C)``, so an oracle hard mask is
                ``C = 2 m - 1`` for ``m`` in ``{0, 1}``, and ``C = 0`` is average pooling). CMC's
                1x1 convs are then not evaluated (no gradient reaches them); SMR is unchanged.
                It needs CMC on (a consensus pair); otherwise, or with a wrong shape, ValueError.
                For benchmarks (oracle and ``C = 0`` bounds), not for training runs.
        """
        # Equal to pooling SMR's refined maps Fr = concat(F ts, F tc): the gates are constant over
        # positions, so pool(Fr) = concat(pool(F) ts, pool(F) tc) and Fr is never built.
        gates = self.gates(maps)
        pooled = {}
        if consensus_override is not None:
            if self.cmc is None:
                raise ValueError("consensus_override given, but this model has no CMC (no consensus pair)")
            a = self.consensus_pair[0]
            want = (maps[a].shape[0], *maps[a].shape[2:])
            if tuple(consensus_override.shape) != want:
                raise ValueError(f"consensus_override: expected shape (N, h, w) = {want}, got {tuple(consensus_override.shape)}")
        if self.cmc is not None:
            c = consensus_override if consensus_override is not None else self.consensus(maps, gates)
            for n in self.consensus_pair:
                pooled[n] = consensus_weighted_pool(maps[n], c, self.cmc.pooling)
        out = {}
        for n in self.names:
            f = pooled[n] if n in pooled else maps[n].mean(dim=(2, 3))  # (N, c)
            ts, tc = gates[n]
            out[n] = torch.cat([f * ts, f * tc], dim=1)  # (N, 2c)
        return out

    @torch.no_grad()
    def probe(self, maps: Mapping[str, torch.Tensor]) -> M3EMProbe:
        """The gates and ``C`` for the maps ``{name: (N, c, h, w)}`` (instruments; no gradient)."""
        gates = self.gates(maps)
        c = self.consensus(maps, gates) if self.cmc is not None else None
        if self.smr is None:
            return M3EMProbe({}, {}, c)
        return M3EMProbe({n: g[0] for n, g in gates.items()}, {n: g[1] for n, g in gates.items()}, c)


@dataclasses.dataclass
class ModelOutput:
    """Fused logits and the per-branch TA3N outputs for a batch of ``B`` clips."""

    verb: torch.Tensor  # (B, n_verbs)
    noun: torch.Tensor  # (B, n_nouns)
    branches: dict[str, TA3NOutput]


class ActionModel(nn.Module):
    """Late fusion of TA3N branches, optionally behind M3EM.

    Args:
        modalities: every input modality.
        branches: the TA3N branches (for the ``ta3n`` and ``source_only`` methods, one branch over
            all modalities).
        n_verbs, n_nouns: class counts.
        num_frames: ``P``.
        m3em: the M3EM module, or None (inputs are average pooled per frame).
        ta3n_kwargs: keyword arguments of :class:`TA3N` (fc_dim, num_bottleneck, dropouts,
            domain_adaptation).

    Shapes:
        ``forward({name: (B, P, c, h, w) or (B, P, c)}, betas)`` -> :class:`ModelOutput`.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        branches: Sequence[BranchSpec],
        n_verbs: int,
        n_nouns: int,
        *,
        num_frames: int,
        m3em: M3EM | None,
        ta3n_kwargs: Mapping[str, object],
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.branch_specs = list(branches)
        known = {m.name for m in modalities}
        for br in branches:
            unknown = [m for m in br.modalities if m not in known]
            if unknown:
                raise ValueError(f"branch {br.name!r} uses unknown modalities {unknown}; known: {sorted(known)}")
        self.num_frames = num_frames
        self.m3em = m3em
        width = {m.name: (2 if m3em is not None else 1) * m.channels for m in modalities}
        self.branches = nn.ModuleDict({
            br.name: TA3N(sum(width[m] for m in br.modalities), n_verbs, n_nouns, num_frames=num_frames, **ta3n_kwargs)
            for br in branches
        })

    def frame_maps(self, inputs: Mapping[str, torch.Tensor]) -> tuple[int, dict[str, torch.Tensor]]:
        """``(B, {name: (B*P, c, h, w)})``: the inputs checked and flattened clip-major (row ``b*P + t``)."""
        maps = {}
        batch = None
        for m in self.modalities:
            if m.name not in inputs:
                raise KeyError(f"input modality {m.name!r} missing; got {sorted(inputs)}")
            x = inputs[m.name]
            if x.ndim == 3:  # vector modality: h = w = 1
                x = x[..., None, None]
            if x.ndim != 5 or x.shape[1] != self.num_frames or x.shape[2] != m.channels:
                raise ValueError(
                    f"modality {m.name!r}: expected (B, {self.num_frames}, {m.channels}, h, w), got {tuple(x.shape)}"
                )
            batch = x.shape[0]
            maps[m.name] = x.reshape(-1, *x.shape[2:])  # (B*P, c, h, w)
        return batch, maps

    def frame_vectors(self, inputs: Mapping[str, torch.Tensor],
                      consensus_override: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-frame vectors ``{name: (B, P, c')}`` from the inputs (through M3EM when present).

        ``consensus_override``: ``(B*P, h, w)``, see :meth:`M3EM.forward`; an error without M3EM.
        """
        batch, maps = self.frame_maps(inputs)
        if self.m3em is not None:
            vecs = self.m3em(maps, consensus_override=consensus_override)
        else:
            if consensus_override is not None:
                raise ValueError("consensus_override given, but this model has no M3EM module (method ta3n/source_only)")
            vecs = {n: v.mean(dim=(2, 3)) for n, v in maps.items()}
        return {n: v.reshape(batch, self.num_frames, -1) for n, v in vecs.items()}

    def forward(self, inputs: Mapping[str, torch.Tensor], betas: DomainBetas | None = None,
                consensus_override: torch.Tensor | None = None) -> ModelOutput:
        """Fused logits for ``inputs {name: (B, P, c, h, w) or (B, P, c)}``.

        ``consensus_override``: ``(B*P, h, w)`` map replacing CMC's ``C`` (benchmarks; see
        :meth:`M3EM.forward` for the exact contract).
        """
        vecs = self.frame_vectors(inputs, consensus_override)
        outs = {}
        verb = noun = None
        total = sum(br.weight for br in self.branch_specs)
        for br in self.branch_specs:
            x = torch.cat([vecs[m] for m in br.modalities], dim=2)
            o = self.branches[br.name](x, betas)
            outs[br.name] = o
            verb = o.verb * br.weight if verb is None else verb + o.verb * br.weight
            noun = o.noun * br.weight if noun is None else noun + o.noun * br.weight
        return ModelOutput(verb=verb / total, noun=noun / total, branches=outs)

    def probe(self, inputs: Mapping[str, torch.Tensor]) -> M3EMProbe | None:
        """M3EM's gates and ``C`` for ``inputs`` (frames flattened ``B*P``), or None without M3EM."""
        if self.m3em is None:
            return None
        return self.m3em.probe(self.frame_maps(inputs)[1])


@dataclasses.dataclass
class LossTerms:
    """The training loss and its parts (scalars); ``domain_accuracy`` is NaN without domain terms."""

    total: torch.Tensor
    classification: torch.Tensor
    adversarial: torch.Tensor
    entropy: torch.Tensor
    domain_accuracy: float


def _domain_ce(logits: torch.Tensor, n_source: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """CE of ``(B, ..., 2)`` domain logits, rows ``< n_source`` source (0), the rest target (1)."""
    b = logits.shape[0]
    labels = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    labels[n_source:] = 1
    flat, lab = logits.reshape(-1, 2), labels.reshape(-1)
    correct = (flat.argmax(dim=1) == lab).sum()
    del b
    return F.cross_entropy(flat, lab), correct, lab.numel()


def compute_losses(
    out: ModelOutput,
    n_source: int,
    verb_labels: torch.Tensor,
    noun_labels: torch.Tensor,
    *,
    gamma: float,
    lambda_y: float,
    lambda_d: float,
) -> LossTerms:
    """TA3N's loss per branch, combined as ``lambda_y L_y + lambda_d L_d``.

    ``out`` holds the source rows first (``n_source`` of them) and then the target rows.
    ``L_y = 0.5 (CE_verb + CE_noun)`` on the fused source logits (for one branch: TA3N's
    classification loss). ``L_d`` sums, over branches, the unweighted domain cross-entropies of
    the relation (``B (P-1)`` rows), video and frame (``B P`` rows) discriminators plus
    ``gamma * 0.5 (AttEnt_verb + AttEnt_noun)`` on source and target logits weighted by the
    video-level domain entropy (TA3N ``main.py``). Branches without discriminators
    (source-only) contribute nothing to ``L_d``. The betas only scale reversed gradients.
    """
    cls = 0.5 * (F.cross_entropy(out.verb[:n_source], verb_labels) + F.cross_entropy(out.noun[:n_source], noun_labels))
    adv = cls.new_zeros(())
    ent = cls.new_zeros(())
    correct, count = 0, 0
    for o in out.branches.values():
        if o.domain_video is None:
            continue
        for logits in (o.domain_relation, o.domain_video, o.domain_frame):
            loss, c, n = _domain_ce(logits, n_source)
            adv = adv + loss
            correct += int(c)
            count += n
        ent = ent + gamma * 0.5 * (attentive_entropy(o.verb, o.domain_video) + attentive_entropy(o.noun, o.domain_video))
    total = lambda_y * cls + lambda_d * (adv + ent)
    return LossTerms(total, cls.detach(), adv.detach(), ent.detach(), correct / count if count else float("nan"))
