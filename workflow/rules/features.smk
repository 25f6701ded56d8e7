# Per-(video, stream) feature extraction with the fine-tuned backbones (DESIGN section 3 feature
# contract). The object stream is written by object_features_video (detect.smk).


rule features_video:
    input:
        unpack(feature_inputs),
    output:
        feature_file("{stream}", "{video}"),
    params:
        cfg=section("decode", "audio", "backbones", "features"),
        flags=feature_flags,
    log:
        f"{LOGS}/features/{{stream}}/{{video}}.log",
    benchmark:
        f"{BENCH}/features/{{stream}}/{{video}}.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=gpu_request("features"),
    conda:
        env("torch")
    shell:
        "python -m extractors.extract --config \"$M3EM_CONFIG\" --video-id {wildcards.video} --stream {wildcards.stream}"
        " --checkpoint {input.checkpoint} {params.flags} --out {output} > {log} 2>&1"
