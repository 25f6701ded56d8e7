# Ensembles (report Table 2): weighted mean of the members' softmax probabilities. Members are
# models; their runs are those of workflow.ensemble_method.


rule ensemble_scores:
    input:
        member_scores,
    output:
        scores_file("ensemble_{ensemble}", "{split}"),
    params:
        cfg=section("ensemble"),
    log:
        f"{LOGS}/ensemble/{{ensemble}}/{{split}}.log",
    benchmark:
        f"{BENCH}/ensemble/{{ensemble}}/{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    shell:
        "python -m m3em.ensemble --config \"$M3EM_CONFIG\" --combination {wildcards.ensemble:q} --scores {input}"
        " --out {output:q} > {log:q} 2>&1"
