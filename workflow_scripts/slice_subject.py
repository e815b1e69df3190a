"""Rule `slice_subject`: one subject's preprocessed NIfTI files to its model-grid arrays."""

import SimpleITK as sitk

from pddpm.runlog import logged
from pddpm.slices import process_subject, save_subject

with logged(snakemake.log[0]) as log:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(snakemake.threads)
    p = snakemake.params
    vol = process_subject(snakemake.input.t2, snakemake.input.mask, snakemake.input.get("seg"), fov_mm=p.fov_mm,
                          target_spacing_mm=p.target_spacing_mm, percentiles=p.percentiles, time_step=p.time_step,
                          iterations=p.iterations, clip_output=p.clip_output)
    save_subject(vol, snakemake.output[0], fov_mm=p.fov_mm, target_spacing_mm=p.target_spacing_mm)
    log.info("%s: image %s, range %.3f..%.3f", snakemake.output[0], vol["image"].shape, vol["image"].min(),
             vol["image"].max())
