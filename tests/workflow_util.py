"""Helpers for the workflow tests: run the repository's Snakefile in a scratch directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"


def demo_config(**overrides: Any) -> dict:
    """The repository's config.yaml with the tiny demo and dotted-key overrides (``"demo.size": "tiny"``).

    Evaluation on target_val only (the tests count jobs for it; the default config also scores
    source_val, which ``test_demo_dag_from_empty_directory`` covers)."""
    with open(REPO / "config.yaml", encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg["demo"]["size"] = "tiny"
    cfg["evaluate"]["splits"] = ["target_val"]
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def write_config(workdir: Path, cfg: Mapping[str, Any]) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False), encoding="utf-8")
    return path


def job_env() -> dict[str, str]:
    """Environment whose `python` is this interpreter (the rules call `python -m ...`)."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def snakemake(workdir: Path, *args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run Snakemake on the repository's Snakefile with ``workdir`` as working directory.

    The working directory holds config.yaml (the Snakefile's ``configfile:``) and results/.
    """
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def output(proc: subprocess.CompletedProcess) -> str:
    """Everything Snakemake printed (it logs to stderr, dry-run job lists to stdout)."""
    return proc.stdout + "\n" + proc.stderr


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule from a (dry-)run's "Job stats" table; {} when there is nothing to do."""
    text = proc.stdout + "\n" + proc.stderr
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", text, re.S)
    if not m:
        if "Nothing to be done" in text:
            return {}
        raise AssertionError(f"no job stats in Snakemake output:\n{text}")
    counts = {}
    for line in m.group(1).splitlines():
        name, n = line.split()
        counts[name] = int(n)
    return counts


def jobs_of(counts: Mapping[str, int], rules: Sequence[str]) -> dict[str, int]:
    return {r: counts[r] for r in rules if r in counts}
