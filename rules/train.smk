# Stage: train (docs/training.md). One job per (model, fold), so SLURM runs the folds as parallel GPU jobs.
# The resumable checkpoint lives under results/checkpoints/ - not a declared output, so Snakemake does
# not delete it when a job fails or is killed at its time limit; rerunning the job resumes from it.


include: "helpers/train.smk"


rule train:
    input:
        train=train_split("train"),
        val=train_split("val"),
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
    # result-changing settings only; device, GPUs, threads and checkpoint interval change speed, not weights
    params:
        kind=lambda wc: wc.model,
        unet=config["unet"],
        diffusion=config["diffusion"],
        patch=config["patch"],
        train={k: config["train"][k] for k in ("batch_size", "lr", "epochs", "val_every_steps", "precision")},
        seed=lambda wc: config["seed"] + int(wc.fold),
        checkpoint_dir=lambda wc: fill(artefacts.CHECKPOINT_DIR, model=wc.model, fold=wc.fold),
    script:
        "../workflow_scripts/train.py"


TARGETS += expand(artefacts.MODEL, model=trained_models(), fold=config["folds_to_run"])
