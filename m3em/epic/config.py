"""Configuration at the boundary: YAML -> JSON-schema validation -> frozen dataclasses.

The schema (``config.schema.yaml`` next to this module, shipped in the package) is the single description of every knob; it
sets ``additionalProperties: false`` everywhere, so an unknown or misspelt key is an error that
names the key. After validation each stage turns *its own* section into the frozen dataclass it
declares (``build_dataclass(FlowConfig, cfg["flow"], "flow")``) and passes that as typed
arguments; no dict travels through the code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from m3em.epic.errors import InputError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

T = TypeVar("T")


class ConfigError(ValueError, InputError):
    """A configuration file or value that does not satisfy the schema."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """Read the config schema (YAML-encoded JSON schema)."""
    if not path.exists():
        raise ConfigError(f"{path}: config schema not found (it ships with the m3em package; reinstall it)")
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{where}: unknown key(s) {extra}; allowed keys: {allowed}"
    return f"{where}: {error.message}"


def validate_config(cfg: Mapping[str, Any], source: str = "<config>", schema: dict | None = None) -> None:
    """Validate a config mapping against the schema; raise :class:`ConfigError` listing every problem.

    Args:
        cfg: the parsed configuration.
        source: file name (or description) used in the error message.
        schema: schema to use; defaults to the repository schema.
    """
    schema = load_schema() if schema is None else schema
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n  ".join(_describe(e) for e in errors)
        raise ConfigError(f"{source}: invalid configuration:\n  {lines}")


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config file; return the validated plain mapping.

    The mapping is only handed to :func:`build_dataclass` (one section at a time); entry points
    never pass it further down.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(cfg).__name__}")
    validate_config(cfg, str(path))
    return cfg


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return build_dataclass(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if value == "" and type(None) in args and Path in args:
            return None  # an empty optional path means unset, as in the workflow (not Path("."))
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, where)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        vt = args[1] if len(args) == 2 else Any
        # Read-only mapping: frozen dataclasses must not hide a mutable dict.
        return types.MappingProxyType({k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()})
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def build_dataclass(cls: type[T], section: Mapping[str, Any], where: str) -> T:
    """Build the frozen dataclass ``cls`` from one validated config section.

    Nested dataclass fields are built recursively, lists become tuples. Keys the dataclass does
    not know are an error naming the key (the schema should already have caught them; this guards
    against the schema and the code drifting apart).

    Args:
        cls: the dataclass type.
        section: the mapping for this section.
        where: dotted path of the section, used in error messages.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    kwargs = {}
    for name, field in fields.items():
        if name in section:
            kwargs[name] = _convert(hints[name], section[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r} for {cls.__name__}")
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class SplitsConfig:
    """``data.splits``: which annotation split plays which role."""

    source_train: str = "source_train"
    target_train: str = "target_train"
    validation: str = "target_val"
    test: str = "target_test"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The ``data:`` section: where the annotations and videos are, where results go."""

    annotations_dir: Path
    videos_dir: Path
    video_ext: str = ".MP4"
    results_dir: Path = Path("results")
    splits: SplitsConfig = SplitsConfig()


@dataclasses.dataclass(frozen=True)
class InputsConfig:
    """The ``inputs:`` section: official pre-computed inputs that replace a stage (None = compute it)."""

    official_frames_dir: Path | None = None
    official_flow_dir: Path | None = None
    official_detections_dir: Path | None = None
    official_features_dir: Path | None = None
    official_object_features_dir: Path | None = None
