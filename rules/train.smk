# Stage: train (docs/training.md). One job per (model, fold), so SLURM runs the folds as parallel GPU jobs.
# The resumable checkpoint lives under results/checkpoints/ - not a declared output, so Snakemake does
# not delete it when a job fails or is killed at its time limit; rerunning the job resumes from it.


include: "helpers/train.smk"


rule train:
    input:
        unpack(train_inputs),
    output:
        model=artefacts.MODEL,
        log_csv=report(
            artefacts.TRAIN_LOG,
            caption="../report/train_log.rst",
            category="4. Training",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "file": "train_log.csv"},
        ),
        run=artefacts.RUN_RECORD,
    log:
        log("train", "{model}", "fold{fold}"),
    benchmark:
        bench("train", "{model}", "fold{fold}")
    conda:
        "../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=config["train"]["runtime_min"],
        gpu=config["train"]["gpus"],
    # result-changing settings only, and only the config sections this model kind reads (e.g. pDDPM:
    # unet, diffusion, patch); device, GPUs, threads, compile and checkpoint interval change speed only
    params:
        kind=lambda wc: wc.model,
        settings=lambda wc: train_params(wc)["sections"],
        train=lambda wc: train_params(wc)["train"],
        seed=lambda wc: config["seed"] + int(wc.fold),
        checkpoint_dir=lambda wc: fill(artefacts.CHECKPOINT_DIR, model=wc.model, fold=wc.fold),
    script:
        "../workflow_scripts/train.py"


# The cddpm encoder's masked-image-modelling pre-training (pddpm.pretrain, docs/cddpm.md): one GPU job
# per fold, an input of that fold's cddpm training job only (Kind.extra_inputs).
rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        encoder=artefacts.PRETRAINED_ENCODER,
        log_csv=artefacts.PRETRAIN_LOG,
    log:
        log("pretrain", "fold{fold}"),
    benchmark:
        bench("pretrain", "fold{fold}")
    conda:
        "../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=config["train"]["runtime_min"],
        gpu=config["train"]["gpus"],
    params:
        encoder=pretrain_params()["encoder"],
        settings=pretrain_params()["settings"],
        seed=lambda wc: config["seed"] + int(wc.fold),
    script:
        "../workflow_scripts/pretrain.py"


TARGETS += expand(artefacts.MODEL, model=trained_models(), fold=config["folds_to_run"])
