"""The table of feature streams is the one list: the schema, the contract and extraction agree with it."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.extract import TBN_MODALITY, backbone_of
from m3em.epic.config import load_schema
from m3em.epic.features import FeatureFileError, write_features
from m3em.epic.streams import (
    EXTRACTED_STREAMS,
    OFFICIAL_STREAMS,
    SPATIAL_STREAMS,
    STREAM_TABLE,
    STREAMS,
    Backbone,
    InputKind,
    stream_info,
)
from m3em.methods import Method


def _model_section(schema: dict) -> dict:
    (model,) = schema["properties"]["models"]["patternProperties"].values()
    return model["properties"]


def test_schema_stream_enums_are_the_table():
    schema = load_schema()
    modality = _model_section(schema)["modalities"]["additionalProperties"]["properties"]
    assert modality["stream"]["enum"] == list(STREAMS)
    assert schema["properties"]["features"]["properties"]["streams"]["items"]["enum"] == list(EXTRACTED_STREAMS)


def test_schema_method_enums_are_the_methods():
    schema = load_schema()
    names = [m.value for m in Method]
    wf = schema["properties"]["workflow"]["properties"]
    assert wf["methods"]["items"]["enum"] == names
    assert wf["ensemble_method"]["enum"] == names
    assert _model_section(schema)["methods"]["items"]["enum"] == names


def test_table_is_consistent():
    assert len(set(STREAMS)) == len(STREAMS)
    for s in STREAM_TABLE:
        if s.extracted:  # a TBN / I3D stream has a fixed width and a network input
            assert s.channels is not None and s.input_kind is not InputKind.DETECTIONS
            assert backbone_of(s.name) == s.backbone.value
        if s.backbone is Backbone.TBN:
            assert s.input_kind in TBN_MODALITY
        if s.backbone is Backbone.I3D:  # I3D takes clips of whole frames: no crop, no sound
            assert s.input_kind in (InputKind.RGB, InputKind.FLOW) and not s.crop
    assert OFFICIAL_STREAMS <= set(EXTRACTED_STREAMS)
    assert {s for s in STREAMS if stream_info(s).uses_hand_object_boxes} == {"tbn_crop_rgb", "tbn_crop_flow", "object"}
    with pytest.raises(KeyError, match="known"):
        stream_info("depth")


@pytest.mark.parametrize("stream", STREAMS)
def test_contract_shape_follows_the_table(tmp_path, stream):
    """Spatial streams are written as maps [n, P, C, h, w], the others as vectors [n, P, C]."""
    frames = np.ones((1, 2), np.int64)
    maps, vectors = np.zeros((1, 2, 4, 2, 2), np.float32), np.zeros((1, 2, 4), np.float32)
    good, bad = (maps, vectors) if stream in SPATIAL_STREAMS else (vectors, maps)
    write_features(tmp_path / "ok.safetensors", good, ["n1"], frames, stream=stream, video_id="P01_01")
    with pytest.raises(FeatureFileError, match="needs"):
        write_features(tmp_path / "bad.safetensors", bad, ["n1"], frames, stream=stream, video_id="P01_01")
