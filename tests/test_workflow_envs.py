"""Static checks of the conda environments (no conda here): every env parses and is pinned, every
rule names one, and every third-party module a rule's entry point imports (transitively through
the project's packages) is installed by that rule's env."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from workflow_util import REPO

ENVS = REPO / "envs"
PROJECT_PACKAGES = ("m3em", "extractors", "epic_demo")
#: Conda package names whose PyPI distribution has another name.
CONDA_TO_PYPI = {"pytorch": "torch", "pyyaml": "pyyaml", "py-opencv": "opencv-python"}
#: Conda packages that are tools, not Python imports.
CONDA_TOOLS = {"python", "pip", "cxx-compiler", "ninja"}
GIT_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+) @ git\+https://\S+\.git@[0-9a-f]{40}$")
PIP_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.\[\]-]+)==[0-9][0-9A-Za-z.+!-]*$")
CONDA_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)=[0-9][0-9A-Za-z.*+_-]*$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


@cache
def env_packages(path: Path) -> frozenset[str]:
    """Normalised PyPI distribution names an env installs (conda names translated)."""
    env = yaml.safe_load(path.read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                m = GIT_PIN.match(line) or PIP_PIN.match(line.split("#")[0].strip())
                names.add(_norm(m.group("name").split("[")[0]))
        else:
            name = CONDA_PIN.match(dep).group("name")
            names.add(_norm(CONDA_TO_PYPI.get(name, name)))
    return frozenset(names)


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_parses_and_is_pinned(path):
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"name", "channels", "dependencies"}, f"{path}: unexpected keys {sorted(env)}"
    assert env["channels"][0] == "conda-forge" and "nodefaults" in env["channels"]
    pips = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pips) == 1 and set(pips[0]) == {"pip"}, f"{path}: one pip section"
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            assert CONDA_PIN.match(dep), f"{path}: conda dependency {dep!r} is not pinned (name=version)"
    for line in pips[0]["pip"]:
        spec = line.split("#")[0].strip()
        assert PIP_PIN.match(spec) or GIT_PIN.match(spec), f"{path}: pip dependency {line!r} is not pinned"
    assert "python" in {CONDA_PIN.match(d).group("name") for d in env["dependencies"] if isinstance(d, str)}


def test_detect_env_builds_detectron2_from_git():
    env = yaml.safe_load((ENVS / "detect.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(GIT_PIN.match(p) and "github.com/facebookresearch/detectron2.git@" in p for p in pip)
    # setup.py imports torch: it must come from conda, installed before the pip section runs.
    assert any(isinstance(d, str) and d.startswith("pytorch=") for d in env["dependencies"])


# ---------------------------------------------------------------------------------------------
# Rules -> (env, entry module)


def rules() -> list[tuple[str, str, str]]:
    """(rule, env name, entry module) for every rule with a shell command."""
    out = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        # A rule's block runs from its header to the next header at the same or lower indentation.
        for m in re.finditer(r"^(?P<ind> *)rule (?P<name>\w+):\n(?P<body>(?:(?P=ind) +.*\n|\s*\n)*)", text, re.M):
            body = m.group("body")
            mod = re.search(r' -m ([\w.]+)', body)
            envm = re.search(r'env\("(\w+)"\)', body)
            assert mod and envm, f"{smk}: rule {m.group('name')} needs conda: env(...) and a `-m <module>` entry point"
            out.append((m.group("name"), envm.group(1), mod.group(1)))
    return out


def test_every_rule_has_an_env_and_an_entry_point():
    found = rules()
    assert len(found) >= 15
    for rule, env, module in found:
        assert (ENVS / f"{env}.yaml").exists(), f"rule {rule}: envs/{env}.yaml missing"
        assert module.split(".")[0] in PROJECT_PACKAGES, f"rule {rule}: {module} is not a project entry point"


@cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py", base / "__main__.py"):
        if cand.exists():
            return cand
    return None


def third_party_imports(module: str) -> dict[str, str]:
    """Top-level third-party import names -> the project module importing them (transitively)."""
    seen: set[str] = set()
    found: dict[str, str] = {}
    todo = [module]
    if _module_file(module) and (REPO.joinpath(*module.split(".")) / "__main__.py").exists():
        todo.append(f"{module}.__main__")
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is None:
            continue
        # Importing a submodule runs its packages' __init__ too.
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                pkg = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                base = ".".join(pkg + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT_PACKAGES:
                    todo.append(name)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, mod)
    return found


@pytest.mark.parametrize("rule,env,module", rules(), ids=lambda x: x if isinstance(x, str) else None)
def test_entry_point_imports_are_in_its_env(rule, env, module):
    assert _module_file(module) is not None, f"rule {rule}: entry point {module} not found"
    dists = _distributions()
    have = env_packages(ENVS / f"{env}.yaml")
    missing = []
    for name, where in sorted(third_party_imports(module).items()):
        candidates = {_norm(d) for d in dists.get(name, [name])}
        if not candidates & have:
            missing.append(f"{name} (imported by {where}; distribution {sorted(candidates)})")
    assert not missing, f"rule {rule}: envs/{env}.yaml lacks " + ", ".join(missing)
