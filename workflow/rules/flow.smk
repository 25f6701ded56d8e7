# TV-L1 optical flow, one job per video, stored in the official archive layout (u/, v/ frame
# JPEGs in one tar). Skipped when inputs.official_flow_dir is set: flow_archive() then points at
# the official archives.


rule flow_video:
    input:
        rgb=lambda wc: rgb_input(wc.video),
        ann=annotation_files(),
    output:
        f"{RESULTS}/flow/{{video}}.tar",
    params:
        cfg=section("decode", "flow"),
        rgb=lambda wc: rgb_flag(wc.video),
    log:
        f"{LOGS}/flow/{{video}}.log",
    benchmark:
        f"{BENCH}/flow/{{video}}.tsv"
    # Default flow.threads; the job passes what it is granted (profiles' set-threads) to the
    # extractor. The demo uses 1: two videos side by side took as long as one 2-thread job at a
    # time (stage 148 s vs 144 s), and per-video jobs then share cores like the other stages.
    threads: int(config["flow"]["threads"])
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_request("flow"),
    conda:
        env("video")
    shell:
        "python -m extractors.flow --config \"$M3EM_CONFIG\" --video-id {wildcards.video} {params.rgb}"
        " --threads {threads} --out {output} --no-progress > {log} 2>&1"
