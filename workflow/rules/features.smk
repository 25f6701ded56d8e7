# Feature extraction with the fine-tuned backbones (DESIGN section 3 feature contract): one job
# per video writes all of its streams in one process (each backbone loaded once, each segment's
# frames decoded once for every stream). features_video writes the streams the chosen models read;
# features_video_extra the other features.streams entries (only the `features` target wants
# them). The object stream is written by object_features_video (detect.smk).

for _rule, _streams in extraction_jobs().items():
    if not _streams:
        continue

    rule:
        name:
            _rule
        input:
            unpack(feature_inputs(_streams)),
        output:
            [feature_file(s, "{video}") for s in _streams],
        params:
            cfg=section("decode", "audio", "backbones", "features"),
            args=feature_flags(_streams),
        log:
            f"{LOGS}/features/{_rule}/{{video}}.log",
        benchmark:
            f"{BENCH}/features/{_rule}/{{video}}.tsv"
        # One thread per job: on a laptop, jobs side by side beat one job on several threads (one
        # demo video, 7 streams: 15.9 s on 2 threads, 18.1 s on 1, so two 1-thread jobs give 1.75x
        # the throughput). Profiles set more (set-threads), e.g. for GPU jobs' data loading.
        threads: 1
        resources:
            mem_mb=16000,
            runtime=480,  # minutes: all of a video's streams (7 on EPIC) in one GPU job
            gpu=gpu_request("features"),
        conda:
            env("torch")
        shell:
            "OMP_NUM_THREADS={threads} python -m extractors.extract --config \"$M3EM_CONFIG\" --video-id {wildcards.video} {params.args}"
            " > {log} 2>&1"
