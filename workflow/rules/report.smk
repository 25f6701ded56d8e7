# results/report.md: Table 1 (single models), Table 2 (ensembles), training curves, per-class
# accuracy and per-stage time and memory summed from the benchmark files (m3em.report).


rule report_md:
    input:
        metrics=all_metrics(),
        train=[f"{run_dir(r)}/metrics.csv" for r in RUNS],
        scores=scores_file(ensemble_run(SUBMISSION_ENSEMBLE), EVAL_SPLITS[0]),
        check=f"{RESULTS}/submission.check.txt",
        ann=annotation_files(),
    output:
        report=f"{RESULTS}/report.md",
        figures=directory(f"{RESULTS}/report"),
    params:
        cfg=section("evaluate", "ensemble", "workflow"),
        benchmarks=BENCH,
        class_split=EVAL_SPLITS[0],
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCH}/report/report.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    shell:
        "python -m m3em.report --config \"$M3EM_CONFIG\" --metrics {input.metrics:q} --train-metrics {input.train}"
        " --class-scores {input.scores:q} --class-split {params.class_split} --benchmarks {params.benchmarks}"
        " --figures {output.figures} --out {output.report} > {log} 2>&1"
