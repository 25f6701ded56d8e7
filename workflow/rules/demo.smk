# The bundled demo dataset (DESIGN section 6): videos with audio, official-format annotation
# files and hand-object files, written under demo.out_dir. The outputs are the exact files the
# generator writes (epic_demo.generate.expected_outputs) and the video ids come from its plan
# (common.smk), so the whole DAG is known before the job runs: no checkpoint is needed and
# --dry-run shows every job from an empty directory.


rule demo_data:
    output:
        demo_outputs(),
    params:
        cfg=section("demo"),
    log:
        f"{LOGS}/demo_data/demo_data.log",
    benchmark:
        f"{BENCH}/demo_data/demo_data.tsv"
    # Two threads: the videos are rendered one after the other while ffmpeg's encoder uses the
    # second core (rendering two videos at once with --jobs 2 was slower: 84 s against 71-74 s).
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        env("video")
    shell:
        "python -m epic_demo --config \"$M3EM_CONFIG\" --no-progress > {log} 2>&1"
