# The challenge file and its independent check.


rule submission_zip:
    input:
        scores=scores_file(ensemble_run(SUBMISSION_ENSEMBLE), SPLITS["test"]),
        ann=annotation_files(),
    output:
        f"{RESULTS}/submission.zip",
    params:
        cfg=section("submission"),
    log:
        f"{LOGS}/submission/submission.log",
    benchmark:
        f"{BENCH}/submission/submission.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    shell:
        "python -m m3em.submission --config \"$M3EM_CONFIG\" --scores {input.scores:q} --out {output} > {log} 2>&1"


rule check_submission:
    input:
        zip=f"{RESULTS}/submission.zip",
        ann=annotation_files(),
    output:
        f"{RESULTS}/submission.check.txt",
    params:
        annotations=lambda wc, input: os.path.dirname(input.ann[0]),
        split=SPLITS["test"],
    log:
        f"{LOGS}/submission/check.log",
    benchmark:
        f"{BENCH}/submission/check.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        env("torch")
    # The checker prints its verdict; it is kept as the output only when the check passed, and
    # renamed into place so a killed job leaves no finished-looking file.
    shell:
        "python -m m3em.check_submission {input.zip} --annotations {params.annotations} --split {params.split}"
        " > {log} 2>&1 && cp {log} {output}.part && mv {output}.part {output}"
