"""Rule qc_subject: QC metrics (one TSV row) and a three-view PNG of one preprocessed subject."""

import pandas as pd

from pddpm.preprocess.qc import qc_figure, subject_metrics, write_tsv
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    i = snakemake.input
    files = {k: i[k] for k in ("resampled_t2", "skullstrip_mask", "registered_t2", "registered_mask",
                               "affine", "cropped_t2", "final_t2", "final_mask", "final_seg")}
    files["warp"] = i.get("warp")
    atlas = {"image": i.atlas_image, "mask": i.atlas_mask}
    truth = ({"mask": i.truth_mask, "wm": i.truth_wm, "matrix": i.truth_matrix}
             if "truth_mask" in i.keys() else None)
    spacing = snakemake.params.spacing_mm
    row = {"subject": snakemake.wildcards.sub, **subject_metrics(files, atlas, spacing, truth)}
    log.info("%s", row)
    qc_figure(files, atlas, spacing, snakemake.output.png,
              f"{snakemake.wildcards.ds} / {snakemake.wildcards.sub}: final image, brain mask (red), "
              "atlas edges (cyan), segmentation (yellow)")
    write_tsv(pd.DataFrame([row]), snakemake.output.row)
