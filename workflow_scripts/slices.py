"""Rule `slices`: the sheet's subjects from preprocessed NIfTI to one model-grid array file."""

import SimpleITK as sitk

from pddpm.artefacts import save_split
from pddpm.runlog import logged
from pddpm.slices import build_split
from pddpm.splits import read_sheet

with logged(snakemake.log[0]) as log:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(snakemake.threads)
    p = snakemake.params
    sheet = read_sheet(snakemake.input.sheet)
    arrays = build_split(sheet.to_dict("records"), fov_mm=p.fov_mm, target_spacing_mm=p.target_spacing_mm,
                         percentiles=p.percentiles, time_step=p.time_step, iterations=p.iterations,
                         clip_output=p.clip_output, progress=True)
    save_split(arrays, snakemake.output[0])
    log.info("%s: %d subject(s), image %s", snakemake.output[0], len(sheet), arrays["image"].shape)
