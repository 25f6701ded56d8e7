# Official metrics of every scored run (trained runs and ensembles) on the labelled splits.


rule evaluate_run:
    input:
        scores=scores_file("{model}_{method}", "{split}"),
        ann=annotation_files(),
    output:
        metrics_file("{model}_{method}", "{split}"),
    params:
        cfg=section("evaluate"),
    log:
        f"{LOGS}/evaluate/{{model}}_{{method}}/{{split}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}_{{method}}/{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    shell:
        "python -m m3em.evaluate --config \"$M3EM_CONFIG\" --scores {input.scores} --split {wildcards.split}"
        " --model {wildcards.model} --method {wildcards.method} --out {output} > {log} 2>&1"


rule evaluate_ensemble:
    input:
        scores=scores_file("ensemble_{ensemble}", "{split}"),
        ann=annotation_files(),
    output:
        metrics_file("ensemble_{ensemble}", "{split}"),
    params:
        cfg=section("evaluate"),
    log:
        f"{LOGS}/evaluate/ensemble_{{ensemble}}/{{split}}.log",
    benchmark:
        f"{BENCH}/evaluate/ensemble_{{ensemble}}/{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    shell:
        "python -m m3em.evaluate --config \"$M3EM_CONFIG\" --scores {input.scores} --split {wildcards.split}"
        " --name {wildcards.ensemble} --out {output} > {log} 2>&1"
