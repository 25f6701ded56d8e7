"""The table of feature streams: every stream the pipeline can write or read, in one place.

A stream is one kind of per-segment feature file (``<features_dir>/<stream>/<video>.safetensors``,
:mod:`m3em.epic.features`). Everything that needs to know about streams reads this table: the
feature contract (spatial or vector shape), extraction (which backbone and which input),
prediction (whether the stream comes from hand-object boxes), the Snakemake rules (which job
writes it, which ones the organisers' pooled features replace) and the config schema (a test
checks that the schema's stream enums list exactly these names).

Adding a stream (depth, say) = one row here plus the code that computes its input
(:class:`extractors.backbones.inputs.VideoInputs`) and, for a new input kind, its case in
:mod:`extractors.extract`.
"""

from __future__ import annotations

import dataclasses
import enum


class Backbone(str, enum.Enum):
    """The network that writes a stream (``extractors.finetune --backbone`` / the rule wildcard)."""

    TBN = "tbn"
    I3D = "i3d"
    DETECTOR = "detector"  # hand-object detections turned into a per-frame vector (object features)


class InputKind(str, enum.Enum):
    """What the backbone of a stream reads from the video."""

    RGB = "rgb"
    FLOW = "flow"
    AUDIO = "audio"
    DETECTIONS = "detections"


@dataclasses.dataclass(frozen=True)
class FeatureStream:
    """One row of the table.

    Attributes:
        name: the stream's name in config files, paths and feature-file metadata.
        backbone: what writes it.
        input_kind: what it reads.
        spatial: ``[n, P, C, h, w]`` maps (True) or ``[n, P, C]`` vectors (False).
        crop: the input is cropped to the hand-object box (reads the crop table).
        channels: C, or None where the config decides (the object stream's detector classes).
        official: the organisers' pooled EPIC-100 features provide it (``inputs.official_features_dir``).
    """

    name: str
    backbone: Backbone
    input_kind: InputKind
    spatial: bool
    crop: bool
    channels: int | None
    official: bool = False

    @property
    def extracted(self) -> bool:
        """Written by ``extractors.extract`` (a TBN / I3D backbone), not by the object-feature job."""
        return self.backbone in (Backbone.TBN, Backbone.I3D)

    @property
    def uses_hand_object_boxes(self) -> bool:
        """Computed from hand-object boxes (crops or detections): SLS training-labels level 4."""
        return self.crop or self.input_kind is InputKind.DETECTIONS


_B, _K = Backbone, InputKind
#: Every stream, in the order extraction and reports list them.
STREAM_TABLE: tuple[FeatureStream, ...] = (
    FeatureStream("tbn_rgb", _B.TBN, _K.RGB, spatial=True, crop=False, channels=1024, official=True),
    FeatureStream("tbn_flow", _B.TBN, _K.FLOW, spatial=True, crop=False, channels=1024, official=True),
    FeatureStream("tbn_audio", _B.TBN, _K.AUDIO, spatial=False, crop=False, channels=1024, official=True),
    FeatureStream("tbn_crop_rgb", _B.TBN, _K.RGB, spatial=True, crop=True, channels=1024),
    FeatureStream("tbn_crop_flow", _B.TBN, _K.FLOW, spatial=True, crop=True, channels=1024),
    FeatureStream("i3d_rgb", _B.I3D, _K.RGB, spatial=True, crop=False, channels=1024),
    FeatureStream("i3d_flow", _B.I3D, _K.FLOW, spatial=True, crop=False, channels=1024),
    FeatureStream("object", _B.DETECTOR, _K.DETECTIONS, spatial=False, crop=False, channels=None),
)

#: Name -> row.
STREAM_INFO: dict[str, FeatureStream] = {s.name: s for s in STREAM_TABLE}
#: Every stream name.
STREAMS: tuple[str, ...] = tuple(s.name for s in STREAM_TABLE)
#: Streams stored as maps ``[n, P, C, h, w]``; the others are vectors ``[n, P, C]``.
SPATIAL_STREAMS: frozenset[str] = frozenset(s.name for s in STREAM_TABLE if s.spatial)
#: Streams ``extractors.extract`` writes (features.streams may list these).
EXTRACTED_STREAMS: tuple[str, ...] = tuple(s.name for s in STREAM_TABLE if s.extracted)
#: Streams the organisers' pooled features provide.
OFFICIAL_STREAMS: frozenset[str] = frozenset(s.name for s in STREAM_TABLE if s.official)


def stream_info(name: str) -> FeatureStream:
    """The row of ``name``; an unknown name is a ``KeyError`` listing the known ones."""
    try:
        return STREAM_INFO[name]
    except KeyError:
        raise KeyError(f"unknown feature stream {name!r}; known: {list(STREAMS)}") from None
