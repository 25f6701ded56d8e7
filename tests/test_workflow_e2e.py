"""Real runs of the workflow on the tiny demo: reruns after config edits and --forcerun, a corrupted
stage output, and the whole DAG from an empty directory to the checked submission and the report.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml
from workflow_util import demo_config, job_counts, job_env, output, snakemake, write_config

from epic_demo.spec import SIZES, plan_videos

pytestmark = pytest.mark.slow

USED_SPLITS = ("source_train", "target_train", "target_val", "target_test")
VIDEOS = sorted(v.video_id for v in plan_videos(SIZES["tiny"]) if v.split in USED_SPLITS)


# Targets go before --configfile/--forcerun: both take several values and would swallow them.
def _changed_config(workdir, name, **overrides):
    cfg = demo_config()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------------------------------
# A short prefix of the DAG: demo -> detections -> crops of one video (about a minute).


@pytest.fixture(scope="module")
def prefix_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prefix")
    write_config(workdir, demo_config())
    target = f"results/crops/{VIDEOS[-1]}.parquet"
    counts = job_counts(snakemake(workdir, "--cores", "2", target, check=True))
    assert counts == {"demo_data": 1, "detections_official": 1, "crops_video": 1}
    return workdir, target


def test_params_trigger_reruns_the_changed_stage_and_its_dependants(prefix_run):
    workdir, target = prefix_run
    assert job_counts(snakemake(workdir, "-n", target, check=True)) == {}  # up to date
    # crops: section changed -> the crop job only.
    crops = _changed_config(workdir, "crops.yaml", **{"crops.margin": 0.2})
    assert job_counts(snakemake(workdir, "-n", target, "--configfile", crops, check=True)) == {"crops_video": 1}
    # detections: section changed -> the conversion and the crops that read it, not the demo.
    det = _changed_config(workdir, "det.yaml", **{"detections.frame_count_tolerance": 0.03})
    counts = job_counts(snakemake(workdir, "-n", target, "--configfile", det, check=True))
    assert counts == {"detections_official": 1, "crops_video": 1}
    # --forcerun on a job rule: that job and its dependants.
    counts = job_counts(snakemake(workdir, "-n", target, "--forcerun", "detections_official", check=True))
    assert counts == {"detections_official": 1, "crops_video": 1}


def test_corrupted_stage_output_stops_naming_the_file(prefix_run):
    workdir, target = prefix_run
    video = VIDEOS[-1]
    detections = workdir / "results" / "detections" / f"{video}.parquet"
    demo_video = workdir / "results" / "demo" / "videos" / f"{video}.MP4"
    time.sleep(1.1)  # a visibly newer mtime than the crop table's
    detections.write_bytes(b"not a parquet file")
    proc = snakemake(workdir, "--cores", "1", "--show-failed-logs", target)
    assert proc.returncode != 0
    assert f"results/detections/{video}.parquet" in output(proc)  # the crops entry point names its input
    # Nothing finished is deleted: the corrupted input and everything upstream stay.
    assert detections.read_bytes() == b"not a parquet file"
    assert demo_video.stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# The whole demo DAG.


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    write_config(workdir, demo_config())
    t0 = time.monotonic()
    # The README's order: the submission first, then the report.
    snakemake(workdir, "--cores", "2", "submission", timeout=1800, check=True)
    snakemake(workdir, "--cores", "2", "report", timeout=600, check=True)
    return workdir, time.monotonic() - t0


@pytest.mark.e2e
def test_demo_dag_from_empty_directory(demo_run):
    workdir, _seconds = demo_run
    results = workdir / "results"
    check = subprocess.run(
        [sys.executable, "-m", "m3em.check_submission", str(results / "submission.zip"),
         "--annotations", str(results / "demo" / "annotations"), "--split", "target_test"],
        capture_output=True, text=True, env=job_env())
    assert check.returncode == 0, check.stderr
    assert "OK" in (results / "submission.check.txt").read_text()
    report = (results / "report.md").read_text()
    assert "Table 1: single models" in report and "Table 2: ensembles" in report
    for model in ("A", "B", "C", "D"):
        assert f"| {model} | TA3N + M3EM |" in report
    assert "| A+B+C+D |" in report
    pngs = sorted(p.name for p in (results / "report").glob("*.png"))
    assert len(pngs) == 12 + 1  # training curves of every run + per-class accuracy
    assert "| flow | 4 |" in report  # per-stage costs from the benchmark files
    assert job_counts(snakemake(workdir, "-n", "all", check=True)) == {}


@pytest.mark.e2e
def test_model_config_change_reruns_that_model_and_dependants_only(demo_run):
    workdir, _ = demo_run
    changed = _changed_config(workdir, "lambda.yaml", **{"models.A.lambda_d": 2.0})
    proc = snakemake(workdir, "-n", "all", "--configfile", changed, check=True)
    assert job_counts(proc) == {
        "train_run": 3,  # A x (source_only, ta3n, m3em)
        "predict_run": 3,  # one job per run of A (target_val and target_test in one process)
        "evaluate_run": 3,
        "ensemble_scores": 3 + 1,  # every ensemble contains A
        "evaluate_ensemble": 3,
        "submission_zip": 1,
        "check_submission": 1,
        "report_md": 1,
        "all": 1,
    }
    assert "model=B" not in proc.stdout and "model=A" in proc.stdout


@pytest.mark.e2e
def test_forcerun_flow_recomputes_flow_and_dependants(demo_run):
    workdir, _ = demo_run
    counts = job_counts(snakemake(workdir, "-n", "all", "--forcerun", "flow_video", check=True))
    assert counts["flow_video"] == len(VIDEOS)
    for upstream in ("demo_data", "detections_official", "crops_video", "object_features_video"):
        assert upstream not in counts
    # Flow feeds fine-tuning, so every feature, run, score and file downstream is recomputed.
    assert counts["finetune_backbone"] == 2 and counts["features_video"] == len(VIDEOS)
    assert counts["train_run"] == 12 and counts["submission_zip"] == 1 and counts["report_md"] == 1
