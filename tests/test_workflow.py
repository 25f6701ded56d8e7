"""The Snakemake workflow: lint, the demo DAG from an empty directory (dry-run), input switches
and bad inputs reported before any job runs."""

from __future__ import annotations

import re

from workflow_util import REPO, demo_config, job_counts, output, snakemake, write_config

from epic_demo.spec import SIZES, plan_videos
from m3em.epic.annotations import EpicAnnotations

EPIC_SLICE = REPO / "tests" / "data" / "epic"


def tiny_videos(splits=("source_train", "target_train", "target_val", "target_test")) -> list[str]:
    return sorted(v.video_id for v in plan_videos(SIZES["tiny"]) if v.split in splits)


def test_lint_has_no_findings(tmp_path):
    write_config(tmp_path, demo_config())
    proc = snakemake(tmp_path, "--lint")
    assert proc.returncode == 0, proc.stdout + output(proc)
    assert "Congratulations" in proc.stdout + output(proc)


def test_demo_dag_from_empty_directory(tmp_path):
    """Every job of the demo DAG is known before anything exists: one job per video per stage."""
    write_config(tmp_path, demo_config(**{"evaluate.splits": ["target_val", "source_val"]}))
    counts = job_counts(snakemake(tmp_path, "--dry-run", "all", check=True))
    videos = tiny_videos(("source_train", "source_val", "target_train", "target_val", "target_test"))
    n_runs = 4 * 3  # models A-D x (source-only, TA3N, TA3N + M3EM)
    n_eval = 2  # evaluate.splits: target_val and source_val (the domain gap)
    assert counts == {
        "demo_data": 1,
        "flow_video": len(videos),
        "detections_official": len(videos),
        "crops_video": len(videos),
        "object_features_video": len(videos),
        "finetune_backbone": 2,  # tbn, i3d
        "features_video": len(videos),  # one job per video writes its 7 streams
        "train_run": n_runs,
        "predict_run": n_runs,  # one job per run scores every evaluated split and target_test
        "evaluate_run": n_runs,  # one job per run evaluates every split
        "ensemble_scores": 3 * n_eval + 1,  # three ensembles on both, the submitted one on target_test
        "evaluate_ensemble": 3,
        "submission_zip": 1,
        "check_submission": 1,
        "report_md": 1,
        "all": 1,
    }
    # The dry run wrote nothing but the merged config the jobs read.
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["config"]


def test_stage_targets_and_model_subset(tmp_path):
    cfg = demo_config(**{"workflow.models": ["A"], "workflow.methods": ["m3em"],
                         "ensemble.combinations": [{"name": "A", "members": ["A"], "weights": [1.0]}],
                         "submission.ensemble": "A"})
    write_config(tmp_path, cfg)
    n = len(tiny_videos())
    assert job_counts(snakemake(tmp_path, "-n", "flow", check=True)) == {"demo_data": 1, "flow_video": n, "flow": 1}
    # Model A reads tbn_rgb/flow/audio, but the features target extracts every features.streams entry:
    # one job per video for A's streams, one for the other four (I3D and the crops).
    proc = snakemake(tmp_path, "-n", "-p", "features", check=True)
    counts = job_counts(proc)
    assert counts["features_video"] == n and counts["features_video_extra"] == n and counts["finetune_backbone"] == 2
    video = tiny_videos()[0]
    commands = [c for c in proc.stdout.splitlines() if "extractors.extract" in c and f"--video-id {video} " in c]
    streams = [sorted(re.findall(r"--stream (\S+)", c)) for c in commands]
    assert sorted(streams) == [["i3d_flow", "i3d_rgb", "tbn_crop_flow", "tbn_crop_rgb"], ["tbn_audio", "tbn_flow", "tbn_rgb"]]
    for c in commands:  # each stream's file at its usual path; each backbone's checkpoint once
        for s in re.findall(r"--stream (\S+)", c):
            assert f"--stream {s} --out results/features/{s}/{video}.safetensors" in c
        assert c.count("--checkpoint results/finetune/tbn/checkpoint.pt") == 1
    assert ("--checkpoint results/finetune/i3d/checkpoint.pt" in commands[0]) != (
        "--checkpoint results/finetune/i3d/checkpoint.pt" in commands[1])
    counts = job_counts(snakemake(tmp_path, "-n", "train", check=True))
    assert counts["train_run"] == 1 and counts["finetune_backbone"] == 1  # TBN only
    assert counts["features_video"] == n and "features_video_extra" not in counts
    assert "detections_official" not in counts and "object_features_video" not in counts  # A needs no boxes


def test_workflow_methods_add_the_ablations(tmp_path):
    methods = ["source_only", "ta3n", "ta3n_late", "m3em_smr", "m3em_cmc", "m3em"]
    cfg = demo_config(**{"workflow.models": ["D"], "workflow.methods": methods, "workflow.ensemble_method": "m3em",
                         "ensemble.combinations": [{"name": "D", "members": ["D"], "weights": [1.0]}],
                         "submission.ensemble": "D"})
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", "all", check=True)
    counts = job_counts(proc)
    assert counts["train_run"] == counts["evaluate_run"] == 6
    for method in methods:
        assert f"results/train/D_{method}/model.pt" in proc.stdout


def test_video_wildcard_is_pinned_to_epic_ids(tmp_path):
    write_config(tmp_path, demo_config())
    proc = snakemake(tmp_path, "-n", "results/flow/not_a_video.tar")
    assert proc.returncode != 0
    assert "MissingRuleException" in output(proc) or "No rule to produce" in output(proc)


def test_schema_error_stops_before_any_job(tmp_path):
    cfg = demo_config()
    cfg["workflow"]["modles"] = ["A"]
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "--cores", "1", "all")
    assert proc.returncode != 0
    assert "workflow: unknown key(s) ['modles']" in output(proc)
    assert not (tmp_path / "results").exists()


def test_inconsistent_config_is_reported(tmp_path):
    cfg = demo_config(**{"workflow.models": ["A", "B"]})  # ensembles name C and D
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", "all")
    assert proc.returncode != 0
    assert "ensemble.combinations A+B+C: member(s) ['C'] not in workflow.models" in output(proc)


def test_a_new_model_is_one_models_entry(tmp_path):
    """config.yaml: any upper-case key of models: is a model once workflow.models names it."""
    cfg = demo_config(**{"workflow.models": ["A", "Audio"], "workflow.methods": ["source_only"],
                         "ensemble.combinations": [{"name": "A+Audio", "members": ["A", "Audio"], "weights": [1, 1]}],
                         "submission.ensemble": "A+Audio", "workflow.ensemble_method": "source_only"})
    cfg["models"]["Audio"] = {"modalities": {"audio": {"stream": "tbn_audio", "channels": 1024}},
                              "branches": [{"name": "audio", "modalities": ["audio"], "weight": 1.0}],
                              "consensus_pair": None, "methods": ["source_only"]}
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", "all", check=True)
    assert job_counts(proc)["train_run"] == 2
    cfg["workflow"]["models"] = ["A", "Zz"]
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", "all")
    assert proc.returncode != 0 and "workflow.models ['Zz']: no such entry in models:" in output(proc)


def test_missing_videos_are_listed_before_any_job(tmp_path):
    """Own data (demo off): every video of the used splits is checked, all missing paths listed."""
    cfg = demo_config(**{"demo.enabled": False, "data.annotations_dir": str(EPIC_SLICE),
                         "data.videos_dir": str(tmp_path / "videos"), "inputs.official_detections_dir": None})
    write_config(tmp_path, cfg)
    ann = EpicAnnotations.open(EPIC_SLICE)
    videos = sorted({v for s in ("source_train", "target_train", "target_val", "target_test")
                     for v in ann.split(s, labelled=False)["video_id"]})
    (tmp_path / "videos").mkdir()
    present = videos[0]
    (tmp_path / "videos" / f"{present}.MP4").write_bytes(b"")
    proc = snakemake(tmp_path, "--cores", "1", "all")
    assert proc.returncode != 0
    assert f"{len(videos) - 1} input file(s) missing (expected paths)" in output(proc)
    for v in videos[1:]:
        assert f"{tmp_path}/videos/{v}.MP4" in output(proc)
    assert f"{present}.MP4" not in output(proc)
    assert not (tmp_path / "results" / "logs").exists()  # no job ran


def test_official_flow_archives_replace_the_flow_stage(tmp_path):
    official = tmp_path / "official_flow"
    write_config(tmp_path, demo_config(**{"inputs.official_flow_dir": str(official)}))
    videos = tiny_videos()
    proc = snakemake(tmp_path, "-n", "features")
    assert proc.returncode != 0 and f"{len(videos)} input file(s) missing" in output(proc)
    assert f"{official}/{videos[0]}.tar" in output(proc)
    official.mkdir()
    for v in videos:
        (official / f"{v}.tar").write_bytes(b"")
    proc = snakemake(tmp_path, "-n", "features", check=True)
    counts = job_counts(proc)
    assert "flow_video" not in counts and counts["features_video"] == len(videos)
    assert f"{official}/{videos[0]}.tar" in proc.stdout  # the extraction jobs read the official archives


def test_official_features_skip_extraction(tmp_path):
    official = tmp_path / "official_features"
    official.mkdir()
    for split in ("source_train", "target_train", "target_val", "target_test"):
        (official / f"{split}.pkl").write_bytes(b"")
    one_model = {"ensemble.combinations": [{"name": "A", "members": ["A"], "weights": [1.0]}],
                 "submission.ensemble": "A", "inputs.official_features_dir": str(official)}
    write_config(tmp_path, demo_config(**{"workflow.models": ["A", "D"], **one_model}))
    proc = snakemake(tmp_path, "-n", "all")
    assert proc.returncode != 0 and "models ['D'] need other streams" in output(proc)

    write_config(tmp_path, demo_config(**{"workflow.models": ["A"], **one_model}))
    counts = job_counts(snakemake(tmp_path, "-n", "all", check=True))
    for rule in ("flow_video", "detections_official", "finetune_backbone", "features_video"):
        assert rule not in counts
    assert counts["train_run"] == 3 and counts["submission_zip"] == 1


def test_named_stage_targets_exist(tmp_path):
    write_config(tmp_path, demo_config())
    proc = snakemake(tmp_path, "--list-target-rules", check=True)
    targets = set(proc.stdout.split())
    assert {"all", "demo_data", "flow", "detections", "finetune", "features", "train", "evaluate", "ensemble",
            "submission", "report"} <= targets
