# Hand-object detections (one table per video), crop boxes and the object stream (per-frame
# detection-score vectors, model B).
#
# The detections come from the official EPIC-100 hand-object files when
# inputs.official_detections_dir is set (rule detections_official; the demo writes files in that
# format), else from the detectron2 backend run on the frames (rule detections_detectron2, a GPU
# job). Both write the same table.

if INPUTS.get("official_detections_dir"):

    rule detections_official:
        input:
            official=lambda wc: official("detections", wc.video),
            ann=annotation_files(),
        output:
            f"{RESULTS}/detections/{{video}}.parquet",
        params:
            cfg=section("detections"),
        log:
            f"{LOGS}/detections/{{video}}.log",
        benchmark:
            f"{BENCH}/detections/{{video}}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            env("video")
        shell:
            "python -m extractors.detections.convert --config \"$M3EM_CONFIG\" --video-id {wildcards.video}"
            " --input {input.official} --out {output} > {log} 2>&1"

else:

    rule detections_detectron2:
        input:
            rgb=lambda wc: rgb_input(wc.video),
            ann=annotation_files(),
        output:
            f"{RESULTS}/detections/{{video}}.parquet",
        params:
            cfg=section("detections"),
            rgb=lambda wc: rgb_flag(wc.video, "--frames-archive"),
        log:
            f"{LOGS}/detections/{{video}}.log",
        benchmark:
            f"{BENCH}/detections/{{video}}.tsv"
        threads: 4
        resources:
            mem_mb=16000,
            runtime=360,
            gpu=gpu_request("detections"),
        conda:
            env("detect")
        shell:
            "python -m extractors.detections.detect --config \"$M3EM_CONFIG\" --video-id {wildcards.video}"
            " {params.rgb} --out {output} > {log} 2>&1"


rule crops_video:
    input:
        detections=f"{RESULTS}/detections/{{video}}.parquet",
        ann=annotation_files(),
    output:
        f"{RESULTS}/crops/{{video}}.parquet",
    params:
        cfg=section("crops"),
    log:
        f"{LOGS}/crops/{{video}}.log",
    benchmark:
        f"{BENCH}/crops/{{video}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        env("video")
    shell:
        "python -m extractors.detections.crops --config \"$M3EM_CONFIG\" --video-id {wildcards.video}"
        " --detections {input.detections} --out {output} > {log} 2>&1"


if INPUTS.get("official_object_features_dir"):

    rule object_features_rulstm:
        input:
            lmdb=INPUTS["official_object_features_dir"],
            ann=annotation_files(),
        output:
            feature_file("object", "{video}"),
        params:
            cfg=section("detections"),
        log:
            f"{LOGS}/object_features/{{video}}.log",
        benchmark:
            f"{BENCH}/object_features/{{video}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=20,
        conda:
            env("video")
        shell:
            "python -m extractors.detections.rulstm_objects --config \"$M3EM_CONFIG\" --video-id {wildcards.video}"
            " --lmdb {input.lmdb} --out {output} > {log} 2>&1"

else:

    rule object_features_video:
        input:
            detections=f"{RESULTS}/detections/{{video}}.parquet",
            ann=annotation_files(),
        output:
            feature_file("object", "{video}"),
        params:
            cfg=section("detections"),
        log:
            f"{LOGS}/object_features/{{video}}.log",
        benchmark:
            f"{BENCH}/object_features/{{video}}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            env("video")
        shell:
            "python -m extractors.detections.object_features --config \"$M3EM_CONFIG\" --video-id {wildcards.video}"
            " --detections {input.detections} --out {output} > {log} 2>&1"
