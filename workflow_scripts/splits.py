"""Rules `splits` and `split_defects`: build a data set's checked sheets, write the one this job owns."""

from pddpm.runlog import logged
from pddpm.splits import build_named_sheets, build_sheets, write_defects, write_sheet

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    if p.downloaded:
        # the authors' published sheets on the raw route: their names mapped onto our subjects
        from pddpm.data.authors_splits import read_sheets

        sheets, defects = build_named_sheets(
            ds=p.ds, anomalous=p.anomalous, named=read_sheets(p.downloaded, p.kind, p.files),
            files=p.files, drop_defects=p.drop_defects)
    else:
        authors = None
        if p.authors:
            # the authors' layout: one reader for their sheets (t1 -> t2 paths, absolute, workflow ids)
            from pddpm.data.preprocessed_layout import split_sheets

            authors = split_sheets(p.root, p.kind)
        sheets, defects = build_sheets(
            ds=p.ds, anomalous=p.anomalous, files=p.files, authors_sheets=authors,
            folds=p.folds, val_fraction=p.val_fraction, test_fraction=p.test_fraction,
            anomalous_val_fraction=p.anomalous_val_fraction, seed=p.seed, drop_defects=p.drop_defects)
    out = snakemake.output[0]
    if out.endswith("_defects.tsv"):
        write_defects(defects, out)
        log.info("%s: %d defect(s)", p.ds, len(defects))
    else:
        split = snakemake.wildcards.split
        write_sheet(sheets[split], out)
        log.info("%s_%s: %d subject(s)", p.ds, split, len(sheets[split]))
