"""The ``detections:`` and ``crops:`` config sections as frozen dataclasses (see config.yaml)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class ClassRole(str, enum.Enum):
    """What a class id of the hand(-object) detector stands for."""

    HAND = "hand"              # a hand of unknown side
    LEFT_HAND = "left_hand"
    RIGHT_HAND = "right_hand"
    OBJECT = "object"          # a class-agnostic object (label -1), like the EPIC release
    IGNORE = "ignore"


class ObjectFeatureMode(str, enum.Enum):
    """How the per-frame object vector of model B is built (object_features.py)."""

    CLASS_SCORES = "class_scores"  # RULSTM: sum of scores per detector class; needs labelled objects
    AGNOSTIC = "agnostic"          # class-agnostic fallback: object + hand-contact channels


class FlowBox(str, enum.Enum):
    """Which RGB crop a flow frame (pairing RGB frames a and a+dilation) uses."""

    FIRST = "first"
    UNION = "union"


@dataclass(frozen=True)
class HandDetectorConfig:
    config_file: Path | None = None
    weights: Path | None = None
    class_roles: tuple[ClassRole, ...] = (ClassRole.HAND, ClassRole.OBJECT)
    hand_score_threshold: float = 0.1
    object_score_threshold: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_roles", tuple(ClassRole(r) for r in self.class_roles))


@dataclass(frozen=True)
class ObjectDetectorConfig:
    config_file: Path | None = None
    weights: Path | None = None
    score_threshold: float = 0.01


@dataclass(frozen=True)
class ObjectFeaturesConfig:
    mode: ObjectFeatureMode = ObjectFeatureMode.CLASS_SCORES
    score_threshold: float = 0.0
    n_positions: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ObjectFeatureMode(self.mode))


@dataclass(frozen=True)
class DetectionsConfig:
    """``detections:`` section."""

    frame_count_tolerance: float = 0.02
    device: str = "cpu"
    batch_size: int = 4
    frame_step: int = 1
    object_classes: str | int = "nouns"
    hand_detector: HandDetectorConfig = field(default_factory=HandDetectorConfig)
    object_detector: ObjectDetectorConfig = field(default_factory=ObjectDetectorConfig)
    object_features: ObjectFeaturesConfig = field(default_factory=ObjectFeaturesConfig)


@dataclass(frozen=True)
class CropsConfig:
    """``crops:`` section; sizes are fractions of the frame width / height."""

    hand_threshold: float = 0.5
    object_threshold: float = 0.5
    margin: float = 0.1
    min_size: float = 0.25
    smoothing_window: int = 5
    borrow_window: int = 25
    flow_box: FlowBox = FlowBox.UNION

    def __post_init__(self) -> None:
        object.__setattr__(self, "flow_box", FlowBox(self.flow_box))
        if not 0.0 < self.min_size <= 1.0:
            raise ValueError(f"crops.min_size must be in (0, 1], got {self.min_size}")
        if self.margin < 0:
            raise ValueError(f"crops.margin must be >= 0, got {self.margin}")
        if self.smoothing_window < 1 or self.borrow_window < 0:
            raise ValueError("crops.smoothing_window must be >= 1 and crops.borrow_window >= 0")
