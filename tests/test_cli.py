"""Every ``python -m`` entry point follows the one CLI convention of :mod:`m3em.epic.cli`.

A bad input (missing config, unreadable or corrupt file) is one line on stderr,
``<prog>: error: <file>: <problem>``, and exit status 1; any other exception is a bug and keeps
its traceback. The entry points are called in-process through their ``main(argv)``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EPIC_SLICE = REPO / "tests" / "data" / "epic"


@dataclass(frozen=True)
class EntryPoint:
    """One command: its module and the arguments of a call whose input ``bad(tmp)`` is missing.

    Attributes:
        module: the module run by ``python -m``.
        argv: the arguments, given the missing input and a scratch directory.
        bad: the missing (or unusable) input the error line must name.
    """

    module: str
    argv: Callable[[Path, Path], list[str]]
    bad: Callable[[Path], Path] = lambda tmp: tmp / "missing.yaml"


def _with_config(*rest: str) -> Callable[[Path, Path], list[str]]:
    """``--config <missing> rest...`` with ``{tmp}`` in ``rest`` replaced by the scratch directory."""
    return lambda bad, tmp: ["--config", str(bad), *(r.format(tmp=tmp) for r in rest)]


def _not_a_directory(tmp: Path) -> Path:
    (tmp / "afile").write_text("a file where a directory should be\n")
    return tmp / "afile"


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("m3em.submission", _with_config("--scores", "{tmp}/s.npz", "--out", "{tmp}/sub.zip")),
    EntryPoint("m3em.report", _with_config("--metrics", "{tmp}/m.json", "--benchmarks", "{tmp}/bench",
                                           "--figures", "{tmp}/fig", "--out", "{tmp}/report.md")),
    EntryPoint("m3em.ensemble", _with_config("--scores", "{tmp}/a.npz", "{tmp}/b.npz", "--out", "{tmp}/e.npz")),
    EntryPoint("m3em.epic.official_features", _with_config("--split", "target_test", "--features-dir", "{tmp}/f")),
    EntryPoint("m3em.evaluate", _with_config("--scores", "{tmp}/s.npz", "--split", "target_val",
                                             "--out", "{tmp}/m.json")),
    EntryPoint("extractors.extract", _with_config("--video-id", "P01_01", "--stream", "tbn_rgb",
                                                  "--checkpoint", "{tmp}/tbn.pt", "--frames", "{tmp}/f.tar")),
    EntryPoint("extractors.flow", _with_config("--video-id", "P01_01", "--video", "{tmp}/v.mp4",
                                               "--out", "{tmp}/flow.tar")),
    EntryPoint("extractors.detections.object_features",
               _with_config("--video-id", "P01_01", "--detections", "{tmp}/d.parquet", "--out", "{tmp}/o.safetensors")),
    EntryPoint("extractors.detections.crops",
               _with_config("--video-id", "P01_01", "--detections", "{tmp}/d.parquet", "--out", "{tmp}/c.parquet")),
    EntryPoint("extractors.detections.rulstm_objects",
               _with_config("--video-id", "P01_01", "--lmdb", "{tmp}/obj", "--out", "{tmp}/o.safetensors")),
    EntryPoint("extractors.detections.draw",
               _with_config("--video-id", "P01_01", "--video", "{tmp}/v.mp4", "--detections", "{tmp}/d.parquet",
                            "--crops", "{tmp}/c.parquet", "--out", "{tmp}/check.png")),
    EntryPoint("extractors.detections.convert",
               _with_config("--video-id", "P01_01", "--input", "{tmp}/P01_01.pkl", "--out", "{tmp}/d.parquet")),
    EntryPoint("extractors.detections.detect",
               _with_config("--video-id", "P01_01", "--video", "{tmp}/v.mp4", "--out", "{tmp}/d.parquet")),
    EntryPoint("epic_demo", _with_config("--out-dir", "{tmp}/demo")),
    EntryPoint("m3em.train", _with_config("--model", "A", "--method", "m3em", "--out-dir", "{tmp}/run")),
    EntryPoint("m3em.predict", _with_config("--checkpoint", "{tmp}/model.pt", "--split", "target_val",
                                            "--out", "{tmp}/s.npz")),
    EntryPoint("extractors.finetune", _with_config("--backbone", "tbn", "--out", "{tmp}/ft/checkpoint.pt",
                                                   "--video", "{tmp}/P01_01.MP4")),
    # No --config: the missing input is another file.
    EntryPoint("m3em.tables", lambda bad, tmp: ["--table", "1", "--metrics", str(bad), "--out-md", str(tmp / "t.md"),
                                                "--out-csv", str(tmp / "t.csv")],
               bad=lambda tmp: tmp / "missing.json"),
    EntryPoint("m3em.check_submission", lambda bad, tmp: [str(tmp / "sub.zip"), "--annotations", str(bad)],
               bad=lambda tmp: tmp / "no_annotations"),
    EntryPoint("m3em.synthetic", lambda bad, tmp: ["--out-dir", str(bad / "out"), "--videos", "1", "1", "1", "1",
                                                   "--segments-per-video", "2"],
               bad=_not_a_directory),
)


def _main(module: str) -> Callable[[list[str]], int]:
    mod = importlib.import_module("epic_demo.__main__" if module == "epic_demo" else module)
    return mod.main


def _one_error_line(err: str, module: str) -> str:
    """The message of the single ``python -m <module>: error: ...`` line that ``err`` must be."""
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one line on stderr, got:\n{err}"
    prefix = f"python -m {module}: error: "
    assert err.startswith(prefix), err
    return err[len(prefix):-1]


def test_every_entry_point_is_covered():
    """A new ``python -m`` module must join ENTRY_POINTS."""
    found = set()
    for package in ("m3em", "extractors", "epic_demo"):
        for path in (REPO / package).rglob("*.py"):
            if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"):
                parts = path.relative_to(REPO).with_suffix("").parts
                found.add(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    assert found == {e.module for e in ENTRY_POINTS}


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e.module)
def test_missing_input_is_one_line_and_exit_1(entry: EntryPoint, tmp_path: Path, capsys) -> None:
    bad = entry.bad(tmp_path)
    assert _main(entry.module)(entry.argv(bad, tmp_path)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    message = _one_error_line(err, entry.module)
    assert str(bad) in message, message


def test_argument_errors_stay_argparse_errors(capsys) -> None:
    """A missing required argument is argparse's usage error (exit 2), not an input error."""
    with pytest.raises(SystemExit) as exc:
        _main("extractors.detections.crops")(["--video-id", "v"])
    assert exc.value.code == 2
    assert "the following arguments are required: --config" in capsys.readouterr().err


@pytest.mark.parametrize("bug", [ZeroDivisionError, ValueError, RuntimeError, KeyError, OSError])
def test_a_bug_keeps_its_traceback(bug: type[BaseException], tmp_path: Path, monkeypatch) -> None:
    """Exceptions that are not bad inputs propagate (extractors.flow caught ValueError,
    RuntimeError and OSError before and turned them into exit 1)."""
    import extractors.flow as flow

    def broken(*args, **kwargs):
        raise bug("a bug inside the stage")

    monkeypatch.setattr(flow, "open_frames", broken)
    with pytest.raises(bug, match="a bug inside the stage"):
        flow.main(["--config", str(REPO / "config.yaml"), "--video-id", "v", "--video", str(tmp_path / "v.mp4"),
                   "--out", str(tmp_path / "flow.tar"), "--fps", "50", "--no-progress"])
    assert not (tmp_path / "flow.tar").exists()


def test_a_bug_in_a_detection_command_keeps_its_traceback(tmp_path: Path, monkeypatch) -> None:
    from extractors.detections import crops

    monkeypatch.setattr(crops, "read_detection_table", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        crops.main(["--config", str(REPO / "config.yaml"), "--video-id", "v", "--detections",
                    str(tmp_path / "d.parquet"), "--out", str(tmp_path / "c.parquet")])


def test_corrupt_detection_table_is_one_line(tmp_path: Path, capsys) -> None:
    from extractors.detections import crops

    det = tmp_path / "P01_01.parquet"
    det.write_bytes(b"not a parquet file\n" * 10)
    out = tmp_path / "P01_01.crops.parquet"
    assert crops.main(["--config", str(REPO / "config.yaml"), "--video-id", "P01_01", "--detections", str(det),
                       "--out", str(out)]) == 1
    message = _one_error_line(capsys.readouterr().err, "extractors.detections.crops")
    assert message.startswith(f"{det}: not a readable Parquet file"), message
    assert not out.exists()


def test_corrupt_score_file_is_one_line(tmp_path: Path, capsys) -> None:
    from m3em import evaluate

    cfg = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    cfg["data"]["annotations_dir"] = str(EPIC_SLICE)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    scores = tmp_path / "scores.npz"
    scores.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "metrics.json"
    assert evaluate.main(["--config", str(config), "--scores", str(scores), "--split", "target_val",
                          "--out", str(out)]) == 1
    message = _one_error_line(capsys.readouterr().err, "m3em.evaluate")
    assert message.startswith(f"{scores}: "), message
    assert not out.exists()


def test_invalid_config_is_one_line_naming_file_and_key(tmp_path: Path, capsys) -> None:
    """A config that fails the schema: its (multi-line) list of problems becomes one line."""
    from m3em import ensemble

    cfg = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    cfg["ensemble"]["no_such_key"] = 1
    cfg["data"]["annotations_dirr"] = "typo"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert ensemble.main(["--config", str(config), "--scores", str(tmp_path / "a.npz"),
                          "--out", str(tmp_path / "e.npz")]) == 1
    message = _one_error_line(capsys.readouterr().err, "m3em.ensemble")
    assert message.startswith(f"{config}: invalid configuration")
    assert re.search(r"data: unknown key\(s\) \['annotations_dirr'\]", message), message
    assert "no_such_key" in message
