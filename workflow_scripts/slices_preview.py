"""Rule `slices_preview`: middle axial slices of a split file, for the report."""

from pddpm.artefacts import load_split
from pddpm.runlog import logged
from pddpm.slices import preview_figure

with logged(snakemake.log[0]):
    split = load_split(snakemake.input[0], mmap=True)
    preview_figure(split, snakemake.output[0], max_subjects=snakemake.params.max_subjects,
                   title=f"{snakemake.wildcards.ds} {snakemake.wildcards.split}: grid "
                         f"{split['image'].shape[1:]} at {split['spacing_mm']:g} mm")
