# Shared definitions: paths, wildcard constraints, the video list, input switches and the
# input functions every stage uses. No science here: rules only call package entry points.
#
# Layout of what the DAG writes (R = data.results_dir):
#   R/flow/<video>.tar                      TV-L1 flow, official archive layout (u/, v/)
#   R/detections/<video>.parquet            hand-object boxes (detections table)
#   R/crops/<video>.parquet                 per-frame crop boxes
#   R/finetune/<backbone>/checkpoint.pt     fine-tuned TBN / I3D (+ metrics.csv)
#   <features.features_dir>/<stream>/<video>.safetensors   features (object stream included)
#   R/train/<model>_<method>/               model.pt (final), metrics.csv (per epoch)
#   R/scores/<run>/<split>.npz              scores of a trained run or an ensemble
#   R/metrics/<run>/<split>.json            official metrics
#   R/submission.zip, R/submission.check.txt, R/report.md (+ R/report/*.png)
#   R/logs/<stage>/<wildcards>.log, R/benchmarks/<stage>/<wildcards>.tsv
#   R/config/<hash>.yaml                    the merged config the jobs read ($M3EM_CONFIG)

import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from m3em.epic.annotations import (
    NOUN_CLASSES_FILE,
    SPLIT_FILES,
    VERB_CLASSES_FILE,
    VIDEO_INFO_FILE,
    EpicAnnotations,
    split_file,
    split_path,
)
from m3em.epic.atomic import atomic_write_text
from m3em.epic.streams import EXTRACTED_STREAMS, OFFICIAL_STREAMS, STREAM_INFO, InputKind
from m3em.methods import Method

REPO = Path(workflow.basedir).resolve()
RESULTS = config["data"]["results_dir"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
ENVS = REPO / "envs"
DEMO = bool(config["demo"]["enabled"])
INPUTS = config["inputs"]
WF = config["workflow"]
SPLITS = config["data"]["splits"]


# ---------------------------------------------------------------------------------------------
# The configuration the entry points read.
#
# Snakemake may merge several config files and --config overrides; the entry points read one
# YAML file. The merged, validated config is written once under a content-hash name, so it never
# changes under a running job and concurrent Snakemake processes (SLURM jobs re-parse this file)
# write identical bytes. Its path reaches the jobs as $M3EM_CONFIG and is deliberately not an
# input or a param (its name changes with every config edit): instead each job lists the config
# sections it reads as `params`, so Snakemake's params trigger reruns exactly the jobs whose
# sections changed.
def _write_run_config():
    text = yaml.safe_dump(dict(config), sort_keys=True)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    path = Path(RESULTS) / "config" / f"{digest}.yaml"
    if not path.exists():
        atomic_write_text(path, text)
    return str(path)


# Jobs inherit this process's environment (SLURM jobs re-run Snakemake, which re-parses this
# file): $M3EM_CONFIG is the config above, and the repository root goes on PYTHONPATH so that
# `python -m package.module` works from any working directory and in the conda envs (which do
# not install the project).
_pythonpath = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
os.environ.update({"M3EM_CONFIG": _write_run_config(), "PYTHONPATH": os.pathsep.join(_pythonpath)})


def section(*names):
    """Config sections a job reads, as one canonical JSON string (a `params` value)."""
    return json.dumps({n: config.get(n) for n in names}, sort_keys=True)


def env(name):
    """Path of a conda environment file (envs/ sits at the repository root)."""
    return str(ENVS / f"{name}.yaml")


# ---------------------------------------------------------------------------------------------
# Models, runs and streams (all from config: models.<name>.modalities.<m>.stream).
MODELS = tuple(WF["models"])
METHODS = tuple(WF["methods"])
RUNS = tuple(f"{m}_{meth}" for m in MODELS for meth in METHODS)
ENSEMBLES = {c["name"]: c for c in config["ensemble"]["combinations"]}
SUBMISSION_ENSEMBLE = config["submission"]["ensemble"]
EVAL_SPLITS = tuple(config["evaluate"]["splits"])
# Splits whose videos the pipeline touches: training domains, evaluation and the test split.
USED_SPLITS = tuple(dict.fromkeys([SPLITS["source_train"], SPLITS["target_train"], *EVAL_SPLITS, SPLITS["test"]]))
# Splits every trained run is scored on, in one predict job per run (the test split too: an
# ensemble may take any run as a member, and scoring it costs far less than a job start).
PREDICT_SPLITS = tuple(dict.fromkeys([*EVAL_SPLITS, SPLITS["test"]]))
OFFICIAL_FEATURES = INPUTS.get("official_features_dir")
FEATURES_DIR = config["features"]["features_dir"]
METHOD_NAMES = tuple(m.value for m in Method)
# Streams (m3em/epic/streams.py): EXTRACTED_STREAMS are written by features_video /
# features_video_extra, "object" by object_features_video; OFFICIAL_STREAMS are those the
# organisers' pooled features provide (inputs.official_features_dir).
STREAM_BACKBONE = {s: STREAM_INFO[s].backbone.value for s in EXTRACTED_STREAMS}


def _reads(streams, kind):
    """Whether any of `streams` reads input `kind` (InputKind.RGB / FLOW / AUDIO / DETECTIONS)."""
    return any(STREAM_INFO[s].input_kind is kind for s in streams)


def model_streams(model):
    """Feature streams a model reads (its modalities' streams)."""
    return tuple(dict.fromkeys(m["stream"] for m in config["models"][model]["modalities"].values()))


def needed_streams():
    """Streams the chosen models read."""
    return sorted({s for m in MODELS for s in model_streams(m)})


def target_streams():
    """Streams of the `features` target: those the models read plus features.streams."""
    return sorted(set(needed_streams()) | set(config["features"]["streams"]))


def needed_backbones():
    return sorted({STREAM_BACKBONE[s] for s in needed_streams() if s in STREAM_BACKBONE})


def needs_detections():
    """Whether a chosen model reads hand-object boxes (object stream or crops); the object stream
    does not when it comes from RULSTM's object LMDB (inputs.official_object_features_dir)."""
    def from_boxes(s):
        info = STREAM_INFO[s]
        return info.crop or (info.input_kind is InputKind.DETECTIONS and not INPUTS.get("official_object_features_dir"))

    return any(from_boxes(s) for m in MODELS for s in model_streams(m))


def gpu_request(name):
    """GPUs a job of stage `name` asks the scheduler for: 1 when the stage's config section says
    `device: cuda...`, else 0. The device itself is the entry point's business (a GPU configured
    but absent is its error); profiles/slurm sets `gpu: 1` per GPU rule on clusters."""
    return 1 if str((config.get(name) or {}).get("device", "cpu")).startswith("cuda") else 0


# ---------------------------------------------------------------------------------------------
# Wildcards. Video ids follow the EPIC pattern (P01_01, P01_101).
wildcard_constraints:
    video=r"P\d\d_\d\d\d?",
    model="|".join(MODELS),
    method="|".join(METHODS),
    backbone="|".join(sorted(set(STREAM_BACKBONE.values()))),
    stream="|".join(EXTRACTED_STREAMS),
    split="|".join(SPLIT_FILES),
    ensemble="|".join(re.escape(n) for n in ENSEMBLES),


def _check_config():
    """Cross-section consistency the schema cannot express; raised before any job runs."""
    problems = []
    for name, comb in ENSEMBLES.items():
        missing = [m for m in comb["members"] if m not in MODELS]
        if missing:
            problems.append(f"ensemble.combinations {name}: member(s) {missing} not in workflow.models {list(MODELS)}")
    if WF["ensemble_method"] not in METHODS:
        problems.append(f"workflow.ensemble_method {WF['ensemble_method']!r} not in workflow.methods {list(METHODS)}")
    if DEMO:
        for key in ("annotations_dir", "videos_dir"):
            if not Path(config["data"][key]).resolve().is_relative_to(Path(config["demo"]["out_dir"]).resolve()):
                problems.append(f"demo.enabled is true but data.{key} ({config['data'][key]}) is not under "
                                f"demo.out_dir ({config['demo']['out_dir']}); set demo.enabled: false for your own data")
    if SUBMISSION_ENSEMBLE not in ENSEMBLES:
        problems.append(f"submission.ensemble {SUBMISSION_ENSEMBLE!r} is not an ensemble.combinations name "
                        f"({list(ENSEMBLES)})")
    unknown = [m for m in MODELS if m not in config["models"]]
    if unknown:
        problems.append(f"workflow.models {unknown}: no such entry in models:")
    else:
        for m in MODELS:
            allowed = config["models"][m].get("methods", METHOD_NAMES)
            bad = [x for x in METHODS if x not in allowed]
            if bad:
                problems.append(f"workflow.methods {bad} not allowed for model {m} (models.{m}.methods)")
            extractable = set(config["features"]["streams"]) | {"object"}
            if not OFFICIAL_FEATURES and not set(model_streams(m)) <= extractable:
                problems.append(f"model {m} reads streams {sorted(set(model_streams(m)) - extractable)} that "
                                "features.streams does not extract")
    if OFFICIAL_FEATURES and not unknown:
        bad = [m for m in MODELS if not set(model_streams(m)) <= OFFICIAL_STREAMS]
        if bad:
            problems.append(f"inputs.official_features_dir holds only TBN RGB/Flow/Audio features; models {bad} need "
                            "other streams: set workflow.models to [A] or unset official_features_dir")
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))


_check_config()


# ---------------------------------------------------------------------------------------------
# Videos.
#
# With the demo enabled the annotation files do not exist before the demo_data job writes them,
# so the video ids come from the demo's own plan (epic_demo.spec.plan_videos, pure data: the
# same function the generator uses); this keeps the whole DAG visible to --dry-run from an empty
# directory, with no checkpoint. Otherwise they are read from the annotation files.
def _demo_videos():
    from epic_demo.spec import SIZES, plan_videos

    return {v.video_id: v.split for v in plan_videos(SIZES[config["demo"]["size"]])}


def _annotation_videos():
    ann = EpicAnnotations.open(config["data"]["annotations_dir"])
    out = {}
    for split in USED_SPLITS:
        for vid in ann.split(split, labelled=False)["video_id"].unique():
            out.setdefault(str(vid), split)
    return out


if DEMO:
    _VIDEO_SPLIT = {v: s for v, s in _demo_videos().items() if s in USED_SPLITS}
else:
    _VIDEO_SPLIT = _annotation_videos()
VIDEOS = tuple(sorted(_VIDEO_SPLIT))
SOURCE_TRAIN_VIDEOS = tuple(v for v in VIDEOS if _VIDEO_SPLIT[v] == SPLITS["source_train"])
if not VIDEOS:
    raise ValueError(f"no videos in the splits {list(USED_SPLITS)} (data.annotations_dir "
                     f"{config['data']['annotations_dir']})")


def video_path(video):
    return f"{config['data']['videos_dir']}/{video}{config['data']['video_ext']}"


def official(kind, video=None):
    """Path of an official input (`kind` is an inputs.* key without the official_ prefix)."""
    root = INPUTS.get(f"official_{kind}_dir")
    if not root:
        return None
    if kind == "features":
        return root
    ext = {"frames": ".tar", "flow": ".tar", "detections": ".pkl"}[kind]
    return f"{root}/{video}{ext}"


# ---------------------------------------------------------------------------------------------
# Missing inputs are reported here, at parse time, with every expected path (not one job failure
# at a time). In demo mode the inputs under demo.out_dir are outputs of demo_data instead.
def _expected_inputs():
    paths = []
    if OFFICIAL_FEATURES:
        paths += [f"{OFFICIAL_FEATURES}/{s}.pkl" for s in USED_SPLITS]
        return paths
    if INPUTS.get("official_object_features_dir") and _reads(needed_streams(), InputKind.DETECTIONS):
        paths.append(f"{INPUTS['official_object_features_dir']}/data.mdb")
    for v in VIDEOS:
        paths.append(official("frames", v) or video_path(v))
        if official("frames", v) and _reads(needed_streams(), InputKind.AUDIO):
            paths.append(video_path(v))  # frame archives carry no sound track
        if official("flow", v):
            paths.append(official("flow", v))
        if official("detections", v) and needs_detections():
            paths.append(official("detections", v))
    return paths


def under_demo(path):
    """Whether a path is written by the demo_data job (lies under demo.out_dir)."""
    return DEMO and Path(path).resolve().is_relative_to(Path(config["demo"]["out_dir"]).resolve())


def demo_outputs():
    """Every file the demo generator writes (epic_demo.generate.expected_outputs)."""
    from epic_demo.generate import expected_outputs

    return [str(p) for p in expected_outputs(config["demo"]["out_dir"], config["demo"]["size"])]


_missing = [p for p in _expected_inputs() if not under_demo(p) and not Path(p).exists()]
if _missing:
    shown = "\n  ".join(_missing[:50]) + (f"\n  ... and {len(_missing) - 50} more" if len(_missing) > 50 else "")
    raise FileNotFoundError(f"{len(_missing)} input file(s) missing (expected paths):\n  {shown}")


# ---------------------------------------------------------------------------------------------
# Input functions.
def annotation_files():
    """The annotation files the DAG reads (class files, video table, used splits)."""
    root = config["data"]["annotations_dir"]
    files = [f"{root}/{n}" for n in (VERB_CLASSES_FILE, NOUN_CLASSES_FILE, VIDEO_INFO_FILE)]
    if DEMO:  # not written yet: the paths the generator will write
        return files + [str(split_file(root, s)) for s in USED_SPLITS]
    return files + [str(split_path(root, s)) for s in USED_SPLITS]


def rgb_input(video):
    """Decoded-frame source of a video: the official frame archive when configured, else the video."""
    return official("frames", video) or video_path(video)


def rgb_flag(video, frames_flag="--frames"):
    """`--video <file>`, or `<frames_flag> <archive>` with official frames (flag names differ per CLI)."""
    frames = official("frames", video)
    return f"{frames_flag} {frames}" if frames else f"--video {video_path(video)}"


def flow_archive(video):
    return official("flow", video) or f"{RESULTS}/flow/{video}.tar"


def feature_file(stream, video):
    return f"{FEATURES_DIR}/{stream}/{video}.safetensors"


def train_inputs(wildcards):
    """Everything a run trains on: its streams' features for every video (or the official pickles)."""
    if OFFICIAL_FEATURES:
        return [f"{OFFICIAL_FEATURES}/{s}.pkl" for s in USED_SPLITS]
    return [feature_file(s, v) for s in model_streams(wildcards.model) for v in VIDEOS]


def extraction_jobs():
    """Stream groups the extraction writes, one job per video each: `features_video` writes the
    streams the chosen models read (what training waits for); `features_video_extra` the other
    features.streams entries, which only the `features` target asks for. Each group's order is
    EXTRACTED_STREAMS'."""
    wanted = set(target_streams())
    models = tuple(s for s in EXTRACTED_STREAMS if s in needed_streams())
    extra = tuple(s for s in EXTRACTED_STREAMS if s in wanted and s not in models)
    return {"features_video": models, "features_video_extra": extra}


def feature_inputs(streams):
    """Input function of one video's extraction job writing `streams` (checkpoints, inputs)."""

    def inputs(wc):
        video = wc.video
        rgb = []
        if _reads(streams, InputKind.RGB):
            rgb.append(rgb_input(video))
        if _reads(streams, InputKind.AUDIO):  # audio is never in a frame archive
            rgb.append(video_path(video))
        out = {"checkpoint": [f"{RESULTS}/finetune/{b}/checkpoint.pt" for b in sorted({STREAM_BACKBONE[s] for s in streams})],
               "ann": annotation_files()}
        if rgb:
            out["rgb"] = list(dict.fromkeys(rgb))
        if _reads(streams, InputKind.FLOW):
            out["flow"] = flow_archive(video)
        if any(STREAM_INFO[s].crop for s in streams):
            out["crops"] = f"{RESULTS}/crops/{video}.parquet"
        return out

    return inputs


def feature_flags(streams):
    """Command-line arguments of one video's extraction job: every --stream with its --out, the
    checkpoints and the input flags."""

    def flags(wc):
        inputs = feature_inputs(streams)(wc)
        args = [f"--stream {s} --out {feature_file(s, wc.video)}" for s in streams]
        args += [f"--checkpoint {c}" for c in inputs["checkpoint"]]
        if _reads(streams, InputKind.RGB):
            args.append(rgb_flag(wc.video))
        if _reads(streams, InputKind.AUDIO) and f"--video {video_path(wc.video)}" not in args:
            args.append(f"--video {video_path(wc.video)}")
        if "flow" in inputs:
            args.append(f"--flow {inputs['flow']}")
        if "crops" in inputs:
            args.append(f"--crops {inputs['crops']}")
        return " ".join(args)

    return flags


def _reads_sound(backbone):
    """Whether fine-tuning `backbone` reads the sound track (it has an audio stream and
    audio.enabled is true)."""
    enabled = (config.get("audio") or {}).get("enabled", True)
    return enabled and _reads([s for s, b in STREAM_BACKBONE.items() if b == backbone], InputKind.AUDIO)


def finetune_inputs(wildcards):
    """Input files of one backbone's fine-tuning job, per source-train video: the RGB source (the
    official frame archive, else the video), the flow archive, and the video for the sound track."""
    sound = _reads_sound(wildcards.backbone)
    return {
        "videos": [video_path(v) for v in SOURCE_TRAIN_VIDEOS if sound or not official("frames", v)],
        "frames": [official("frames", v) for v in SOURCE_TRAIN_VIDEOS if official("frames", v)],
        "flow": [flow_archive(v) for v in SOURCE_TRAIN_VIDEOS],
        "ann": annotation_files(),
    }


def finetune_flags(wildcards):
    """Command-line arguments naming every input file of a fine-tuning job (finetune_inputs): one
    --video / --frames / --flow per file (extractors.finetune keys each by its video id, the name)."""
    inputs = finetune_inputs(wildcards)
    return " ".join([f"--video {p}" for p in inputs["videos"]] + [f"--frames {p}" for p in inputs["frames"]]
                    + [f"--flow {p}" for p in inputs["flow"]])


def train_params(model):
    """The config a run depends on: the trainer's section, P (features.positions: how many of the
    files' positions it reads) and this model's own entry only."""
    models = config["models"]
    return json.dumps({"train": config["train"], "positions": config["features"].get("positions"),
                       "ta3n": models.get("ta3n"), "model": models[model]}, sort_keys=True)


def run_dir(run):
    return f"{RESULTS}/train/{run}"


def scores_file(run, split):
    return f"{RESULTS}/scores/{run}/{split}.npz"


def metrics_file(run, split):
    return f"{RESULTS}/metrics/{run}/{split}.json"


def ensemble_run(name):
    return f"ensemble_{name}"


def member_scores(wildcards):
    comb = ENSEMBLES[wildcards.ensemble]
    return [scores_file(f"{m}_{WF['ensemble_method']}", wildcards.split) for m in comb["members"]]


def all_metrics():
    runs = list(RUNS) + [ensemble_run(n) for n in ENSEMBLES]
    return [metrics_file(r, s) for r in runs for s in EVAL_SPLITS]
