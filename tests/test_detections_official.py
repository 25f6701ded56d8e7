"""Official EPIC-100 hand-object pickle format: schema, round trip and bad input."""

from __future__ import annotations

import pickle

import pytest

from extractors.detections import proto_schema
from extractors.detections.official import (
    DetectionFileError,
    FrameDetections,
    HandBox,
    ObjectBox,
    read_official_detections,
    write_official_detections,
)


def _frames(n: int = 3) -> list[FrameDetections]:
    out = []
    for i in range(n):
        hands = (HandBox(0.125, 0.25, 0.5, 0.75, 0.875, 1, 3, 0.25, -0.5),) if i % 2 == 0 else ()
        objects = (ObjectBox(0.0, 0.5, 1.0, 1.0, 0.5), ObjectBox(0.25, 0.25, 0.5, 0.5, 0.125)) if i != 1 else ()
        out.append(FrameDetections(i + 1, hands, objects))
    return out


def test_schema_field_numbers_match_the_published_schema():
    fields = {
        name: {f.name: (f.number, f.type, f.is_repeated) for f in cls.DESCRIPTOR.fields}
        for name, cls in proto_schema.build_message_classes().items()
    }
    fd = proto_schema.descriptor_pb2.FieldDescriptorProto
    assert proto_schema.Detections.DESCRIPTOR.full_name == "model.detections.Detections"
    assert fields["Detections"] == {
        "video_id": (1, fd.TYPE_STRING, False), "frame_number": (2, fd.TYPE_INT32, False),
        "hands": (3, fd.TYPE_MESSAGE, True), "objects": (4, fd.TYPE_MESSAGE, True),
    }
    assert {k: v[0] for k, v in fields["HandDetection"].items()} == {
        "bbox": 1, "score": 2, "state": 3, "object_offset": 4, "side": 5}
    assert {k: v[0] for k, v in fields["BBox"].items()} == {"left": 1, "top": 2, "right": 3, "bottom": 4}
    assert {k: v[0] for k, v in fields["ObjectDetection"].items()} == {"bbox": 1, "score": 2}
    assert {k: v[0] for k, v in fields["FloatVector"].items()} == {"x": 1, "y": 2}
    states = proto_schema.HandDetection.DESCRIPTOR.enum_types_by_name["HandState"]
    assert {v.name: v.number for v in states.values} == {
        "NO_CONTACT": 0, "SELF_CONTACT": 1, "ANOTHER_PERSON": 2, "PORTABLE_OBJECT": 3, "STATIONARY_OBJECT": 4}


def test_wire_format_is_stable():
    # Hand-assembled bytes: field 1 (string) "V", field 2 (varint) 7, field 4 object with bbox.left=0.5.
    raw = b"\x0a\x01V\x10\x07" + b"\x22\x07\x0a\x05\x0d\x00\x00\x00\x3f"
    msg = proto_schema.Detections.FromString(raw)
    assert (msg.video_id, msg.frame_number, msg.objects[0].bbox.left) == ("V", 7, 0.5)


def test_parse_rejects_unsupported_syntax():
    with pytest.raises(proto_schema.ProtoSchemaError, match="unsupported"):
        proto_schema.parse_proto('syntax = "proto3"; import "x.proto";')
    with pytest.raises(proto_schema.ProtoSchemaError, match="unknown type"):
        proto_schema.parse_proto('syntax = "proto3"; message A { Foo f = 1; }')


def test_round_trip(tmp_path):
    path = tmp_path / "P01_01.pkl"
    frames = _frames(5)
    write_official_detections(path, "P01_01", frames)
    assert read_official_detections(path, video_id="P01_01", n_frames=5) == frames  # values exact in float32
    raw = pickle.loads(path.read_bytes())
    assert isinstance(raw, list) and all(isinstance(b, bytes) for b in raw)


def test_wrong_video_and_frame_count(tmp_path):
    path = tmp_path / "P01_01.pkl"
    write_official_detections(path, "P01_01", _frames(3))
    with pytest.raises(DetectionFileError, match=r"P01_01\.pkl.*expected 'P02_03'"):
        read_official_detections(path, video_id="P02_03")
    with pytest.raises(DetectionFileError, match=r"P01_01\.pkl: holds 3 frames, but the video has 4"):
        read_official_detections(path, n_frames=4)


def test_out_of_order_and_out_of_range(tmp_path):
    path = tmp_path / "v.pkl"
    with pytest.raises(DetectionFileError, match="expected 2"):
        write_official_detections(path, "v", [FrameDetections(1), FrameDetections(3)])
    with pytest.raises(DetectionFileError, match=r"outside \[0, 1\]"):
        write_official_detections(path, "v", [FrameDetections(1, (), (ObjectBox(0.1, 0.1, 1.2, 0.5, 0.5),))])
    assert not path.exists()
    # Files written by someone else: build the messages directly.
    msgs = [proto_schema.Detections(video_id="v", frame_number=n) for n in (1, 3)]
    path.write_bytes(pickle.dumps([m.SerializeToString() for m in msgs]))
    with pytest.raises(DetectionFileError, match=r"v\.pkl: entry 1 has frame_number 3"):
        read_official_detections(path)
    bad = proto_schema.Detections(video_id="v", frame_number=1)
    o = bad.objects.add(score=0.5)
    o.bbox.left, o.bbox.right, o.bbox.bottom = 0.2, 1.5, 0.5
    path.write_bytes(pickle.dumps([bad.SerializeToString()]))
    with pytest.raises(DetectionFileError, match=r"v\.pkl: frame 1: box .* outside \[0, 1\]"):
        read_official_detections(path)


def test_corrupt_and_unsafe_pickles(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DetectionFileError, match=r"bad\.pkl"):
        read_official_detections(path)
    path.write_bytes(pickle.dumps([b"\xff\xff\xff"]))
    with pytest.raises(DetectionFileError, match=r"bad\.pkl: entry 0 is not a valid Detections protobuf"):
        read_official_detections(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DetectionFileError, match="expected a list"):
        read_official_detections(path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DetectionFileError, match=r"bad\.pkl.*refusing to unpickle builtins\.print"):
        read_official_detections(path)
    with pytest.raises(DetectionFileError, match="not found"):
        read_official_detections(tmp_path / "missing.pkl")


def test_python2_style_bytes_are_accepted(tmp_path):
    # Protocol 2 pickles bytes through _codecs.encode, which the safe loader allows.
    path = tmp_path / "v.pkl"
    msg = proto_schema.Detections(video_id="v", frame_number=1)
    path.write_bytes(pickle.dumps([msg.SerializeToString()], protocol=2))
    assert read_official_detections(path, video_id="v", n_frames=1) == [FrameDetections(1)]
