# Functions of rules/demo.smk (kept apart from the rules, as snakemake's linter asks).


def demo_raw_files(ds):
    """The raw files of a demo data set that its subjects.tsv lists: scans, and labels if anomalous."""
    keys = ("t2", "seg") if is_anomalous(ds) else ("t2",)
    return [fill(artefacts.RAW_IMAGE, ds=ds, sub=sub, key=k) for k in keys for sub in subjects(ds)]
