# Functions of rules/report.smk (kept apart from the rules, as snakemake's linter asks).


def table_settings():
    """What the table prints: the run, the models and folds, and each data set's role and origin."""
    # n_subjects: demo data sets only (the schema allows it nowhere else)
    return {
        "run_name": config["run_name"],
        "models": REPORT_MODELS,
        "folds_to_run": REPORT_FOLDS,
        "train_dataset": config["train_dataset"],
        "datasets": {
            ds: {
                **{k: ds_cfg(ds)[k] for k in ("kind", "role", "source")},
                "n_subjects": ds_cfg(ds).get("n_subjects"),
            }
            for ds in TABLE_DATASETS
        },
    }


def figure_mem_mb(wildcards, input):
    # the test split is memory-mapped and one inference file is read at a time, of which the anomaly map
    # (and recon) is about half the file's raw size: twice the mean file size is ample, plus plotting
    return 1500 + int(2 * input.size_mb / max(1, len(input.infer)))


def per_volume_files(datasets):
    """(model, fold, data set) -> its per-volume file, for every model and fold of the report."""
    return {
        (m, f, ds): fill(artefacts.PER_VOLUME, model=m, fold=f, ds=ds)
        for m in REPORT_MODELS
        for f in REPORT_FOLDS
        for ds in datasets
    }
