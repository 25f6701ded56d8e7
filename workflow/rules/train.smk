# TA3N (+ M3EM) training: one job per (model, method). The trainer's section and the model's own
# entry are params, so changing models.A reruns A's runs and their dependants only. The trainer
# writes checkpoint.pt after every epoch (resumable by hand with `python -m m3em.train --resume`)
# and model.pt when training has finished; predictions read model.pt.


rule train_run:
    input:
        features=train_inputs,
        ann=annotation_files(),
    output:
        model=f"{RESULTS}/train/{{model}}_{{method}}/model.pt",
        metrics=f"{RESULTS}/train/{{model}}_{{method}}/metrics.csv",
        # Declared so that Snakemake removes it before a rerun: the trainer refuses to start over
        # an existing checkpoint.pt without --resume, and a rerun means the inputs or config changed.
        checkpoint=f"{RESULTS}/train/{{model}}_{{method}}/checkpoint.pt",
    params:
        cfg=lambda wc: train_params(wc.model),
        out_dir=lambda wc: run_dir(f"{wc.model}_{wc.method}"),
    log:
        f"{LOGS}/train/{{model}}_{{method}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}_{{method}}.tsv"
    # One thread: on a laptop two small training runs side by side use the cores better than one
    # run on two threads; SLURM profiles set more (set-threads). torch reads OMP_NUM_THREADS.
    threads: 1
    resources:
        mem_mb=32000,
        runtime=720,
        gpu=gpu_request("train"),
    conda:
        env("torch")
    # Several GPUs (profiles: set-resources train_run: gpu: N) -> torchrun, one process per GPU.
    shell:
        "L=python; if [ {resources.gpu} -gt 1 ]; then L='torchrun --standalone --nproc-per-node {resources.gpu}'; fi;"
        " OMP_NUM_THREADS={threads} $L -m m3em.train --config \"$M3EM_CONFIG\" --model {wildcards.model} --method {wildcards.method}"
        " --out-dir {params.out_dir} --no-progress > {log} 2>&1"


rule predict_run:
    input:
        model=f"{RESULTS}/train/{{model}}_{{method}}/model.pt",
        features=train_inputs,
        ann=annotation_files(),
    output:
        [scores_file("{model}_{method}", s) for s in PREDICT_SPLITS],
    params:
        splits=" ".join(PREDICT_SPLITS),
    log:
        f"{LOGS}/predict/{{model}}_{{method}}.log",
    benchmark:
        f"{BENCH}/predict/{{model}}_{{method}}.tsv"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=gpu_request("train"),
    conda:
        env("torch")
    # One process scores all PREDICT_SPLITS: torch starts once per run, not once per (run, split).
    shell:
        "OMP_NUM_THREADS={threads} python -m m3em.predict --config \"$M3EM_CONFIG\" --checkpoint {input.model}"
        " --split {params.splits} --out {output} --no-progress > {log} 2>&1"
