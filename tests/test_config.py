"""Config boundary: schema validation names keys; sections become frozen dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from m3em.epic.cli import load_job_config
from m3em.epic.config import (
    ConfigError,
    DataConfig,
    InputsConfig,
    build_dataclass,
    load_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_is_valid() -> None:
    cfg = load_config(REPO / "config.yaml")
    assert cfg["demo"]["enabled"] is True


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unknown_key_is_named(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"]["anotations_dir"] = "x"
    path = _write(tmp_path, cfg)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "data: unknown key(s) ['anotations_dir']" in str(err.value)


def test_unknown_top_level_section_is_named(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["modelz"] = {}
    with pytest.raises(ConfigError, match=r"<top level>: unknown key\(s\) \['modelz'\]"):
        validate_config(cfg)


def test_mistyped_value_is_named(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["demo"]["seed"] = "zero"
    with pytest.raises(ConfigError, match=r"demo.seed: 'zero' is not of type 'integer'"):
        validate_config(cfg)


def test_not_yaml_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@dataclasses.dataclass(frozen=True)
class _Inner:
    rate: float
    sizes: tuple[int, ...] = (1,)


@dataclasses.dataclass(frozen=True)
class _Outer:
    name: str
    inner: _Inner
    root: Path | None = None


def test_build_dataclass_nested_and_frozen() -> None:
    obj = build_dataclass(_Outer, {"name": "a", "inner": {"rate": 3, "sizes": [2, 3]}, "root": "x/y"}, "sec")
    assert obj.inner.rate == 3.0 and isinstance(obj.inner.rate, float)
    assert obj.inner.sizes == (2, 3)
    assert obj.root == Path("x/y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.name = "b"  # type: ignore[misc]


def test_build_dataclass_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sec.inner: unknown key\(s\) \['rat'\]"):
        build_dataclass(_Outer, {"name": "a", "inner": {"rat": 1}}, "sec")
    with pytest.raises(ConfigError, match="sec.inner: missing required key 'rate'"):
        build_dataclass(_Outer, {"name": "a", "inner": {}}, "sec")


def _merge(base: dict, over: dict) -> dict:
    """Key-by-key override, as Snakemake merges several --configfile files."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def test_epic100_overrides_give_a_valid_config() -> None:
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    over = yaml.safe_load((REPO / "configs" / "epic100.yaml").read_text())
    merged = _merge(base, over)
    validate_config(merged, "config.yaml + configs/epic100.yaml")
    assert merged["demo"]["enabled"] is False
    assert merged["flow"]["tvl1"]["max_iterations"] == 300 and merged["flow"]["tvl1"]["tau"] == 0.25
    assert merged["train"]["batch_size_target"] == 207


def test_method_names_and_cmc_options_are_checked() -> None:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    assert cfg["workflow"]["methods"] == ["source_only", "ta3n", "m3em"]  # the report's Table 1 rows
    for method in ("ta3n_late", "m3em_smr", "m3em_cmc"):
        cfg["workflow"]["methods"] = ["m3em", method]
        validate_config(cfg)
    cfg["workflow"]["methods"] = ["ta3n_m3em"]  # one spelling per method: the old run name is gone
    with pytest.raises(ConfigError, match=r"workflow.methods.0: 'ta3n_m3em' is not one of"):
        validate_config(cfg)
    cfg["workflow"]["methods"] = ["m3em"]
    cfg["models"]["A"]["cmc_combine"] = "max"
    cfg["models"]["A"]["cmc_pooling"] = "normalized"
    with pytest.raises(ConfigError, match=r"models.A.cmc_combine: 'max' is not one of.*\n.*models.A.cmc_pooling"):
        validate_config(cfg)


@dataclasses.dataclass(frozen=True)
class Job:
    data: DataConfig
    inputs: InputsConfig = InputsConfig()


def test_job_config_reads_only_its_sections(tmp_path) -> None:
    """load_job_config: the sections a job declares, as dataclasses; an empty optional path is unset."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["inputs"]["official_features_dir"] = ""  # the workflow treats "" as unset; so does the dataclass
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    job = load_job_config(path, Job)
    assert job.data.annotations_dir == Path(cfg["data"]["annotations_dir"])
    assert job.data.splits.validation == cfg["data"]["splits"]["validation"]
    assert job.inputs.official_features_dir is None
    assert job.inputs.official_detections_dir == Path(cfg["inputs"]["official_detections_dir"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_job_config(tmp_path / "missing.yaml", Job)
