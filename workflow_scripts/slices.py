"""Rule `slices`: the sheet's subjects, from their slice files (rule `slice_subject`), to one split file."""

from pathlib import Path

from pddpm.runlog import logged
from pddpm.slices import assemble_split, save_split
from pddpm.splits import read_sheet

with logged(snakemake.log[0]) as log:
    sheet = read_sheet(snakemake.input.sheet)
    files = {Path(p).stem: p for p in snakemake.input.subjects}  # results/slices/subjects/{ds}/{sub}.npz
    arrays = assemble_split(sheet.to_dict("records"), files, progress=True)
    save_split(arrays, snakemake.output[0])
    log.info("%s: %d subject(s), image %s", snakemake.output[0], len(sheet), arrays["image"].shape)
