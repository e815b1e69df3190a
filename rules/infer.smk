# Stage: infer (docs/evaluation.md). Reconstructions and post-processed anomaly maps of every evaluated
# split, per model and fold; `thresh` (the intensity baseline) needs no network.


include: "helpers/infer.smk"


EVAL_SPLITS = sorted({s for _, s in eval_datasets()})


rule infer:
    input:
        unpack(infer_inputs),
    output:
        artefacts.INFERENCE,
    log:
        log("infer", "{model}", "fold{fold}", "{ds}_{split}"),
    benchmark:
        bench("infer", "{model}", "fold{fold}", "{ds}_{split}")
    wildcard_constraints:
        split=one_of(EVAL_SPLITS),
    conda:
        "../envs/torch.yaml"
    threads: config["infer"]["threads"]
    resources:
        mem_mb=infer_mem_mb,
        runtime=config["infer"]["runtime_min"],
        gpu=infer_gpus,
    # result-changing settings only (batch size, device and threads change speed, not the maps), and only
    # the `infer` keys this model kind reads: changing them leaves the intensity baseline alone
    params:
        model=lambda wc: wc.model,
        options=infer_options,
        # evaluate.erosion_mm and median_radius_mm in voxels of the model grid (rules/helpers/evaluate.smk)
        erosion_iterations=lambda wc: POSTPROCESS_VOXELS["erosion_iterations"],
        median_size=lambda wc: POSTPROCESS_VOXELS["median_size"],
        seed=lambda wc: config["seed"] + int(wc.fold),
        stream=lambda wc: f"{wc.ds}_{wc.split}",
    script:
        "../workflow_scripts/infer.py"
