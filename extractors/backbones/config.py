"""Frozen dataclasses of the ``backbones:`` and ``finetune:`` config sections (``features:`` is
:class:`m3em.epic.features.FeaturesConfig`: the trainer reads it too).

Built at the entry points as fields of their job config (:func:`m3em.epic.cli.load_job_config`);
every field is documented next to its key in ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class TBNConfig:
    """``backbones.tbn``: initial weights, input side, fusion dropout."""

    tbn_checkpoint: Path | None = None
    imagenet_checkpoint: Path | None = None
    kinetics_flow_checkpoint: Path | None = None
    input_size: int = 224
    dropout: float = 0.5


@dataclasses.dataclass(frozen=True)
class I3DConfig:
    """``backbones.i3d``: initial weights, input side, clip length."""

    rgb_checkpoint: Path | None = None
    flow_checkpoint: Path | None = None
    input_size: int = 224
    clip_length: int = 16
    dropout: float = 0.5


@dataclasses.dataclass(frozen=True)
class BackbonesConfig:
    tbn: TBNConfig = TBNConfig()
    i3d: I3DConfig = I3DConfig()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One backbone's fine-tuning schedule (``finetune.tbn`` / ``finetune.i3d``)."""

    epochs: int = 80
    batch_size: int = 64
    num_segments: int = 6
    lr: float = 0.01
    flow_lr: float | None = 0.001
    lr_steps: tuple[int, ...] = (40, 60)
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = 20.0
    partial_bn: bool = True


#: How many source segments :func:`extractors.finetune.recalibrate_batchnorm` passes by default.
BN_RECALIBRATION_SEGMENTS = 256


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """``finetune``: device and loader settings shared by both backbones, plus one recipe each."""

    device: str = "cuda"
    amp: bool = True
    num_workers: int = 8
    seed: int = 0
    max_train_segments: int | None = None
    bn_recalibration_segments: int = BN_RECALIBRATION_SEGMENTS
    tbn: Recipe = Recipe()
    i3d: Recipe = Recipe(epochs=40, batch_size=16, num_segments=1, flow_lr=None, lr_steps=(20, 30),
                         weight_decay=1e-7, partial_bn=False)
