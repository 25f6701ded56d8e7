"""Message classes for the official hand-object schema, built from ``hoa_detections.proto``.

The EPIC support library ships a protoc-generated module; this project instead parses its own
copy of the schema (``hoa_detections.proto`` beside this file, the single source of truth) with
a small parser for the proto3 subset it uses (``syntax``, ``package``, messages with scalar,
message and enum fields, ``repeated``, nested enums) and builds the classes at import time with
``descriptor_pool`` + ``message_factory``. There is no generated code to regenerate: editing the
``.proto`` changes the classes. Anything outside the subset is a :class:`ProtoSchemaError`, never
silently ignored.

A private ``DescriptorPool`` keeps these classes apart from the default pool, so the official
library (which registers the same package) can be imported alongside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from m3em.epic.errors import InputError

PROTO_PATH = Path(__file__).with_name("hoa_detections.proto")

_SCALARS = {
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}

_TOKEN = re.compile(r'\s*(?:(//[^\n]*)|("[^"]*")|([A-Za-z_][A-Za-z0-9_.]*)|(-?\d+)|([{};=]))')


class ProtoSchemaError(ValueError, InputError):
    """The .proto text is outside the supported subset or malformed."""


def _tokenize(text: str, source: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            line = text.count("\n", 0, pos) + 1
            raise ProtoSchemaError(f"{source}:{line}: unexpected text {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group(1) is None:  # drop comments
            tokens.append(m.group(0).strip())
    return tokens


@dataclass
class _Message:
    name: str
    fields: list[tuple[str, str, int, bool]] = field(default_factory=list)  # (type, name, number, repeated)
    enums: list[tuple[str, list[tuple[str, int]]]] = field(default_factory=list)


class _Parser:
    def __init__(self, tokens: list[str], source: str) -> None:
        self.tokens, self.i, self.source = tokens, 0, source

    def next(self) -> str:
        if self.i >= len(self.tokens):
            raise ProtoSchemaError(f"{self.source}: unexpected end of file")
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, want: str) -> None:
        got = self.next()
        if got != want:
            raise ProtoSchemaError(f"{self.source}: expected {want!r}, got {got!r}")

    def enum(self) -> tuple[str, list[tuple[str, int]]]:
        name = self.next()
        self.expect("{")
        values: list[tuple[str, int]] = []
        while (tok := self.next()) != "}":
            self.expect("=")
            values.append((tok, int(self.next())))
            self.expect(";")
        if not values or values[0][1] != 0:
            raise ProtoSchemaError(f"{self.source}: proto3 enum {name} must start with a value 0")
        return name, values

    def message(self) -> _Message:
        msg = _Message(self.next())
        self.expect("{")
        while (tok := self.next()) != "}":
            if tok == "enum":
                msg.enums.append(self.enum())
                continue
            repeated = tok == "repeated"
            type_name = self.next() if repeated else tok
            name = self.next()
            self.expect("=")
            number = int(self.next())
            self.expect(";")
            msg.fields.append((type_name, name, number, repeated))
        return msg

    def file(self) -> tuple[str, list[_Message]]:
        package, messages = "", []
        while self.i < len(self.tokens):
            tok = self.next()
            if tok == "syntax":
                self.expect("=")
                if self.next() != '"proto3"':
                    raise ProtoSchemaError(f"{self.source}: only proto3 is supported")
                self.expect(";")
            elif tok == "package":
                package = self.next()
                self.expect(";")
            elif tok == "message":
                messages.append(self.message())
            else:
                raise ProtoSchemaError(f"{self.source}: unsupported top-level statement {tok!r}")
        return package, messages


def parse_proto(text: str, *, filename: str = "hoa_detections.proto") -> descriptor_pb2.FileDescriptorProto:
    """Parse the supported proto3 subset into a ``FileDescriptorProto``."""
    package, messages = _Parser(_tokenize(text, filename), filename).file()
    fdp = descriptor_pb2.FileDescriptorProto(name=filename, package=package, syntax="proto3")
    message_names = {m.name for m in messages}
    for msg in messages:
        mdp = fdp.message_type.add(name=msg.name)
        enum_names = {name for name, _ in msg.enums}
        for enum_name, values in msg.enums:
            edp = mdp.enum_type.add(name=enum_name)
            for value_name, number in values:
                edp.value.add(name=value_name, number=number)
        numbers: set[int] = set()
        for type_name, name, number, repeated in msg.fields:
            if number in numbers:
                raise ProtoSchemaError(f"{filename}: {msg.name}.{name} reuses field number {number}")
            numbers.add(number)
            fd = mdp.field.add(name=name, number=number)
            fd.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                        else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if type_name in _SCALARS:
                fd.type = _SCALARS[type_name]
            elif type_name in enum_names:
                fd.type = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
                fd.type_name = f".{package}.{msg.name}.{type_name}"
            elif type_name in message_names:
                fd.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                fd.type_name = f".{package}.{type_name}"
            else:
                raise ProtoSchemaError(f"{filename}: {msg.name}.{name} has unknown type {type_name!r}")
    return fdp


def build_message_classes(proto_path: Path = PROTO_PATH) -> dict[str, type]:
    """Message classes by short name (``Detections``, ``HandDetection``, ...)."""
    fdp = parse_proto(proto_path.read_text(encoding="utf-8"), filename=proto_path.name)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    file_desc = pool.FindFileByName(fdp.name)
    return {name: message_factory.GetMessageClass(desc) for name, desc in file_desc.message_types_by_name.items()}


_CLASSES = build_message_classes()
Detections = _CLASSES["Detections"]
HandDetection = _CLASSES["HandDetection"]
ObjectDetection = _CLASSES["ObjectDetection"]
BBox = _CLASSES["BBox"]
FloatVector = _CLASSES["FloatVector"]
