"""The GPU suite (benchmarks/gpu_suite.py) in its CPU mode, so that it cannot rot between GPU loans.

The CPU mode runs every code path that does not need CUDA and must name each part it skips;
one failing check must be recorded while the others still run, with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "gpu_suite.py"


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # The script imports the project's packages as installed; a checkout that is not installed
    # (a developer's worktree) finds them through PYTHONPATH.
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, str(SUITE), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    # No time budget here: on a loaded CI machine a skipped check would hide a broken one.
    proc = _run("--device", "cpu", "--quick", "--out", str(out), "--budget-s", "3600", timeout=3600)
    return proc, out


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU mode's report on a machine without CUDA")
def test_cpu_quick_mode_passes_and_names_every_goal(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    md = (out / "gpu_suite.md").read_text()
    env = report["environment"]
    assert env["gpu"] == env["driver"] == "not measured: no GPU" and env["torch"] == torch.__version__
    assert len(report["load_average"]["start"]) == len(report["load_average"]["end"]) == 3
    checks = report["checks"]
    assert set(checks) == {"tvl1_parity", "extract_precision", "finetune_step", "predict", "tvl1_cpu", "train_step",
                           "extract_tbn", "extract_i3d", "tvl1_speed", "demo_dag"}
    assert {n for n, e in checks.items() if e["status"] != "pass"} == {"demo_dag"}, checks
    assert "not measured: no GPU" in checks["demo_dag"]["reason"]
    # Every pass that left out a CUDA part says so.
    for name in ("tvl1_parity", "extract_precision", "finetune_step", "predict", "tvl1_speed", "train_step",
                 "extract_tbn", "extract_i3d"):
        assert any("not measured: no GPU" in s for s in checks[name]["result"]["not_measured"]), name
    # Every goal is named, with "not measured: no GPU" on a CPU.
    assert [g["goal"] for g in report["goals"]] == ["tvl1_pairs_per_s", "tbn_positions_per_s",
                                                    "tbn_pipeline_over_model_only", "i3d_pipeline_over_model_only"]
    assert all(g["verdict"] == "not measured: no GPU" and g["figure"] is None for g in report["goals"])
    # CPU figures side by side, with the load they were taken under.
    flow = checks["tvl1_cpu"]["result"]
    assert flow["torch_s_per_pair"] > 0 and flow["opencv_s_per_pair"] > 0 and flow["mean_epe_torch_vs_opencv"] < 0.1
    assert isinstance(flow["under_load"], bool) and len(flow["load_average"]) == 2
    for name in ("extract_tbn", "extract_i3d"):
        r = checks[name]["result"]
        assert r["pipeline_positions_per_s"] > 0 and r["model_only_positions_per_s"] > 0
    assert "## Side by side" in md and "| TV-L1 EPIC settings" in md and "| extraction tbn_rgb+tbn_flow+tbn_audio" in md
    for g in ("TV-L1 at EPIC settings", "TBN extraction", "pipeline / model-only"):
        assert g in md
    assert not (out / "work").exists()  # scratch inputs removed


def test_cuda_requested_without_cuda_is_an_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the error raised when CUDA is absent")
    proc = _run("--device", "cuda", "--out", str(tmp_path))
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    assert not (tmp_path / "gpu_suite.json").exists()


def test_a_failing_check_is_recorded_and_the_rest_still_run(tmp_path):
    # The predict check is replaced by one that raises; demo_dag (cheap in --quick CPU mode) must
    # still run after it, and the exit status must be 1. `python -c` in benchmarks/ imports the script.
    proc = subprocess.run(
        [sys.executable, "-c", (
            "import sys, gpu_suite as g\n"
            "def boom(ctx):\n    raise RuntimeError('deliberate failure')\n"
            "g.CHECKS['predict'] = boom\n"
            f"sys.exit(g.main(['--device', 'cpu', '--quick', '--out', {str(tmp_path)!r}, '--only', 'predict', 'demo_dag']))\n")],
        cwd=REPO / "benchmarks", capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["checks"]["predict"]["status"] == "fail"
    assert "deliberate failure" in report["checks"]["predict"]["error"]
    assert report["checks"]["demo_dag"]["status"] == "skipped"  # ran after the failure
    assert "FAILED: predict" in proc.stderr and "**FAILED**: RuntimeError: deliberate failure" in (
        tmp_path / "gpu_suite.md").read_text()
