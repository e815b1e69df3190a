"""Rule demo_seg: the lesion truth of an anomalous demo subject under its raw name `{sub}_seg`."""

import shutil

from pddpm.io import atomic_path
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    with atomic_path(snakemake.output[0]) as tmp:
        shutil.copyfile(snakemake.input[0], tmp)
