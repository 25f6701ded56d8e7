# Backbone fine-tuning on the labelled source domain (TBN: RGB/Flow/Audio, I3D: RGB/Flow).
# One job per backbone; it reads every source-train video's frames (or video), flow and sound
# track, each file named on the command line (finetune_flags in common.smk).


rule finetune_backbone:
    input:
        unpack(finetune_inputs),
    output:
        checkpoint=f"{RESULTS}/finetune/{{backbone}}/checkpoint.pt",
        metrics=f"{RESULTS}/finetune/{{backbone}}/metrics.csv",
    params:
        cfg=section("decode", "audio", "backbones", "finetune"),
        args=finetune_flags,
    log:
        f"{LOGS}/finetune/{{backbone}}.log",
    benchmark:
        f"{BENCH}/finetune/{{backbone}}.tsv"
    threads: 8
    resources:
        mem_mb=64000,
        runtime=2880,
        gpu=gpu_request("finetune"),
    conda:
        env("torch")
    # Several GPUs (profiles: set-resources finetune_backbone: gpu: N) -> torchrun, one process per GPU.
    shell:
        "L=python; if [ {resources.gpu} -gt 1 ]; then L='torchrun --standalone --nproc-per-node {resources.gpu}'; fi;"
        " OMP_NUM_THREADS={threads} $L -m extractors.finetune --config \"$M3EM_CONFIG\" --backbone {wildcards.backbone}"
        " --out {output.checkpoint} {params.args} > {log} 2>&1"
