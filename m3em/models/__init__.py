"""TA3N and M3EM models, and their construction from the ``models:`` config section.

``models:`` holds ``ta3n`` (the TA3N sizes shared by every model) and one entry per model name
(``A``..``D``, or any new upper-case name): its modalities (modality -> feature stream and
channels), late-fusion branches, the CMC pair, SMR/CMC sizes, loss weights and methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from m3em.epic.config import ConfigError, build_dataclass
from m3em.epic.streams import SPATIAL_STREAMS, STREAMS
from m3em.methods import METHOD_LABELS, Method
from m3em.models.m3em import (
    M3EM,
    ActionModel,
    BranchSpec,
    FeatureStandardiser,
    LossTerms,
    M3EMProbe,
    ModalitySpec,
    ModelOutput,
    compute_losses,
    consensus_pool_weights,
    consensus_weighted_pool,
)
from m3em.models.ta3n import TA3N, DomainBetas, TA3NOutput, dann_coefficient, load_reference_checkpoint

__all__ = [
    "M3EM", "METHOD_LABELS", "TA3N", "ActionModel", "BranchSpec", "DomainBetas", "FeatureStandardiser", "LossTerms",
    "M3EMProbe", "Method", "ModalityConfig", "ModalitySpec", "ModelConfig", "ModelOutput", "TA3NArchConfig", "TA3NOutput", "build_model",
    "compute_losses", "consensus_pool_weights", "consensus_weighted_pool", "dann_coefficient",
    "load_reference_checkpoint", "model_config",
]


@dataclasses.dataclass(frozen=True)
class TA3NArchConfig:
    """``models.ta3n``: TA3N sizes (EPIC-100 baseline: fc_dim 512, TRN-m bottleneck 256)."""

    fc_dim: int = 512
    num_bottleneck: int = 256


@dataclasses.dataclass(frozen=True)
class ModalityConfig:
    """``models.<name>.modalities.<modality>``: which feature stream feeds it, and its channel count."""

    stream: str
    channels: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``models.<name>``: one of the paper's models (A: TBN RGB/Flow/Audio, ..., D: I3D RGB/Flow)."""

    modalities: Mapping[str, ModalityConfig]
    branches: tuple[BranchSpec, ...]  # models.<name>.branches, built straight into the model's spec
    consensus_pair: tuple[str, str] | None = None
    smr_reduction: int = 16
    cmc_scales: int = 2
    cmc_latent_channels: int = 256
    cmc_combine: Literal["sum", "mean"] = "sum"  # C = sum (the report) or mean of the per-scale maps
    cmc_pooling: Literal["normalised", "residual"] = "normalised"  # see consensus_weighted_pool
    lambda_y: float = 1.0
    lambda_d: float = 1.0
    methods: tuple[str, ...] = tuple(m.value for m in Method)

    def check(self, where: str) -> None:
        """Cross-field checks the schema cannot express; raise :class:`ConfigError` naming the key."""
        for name, m in self.modalities.items():
            if m.stream not in STREAMS:
                raise ConfigError(f"{where}.modalities.{name}.stream: unknown stream {m.stream!r}; known: {list(STREAMS)}")
        used = [m for br in self.branches for m in br.modalities]
        for m in used:
            if m not in self.modalities:
                raise ConfigError(f"{where}.branches: modality {m!r} is not in {where}.modalities")
        if sorted(used) != sorted(self.modalities):
            raise ConfigError(f"{where}.branches: every modality must be in exactly one branch; got {used}")
        if self.consensus_pair is not None:
            for m in self.consensus_pair:
                if m not in self.modalities:
                    raise ConfigError(f"{where}.consensus_pair: {m!r} is not in {where}.modalities")
                if self.modalities[m].stream not in SPATIAL_STREAMS:
                    raise ConfigError(f"{where}.consensus_pair: {m!r} reads a vector stream ({self.modalities[m].stream})")
        for m in self.methods:
            if m not in {x.value for x in Method}:
                raise ConfigError(f"{where}.methods: unknown method {m!r}; known: {[x.value for x in Method]}")


def model_config(models_section: Mapping[str, Any], name: str) -> tuple[ModelConfig, TA3NArchConfig]:
    """Build the dataclasses of model ``name`` from the validated ``models:`` section."""
    if name not in models_section or name == "ta3n":
        known = sorted(k for k in models_section if k != "ta3n")
        raise ConfigError(f"models: no model {name!r}; configured models: {known}")
    cfg = build_dataclass(ModelConfig, models_section[name], f"models.{name}")
    cfg.check(f"models.{name}")
    arch = build_dataclass(TA3NArchConfig, models_section.get("ta3n", {}), "models.ta3n")
    return cfg, arch


def build_model(
    cfg: ModelConfig,
    arch: TA3NArchConfig,
    method: Method,
    *,
    n_verbs: int,
    n_nouns: int,
    num_frames: int,
    dropout_i: float,
    dropout_v: float,
    spatial: Mapping[str, bool],
    standardise: bool = False,
) -> ActionModel:
    """The network for ``method``.

    ``source_only``/``ta3n``: one TA3N branch over all modalities, average pooled and concatenated.
    The late-fusion methods (``ta3n_late``, ``m3em_smr``, ``m3em_cmc``, ``m3em``): one TA3N branch
    per ``cfg.branches`` entry behind an :class:`M3EM` module whose SMR and CMC are on or off as
    the method says (:mod:`m3em.methods`); with both off the module has no parameters and the
    branches see ``concat(f, f)`` per modality, so their shapes equal ``m3em``'s.

    Args:
        spatial: per modality, whether its inputs have maps larger than 1x1 (False for vector
            streams and for the official pooled features). CMC needs both members of the
            consensus pair spatial; otherwise ``m3em`` skips it (pooled inputs) and ``m3em_cmc``,
            which would then equal ``ta3n_late``, is an error.
        standardise: per-channel input standardisation (``train.standardise_features``).
    """
    modalities = [ModalitySpec(n, m.channels, bool(spatial[n])) for n, m in cfg.modalities.items()]
    ta3n_kwargs = dict(
        fc_dim=arch.fc_dim,
        num_bottleneck=arch.num_bottleneck,
        dropout_i=dropout_i,
        dropout_v=dropout_v,
        domain_adaptation=method is not Method.SOURCE_ONLY,
    )
    if method.late_fusion:
        pair = cfg.consensus_pair if method.cmc else None
        if pair is not None and not all(spatial[m] for m in pair):
            pair = None  # pooled inputs (1x1 maps): the consensus sub-module is skipped
        if method is Method.M3EM_CMC and pair is None:
            raise ConfigError(f"method {method.value}: CMC needs a consensus_pair of spatial modalities "
                              f"(consensus_pair = {cfg.consensus_pair}, spatial = {dict(spatial)})")
        m3em = M3EM(
            modalities,
            reduction=cfg.smr_reduction if method.smr else None,
            consensus_pair=pair,
            cmc_latent_channels=cfg.cmc_latent_channels,
            cmc_scales=cfg.cmc_scales,
            cmc_combine=cfg.cmc_combine,
            cmc_pooling=cfg.cmc_pooling,
        )
        branches = list(cfg.branches)
    else:
        m3em = None
        branches = [BranchSpec("all", tuple(m.name for m in modalities), 1.0)]
    return ActionModel(modalities, branches, n_verbs, n_nouns, num_frames=num_frames, m3em=m3em, ta3n_kwargs=ta3n_kwargs,
                       standardise=standardise)
