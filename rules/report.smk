# Stage: report. The paper's Table 1 and the figures, each wrapped with report(...) so that
# `snakemake --report results/report.html` gathers them with their captions (report/*.rst).
# Each figure is its own job with only the settings it draws as params, so a change reruns just it.


include: "helpers/report.smk"


report: "../report/workflow.rst"


REPORT_FOLDS = list(config["folds_to_run"])


REPORT_MODELS = list(config["models"])


ANOMALOUS_DATASETS = [ds for ds in DATASETS if is_anomalous(ds)]


TABLE_DATASETS = ANOMALOUS_DATASETS + [config["train_dataset"]]
# The qualitative grid shows one fold: the first one run.


QUALITATIVE_FOLD = REPORT_FOLDS[0]


EVALUATE_CFG = config.get("evaluate", {})


rule table:
    input:
        per_volume=per_volume_files(TABLE_DATASETS),
        reference=os.path.join(workflow.basedir, "pddpm/data/reference_table1.csv"),
    output:
        # the report shows HTML inline and offers the CSV as a download
        html=report(
            f"{RES}/tables/table1.html",
            category="5. Results",
            subcategory="Table 1",
            caption="../report/table1.rst",
            labels={"table": "Table 1", "format": "html"},
        ),
        csv=report(
            f"{RES}/tables/table1.csv",
            category="5. Results",
            subcategory="Table 1",
            caption="../report/table1.rst",
            labels={"table": "Table 1", "format": "csv"},
        ),
        md=f"{RES}/tables/table1.md",
        tex=f"{RES}/tables/table1.tex",
    log:
        log("table", "table1"),
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        table=table_settings(),
        # results/eval, derived from the inputs (results/eval/{model}/fold{k}/{ds}_per_volume.csv)
        eval_dir=lambda wc, input: eval_dir_of(input.per_volume),
        ddof=1,
    script:
        "../workflow_scripts/table.py"


rule qualitative:
    input:
        slices=f"{RES}/slices/{{ds}}_test.npz",
        infer=expand(f"{RES}/infer/{{model}}/fold{QUALITATIVE_FOLD}/{{{{ds}}}}_test.npz", model=REPORT_MODELS),
        thresholds=expand(
            f"{RES}/eval/{{model}}/fold{QUALITATIVE_FOLD}/{{{{ds}}}}_threshold.json", model=REPORT_MODELS
        ),
    output:
        report(
            f"{RES}/figures/qualitative_{{ds}}.png",
            category="5. Results",
            subcategory="Qualitative",
            caption="../report/qualitative.rst",
            labels={"figure": "qualitative", "data set": "{ds}"},
        ),
    log:
        log("qualitative", "{ds}"),
    wildcard_constraints:
        ds="|".join(ANOMALOUS_DATASETS) or "^$",
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=figure_mem_mb,
        runtime=10,
    params:
        models=REPORT_MODELS,
        fold=QUALITATIVE_FOLD,
        volumes=EVALUATE_CFG.get("qualitative_volumes", 3),
        min_component_voxels=POSTPROCESS_VOXELS["min_component_voxels"],  # rules/helpers/evaluate.smk
        run_name=config["run_name"],
    script:
        "../workflow_scripts/qualitative.py"


rule pr_curves:
    input:
        slices=f"{RES}/slices/{{ds}}_test.npz",
        infer=[f"{RES}/infer/{m}/fold{f}/{{ds}}_test.npz" for m in REPORT_MODELS for f in REPORT_FOLDS],
        thresholds=[
            f"{RES}/eval/{m}/fold{f}/{{ds}}_threshold.json" for m in REPORT_MODELS for f in REPORT_FOLDS
        ],
    output:
        report(
            f"{RES}/figures/pr_{{ds}}.png",
            category="5. Results",
            subcategory="Precision-recall",
            caption="../report/pr_curves.rst",
            labels={"figure": "precision-recall", "data set": "{ds}"},
        ),
    log:
        log("pr_curves", "{ds}"),
    benchmark:
        bench("pr_curves", "{ds}")
    wildcard_constraints:
        ds="|".join(ANOMALOUS_DATASETS) or "^$",
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=figure_mem_mb,
        runtime=30,
    params:
        models=REPORT_MODELS,
        folds=REPORT_FOLDS,
        run_name=config["run_name"],
    script:
        "../workflow_scripts/pr_curves.py"


rule dice_distribution:
    input:
        per_volume_files(ANOMALOUS_DATASETS),
    output:
        report(
            f"{RES}/figures/dice_distribution.png",
            category="5. Results",
            subcategory="Per-volume Dice",
            caption="../report/dice_distribution.rst",
            labels={"figure": "per-volume Dice"},
        ),
    log:
        log("dice_distribution", "dice_distribution"),
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        models=REPORT_MODELS,
        folds=REPORT_FOLDS,
        datasets=ANOMALOUS_DATASETS,
        eval_dir=lambda wc, input: eval_dir_of(input),
    script:
        "../workflow_scripts/dice_distribution.py"


rule training_curves:
    input:
        logs=[f"{RES}/models/{m}/fold{f}/train_log.csv" for m in trained_models() for f in REPORT_FOLDS],
    output:
        report(
            f"{RES}/figures/training_curves.png",
            category="4. Training",
            subcategory="Loss curves",
            caption="../report/training_curves.rst",
            labels={"figure": "training curves"},
        ),
    log:
        log("training_curves", "training_curves"),
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        models=trained_models(),
        folds=REPORT_FOLDS,
    script:
        "../workflow_scripts/training_curves.py"


TARGETS += [f"{RES}/tables/table1.{ext}" for ext in ("csv", "md", "tex", "html")]


TARGETS += [f"{RES}/figures/{kind}_{ds}.png" for kind in ("qualitative", "pr") for ds in ANOMALOUS_DATASETS]


if ANOMALOUS_DATASETS:
    TARGETS.append(f"{RES}/figures/dice_distribution.png")


if trained_models():
    TARGETS.append(f"{RES}/figures/training_curves.png")
