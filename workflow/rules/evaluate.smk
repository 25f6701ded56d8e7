# Official metrics of every scored run (trained runs and ensembles) on the labelled splits: one job
# per run evaluates all EVAL_SPLITS in one process (a job start costs more than the metrics).


rule evaluate_run:
    input:
        scores=[scores_file("{model}_{method}", s) for s in EVAL_SPLITS],
        ann=annotation_files(),
    output:
        [metrics_file("{model}_{method}", s) for s in EVAL_SPLITS],
    params:
        cfg=section("evaluate"),
        splits=" ".join(EVAL_SPLITS),
    log:
        f"{LOGS}/evaluate/{{model}}_{{method}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}_{{method}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    shell:
        "python -m m3em.evaluate --config \"$M3EM_CONFIG\" --scores {input.scores} --split {params.splits}"
        " --model {wildcards.model} --method {wildcards.method} --out {output} > {log} 2>&1"


rule evaluate_ensemble:
    input:
        scores=[scores_file("ensemble_{ensemble}", s) for s in EVAL_SPLITS],
        ann=annotation_files(),
    output:
        [metrics_file("ensemble_{ensemble}", s) for s in EVAL_SPLITS],
    params:
        cfg=section("evaluate"),
        splits=" ".join(EVAL_SPLITS),
    log:
        f"{LOGS}/evaluate/ensemble_{{ensemble}}.log",
    benchmark:
        f"{BENCH}/evaluate/ensemble_{{ensemble}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    shell:
        "python -m m3em.evaluate --config \"$M3EM_CONFIG\" --scores {input.scores} --split {params.splits}"
        " --name {wildcards.ensemble} --out {output} > {log} 2>&1"
