"""The layering of docs/architecture.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from workflow_util import REPO

PACKAGES = ("m3em", "extractors", "epic_demo")


def _project_imports(path: Path) -> set[str]:
    """Dotted names of the project modules ``path`` imports (absolute imports; relative ones stay inside)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PACKAGES + ("tests", "benchmarks", "workflow")}


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


RULES = {
    # room: the project modules it may import
    "m3em/epic": ("m3em.epic",),
    "m3em/runtime.py": ("m3em.epic",),
    "extractors": ("extractors", "m3em.epic", "m3em.runtime"),
    "m3em": ("m3em",),
    "epic_demo": ("epic_demo", "m3em.epic", "extractors.detections.official"),
}


@pytest.mark.parametrize("room", list(RULES))
def test_rooms_import_only_their_layers(room):
    target = REPO / room
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert files, room
    bad = []
    for path in files:
        for name in _project_imports(path):
            if not _allowed(name, RULES[room]):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_data_layer_ships_its_schema():
    """The installed package reads its schema from inside itself, not from a checkout folder."""
    from m3em.epic.config import SCHEMA_PATH

    assert SCHEMA_PATH.parent == REPO / "m3em" / "epic" and SCHEMA_PATH.is_file()
    assert not (REPO / "workflow" / "schemas").exists()
