# Stage: evaluate. A threshold per anomalous data set from its validation split, then
# per-volume metrics of every test split (anomalous: Dice, AUPRC, AUROC, best Dice; healthy: error).


include: "helpers/evaluate.smk"


ANOMALOUS = [ds for ds in DATASETS if is_anomalous(ds)]


EVAL_DATASETS = sorted({ds for ds, _ in eval_datasets()})


rule threshold:
    input:
        infer=f"{RES}/infer/{{model}}/fold{{fold}}/{{ds}}_val.npz",
        slices=f"{RES}/slices/{{ds}}_val.npz",
    output:
        f"{RES}/eval/{{model}}/fold{{fold}}/{{ds}}_threshold.json",
    log:
        log("threshold", "{model}", "fold{fold}", "{ds}"),
    wildcard_constraints:
        ds="|".join(ANOMALOUS) or "^$",
    conda:
        "../envs/eval.yaml"
    # one pass over the split's voxels into a histogram: worker processes would cost more in moving
    # the volumes than they save (bench/bench_eval.py)
    threads: 1
    resources:
        mem_mb=eval_mem_mb,
        runtime=30,
    params:
        method=config["evaluate"]["threshold_search"],
        steps=config["evaluate"]["interval_steps"],
    script:
        "../workflow_scripts/threshold.py"


rule metrics:
    input:
        unpack(metrics_inputs),
    output:
        f"{RES}/eval/{{model}}/fold{{fold}}/{{ds}}_per_volume.csv",
    log:
        log("metrics", "{model}", "fold{fold}", "{ds}"),
    benchmark:
        bench("metrics", "{model}", "fold{fold}", "{ds}")
    wildcard_constraints:
        ds="|".join(EVAL_DATASETS),
    conda:
        "../envs/eval.yaml"
    # speed only: the script reads it from `threads` (worker processes), so changing it reruns nothing
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=eval_mem_mb,
        runtime=60,
    # settings of the anomalous metrics only, so that changing them leaves healthy test sets alone
    params:
        anomalous=lambda wc: is_anomalous(wc.ds),
        # from evaluate.min_component_mm3 on the model grid (rules/helpers/evaluate.smk)
        min_component_voxels=lambda wc: anomalous_param(wc, "min_component_voxels"),
        # the oracle best Dice uses the same search as the threshold
        search=lambda wc: anomalous_param(wc, "threshold_search"),
        steps=lambda wc: anomalous_param(wc, "interval_steps"),
    script:
        "../workflow_scripts/metrics.py"


TARGETS.extend(
    f"{RES}/eval/{model}/fold{fold}/{ds}_per_volume.csv"
    for model in config["models"]
    for fold in config["folds_to_run"]
    for ds in EVAL_DATASETS
)
