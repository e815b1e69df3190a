# Stage: report (docs/report.md). The paper's Table 1 and the figures, each wrapped with report(...) so that
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


rule table:
    input:
        per_volume=list(per_volume_files(TABLE_DATASETS).values()),
        reference=os.path.join(workflow.basedir, "pddpm/data/reference_table1.csv"),
    output:
        # the report shows HTML inline and offers the CSV as a download
        html=report(
            fill(artefacts.TABLE1, ext="html"),
            category="5. Results",
            subcategory="Table 1",
            caption="../report/table1.rst",
            labels={"table": "Table 1", "format": "html"},
        ),
        csv=report(
            fill(artefacts.TABLE1, ext="csv"),
            category="5. Results",
            subcategory="Table 1",
            caption="../report/table1.rst",
            labels={"table": "Table 1", "format": "csv"},
        ),
        # the report's front page shows these sentences (report/workflow.rst)
        summary=report(
            artefacts.TABLE1_SUMMARY,
            category="5. Results",
            subcategory="Table 1",
            caption="../report/table1_summary.rst",
            labels={"table": "Table 1", "format": "ordering against the paper"},
        ),
        md=fill(artefacts.TABLE1, ext="md"),
        tex=fill(artefacts.TABLE1, ext="tex"),
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
        # (model, fold, data set) of each per-volume input, in the same order
        per_volume_keys=list(per_volume_files(TABLE_DATASETS)),
        ddof=1,
    script:
        "../workflow_scripts/table.py"


rule qualitative:
    input:
        slices=fill(artefacts.SLICES, split="test"),
        infer=[fill(artefacts.INFERENCE, model=m, fold=QUALITATIVE_FOLD, split="test") for m in REPORT_MODELS],
        thresholds=[fill(artefacts.THRESHOLD, model=m, fold=QUALITATIVE_FOLD) for m in REPORT_MODELS],
    output:
        report(
            fill(artefacts.FIGURE, name="qualitative_{ds}"),
            category="5. Results",
            subcategory="Qualitative",
            caption="../report/qualitative.rst",
            labels={"figure": "qualitative", "data set": "{ds}"},
        ),
    log:
        log("qualitative", "{ds}"),
    wildcard_constraints:
        ds=one_of(ANOMALOUS_DATASETS),
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=figure_mem_mb,
        runtime=10,
    params:
        models=REPORT_MODELS,
        fold=QUALITATIVE_FOLD,
        volumes=config["evaluate"]["qualitative_volumes"],
        min_component_voxels=POSTPROCESS_VOXELS["min_component_voxels"],  # rules/helpers/evaluate.smk
        run_name=config["run_name"],
    script:
        "../workflow_scripts/qualitative.py"


rule pr_curves:
    input:
        slices=fill(artefacts.SLICES, split="test"),
        infer=[
            fill(artefacts.INFERENCE, model=m, fold=f, split="test")
            for m in REPORT_MODELS
            for f in REPORT_FOLDS
        ],
        thresholds=[fill(artefacts.THRESHOLD, model=m, fold=f) for m in REPORT_MODELS for f in REPORT_FOLDS],
    output:
        report(
            fill(artefacts.FIGURE, name="pr_{ds}"),
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
        ds=one_of(ANOMALOUS_DATASETS),
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
        list(per_volume_files(ANOMALOUS_DATASETS).values()),
    output:
        report(
            fill(artefacts.FIGURE, name="dice_distribution"),
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
        datasets=ANOMALOUS_DATASETS,
        # (model, fold, data set) of each per-volume input, in the same order
        per_volume_keys=list(per_volume_files(ANOMALOUS_DATASETS)),
    script:
        "../workflow_scripts/dice_distribution.py"


rule training_curves:
    input:
        logs=[fill(artefacts.TRAIN_LOG, model=m, fold=f) for m in trained_models() for f in REPORT_FOLDS],
    output:
        report(
            fill(artefacts.FIGURE, name="training_curves"),
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


TARGETS += [fill(artefacts.TABLE1, ext=ext) for ext in ("csv", "md", "tex", "html")] + [
    artefacts.TABLE1_SUMMARY
]


TARGETS += [
    fill(artefacts.FIGURE, name=f"{kind}_{ds}") for kind in ("qualitative", "pr") for ds in ANOMALOUS_DATASETS
]


if ANOMALOUS_DATASETS:
    TARGETS.append(fill(artefacts.FIGURE, name="dice_distribution"))


if trained_models():
    TARGETS.append(fill(artefacts.FIGURE, name="training_curves"))
