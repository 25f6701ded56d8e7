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
    # extractor. The demo uses 1 so that two videos are solved side by side: with 2 threads one
    # OpenCV TV-L1 job kept only ~1.2 of 2 cores busy.
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
