"""profiles/slurm on a real single-node SLURM cluster (Debian's slurm-wlm + munge).

The cluster is started from tests/slurm/ (root needed; packages: ``apt-get install -y slurm-wlm
munge``) and stopped by the pids in its pidfiles. The test runs a three-level slice of the demo
DAG (demo_data -> detections_official -> crops_video) through the SLURM executor plugin with the
project's profile, placeholders filled in for the test cluster; one rule is sent to the GPU
partition with a GPU to check that per-rule GPU requests reach sbatch. Skipped, with the reason,
only when the cluster cannot start.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_util import REPO, SNAKEFILE, demo_config, job_env, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

HERE = Path(__file__).resolve().parent / "slurm"
PIDFILES = ("/run/slurm/slurmd.pid", "/run/slurm/slurmctld.pid", "/run/munge/munged.pid")


def _alive(pidfile: str) -> bool:
    try:
        os.kill(int(Path(pidfile).read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running cluster; stopped afterwards if this fixture started it."""
    if all(_alive(p) for p in PIDFILES):
        yield "already running"
        return
    missing = [exe for exe in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(exe) is None]
    if missing:
        pytest.skip(f"SLURM cannot start: {missing} not installed (apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("SLURM cannot start: the test cluster's daemons must be started as root")
    proc = subprocess.run(["timeout", "-k", "5", "120", "bash", str(HERE / "start-slurm.sh")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        subprocess.run(["bash", str(HERE / "stop-slurm.sh")], capture_output=True)
        pytest.skip(f"SLURM cannot start (start-slurm.sh exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    try:
        yield proc.stdout.strip()
    finally:
        # Our cluster: cancel whatever is left (e.g. after a timeout), then stop the daemons.
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        subprocess.run(["bash", str(HERE / "stop-slurm.sh")], capture_output=True, timeout=60)


def test_profile_placeholders_are_marked():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert "gpu" not in profile.get("resources", {})  # GPUs per rule only
    assert profile["default-resources"]["slurm_partition"].startswith("CHANGE_ME")
    assert profile["default-resources"]["slurm_account"].startswith("CHANGE_ME")
    gpu_rules = {r for r, res in profile["set-resources"].items() if res.get("gpu")}
    assert {"flow_video", "detections_detectron2", "finetune_backbone", "features_video", "train_run"} <= gpu_rules
    for rule in gpu_rules:
        assert profile["set-resources"][rule]["slurm_partition"].startswith("CHANGE_ME")


def test_profile_runs_a_dag_slice_on_slurm(slurm_cluster, tmp_path):
    write_config(tmp_path, demo_config())
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    # Fill in the placeholders for the test cluster (partitions main and gpu, no accounts).
    profile["default-resources"]["slurm_partition"] = "main"
    del profile["default-resources"]["slurm_account"]
    for res in profile["set-resources"].values():
        res["slurm_partition"] = "gpu"
    profile["set-resources"]["crops_video"] = {"slurm_partition": "gpu", "gpu": 1}
    profile.pop("software-deployment-method")  # no conda here: the jobs use this interpreter
    profile.update({
        "slurm-no-account": True,
        # No slurmdbd, so no sacct: poll squeue (MinJobAge 600 s >= 3 x the initial wait).
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 5,
        "max-threads": os.cpu_count() or 1,  # a job asking for more CPUs than the node has never starts
        "retries": 0,
        "latency-wait": 5,
        "slurm-keep-successful-logs": True,  # the assertions below read them
    })
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))

    target = "results/crops/P01_01.parquet"
    cmd = ["timeout", "-k", "10", "540", sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
           "--directory", str(tmp_path), "--profile", str(tmp_path / "profile"), target]
    proc = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    job_logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (tmp_path / ".snakemake").rglob("slurm_logs/**/*.log"))
    assert proc.returncode == 0, out[-4000:] + "\n" + job_logs
    assert (tmp_path / target).stat().st_size > 0
    assert (tmp_path / "results" / "detections" / "P01_01.parquet").exists()

    # Every job went through sbatch: one SLURM log per rule, named by the SLURM job id.
    logs = {p.parent.name if p.parent.name.startswith("rule_") else p.parent.parent.name: p
            for p in (tmp_path / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(logs) == {"rule_demo_data", "rule_detections_official", "rule_crops_video"}, out[-3000:]
    crops_job = logs["rule_crops_video"].stem
    show = subprocess.run(["scontrol", "show", "job", crops_job], capture_output=True, text=True).stdout
    assert "Partition=gpu" in show and re.search(r"(TresPerJob=gres:gpu:1|gres/gpu=1)", show), show
