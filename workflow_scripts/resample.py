"""Rule resample: raw T2 (+ seg) -> isotropic RAS+ grid (B-spline image, nearest labels)."""

from pddpm.io import load_nifti, save_nifti
from pddpm.preprocess.resample import resample_subject
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    t2_path = snakemake.input.t2
    seg_path = snakemake.input.get("seg")
    t2 = load_nifti(t2_path)
    seg = load_nifti(seg_path) if seg_path else None
    t2_out, seg_out = resample_subject(t2, seg, snakemake.params.spacing_mm, t2_name=t2_path,
                                       seg_name=seg_path or "seg")
    log.info("%s: %s at %s mm -> %s at %s mm", t2_path, t2.shape, t2.header.get_zooms()[:3],
             t2_out.shape, snakemake.params.spacing_mm)
    save_nifti(seg_out.get_fdata(dtype="float32").astype(seg_out.get_data_dtype()), seg_out.affine,
               snakemake.output.seg)
    save_nifti(t2_out.get_fdata(dtype="float32"), t2_out.affine, snakemake.output.t2)
