# M3EM pipeline: raw EPIC-KITCHENS-100 video -> submission.zip (DESIGN section 1).
#
#   snakemake --cores 2 all                    # the bundled demo, end to end
#   snakemake --profile profiles/slurm all     # a SLURM cluster
#
# Stage targets: demo_data, flow, detections, finetune, features, train, evaluate, ensemble,
# submission, report (and all). See docs/workflow.md.

from m3em.epic.config import validate_config

configfile: "config.yaml"


# The same schema the entry points validate against: an unknown or mistyped key stops the run
# here, before any job, with the key's path.
validate_config(config, "Snakemake config (config.yaml with --configfile/--config overrides)")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/submit.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/report.md",
        f"{RESULTS}/submission.check.txt",


rule flow:
    input:
        [] if OFFICIAL_FEATURES else [flow_archive(v) for v in VIDEOS],


rule detections:
    input:
        [] if OFFICIAL_FEATURES else
        ([f"{RESULTS}/{kind}/{v}.parquet" for kind in ("detections", "crops") for v in VIDEOS] if needs_detections() else [])
        + ([feature_file("object", v) for v in VIDEOS] if "object" in needed_streams() else []),


rule finetune:
    input:
        [] if OFFICIAL_FEATURES else [f"{RESULTS}/finetune/{b}/checkpoint.pt" for b in needed_backbones()],


rule features:
    input:
        [] if OFFICIAL_FEATURES else [feature_file(s, v) for s in target_streams() for v in VIDEOS],


rule train:
    input:
        [f"{run_dir(r)}/model.pt" for r in RUNS],


rule evaluate:
    input:
        [metrics_file(r, s) for r in RUNS for s in EVAL_SPLITS],


rule ensemble:
    input:
        [metrics_file(ensemble_run(n), s) for n in ENSEMBLES for s in EVAL_SPLITS],


rule submission:
    input:
        f"{RESULTS}/submission.check.txt",


rule report:
    input:
        f"{RESULTS}/report.md",
