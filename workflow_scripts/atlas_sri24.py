"""Rule atlas_sri24: sri24_spm8.zip -> resources/atlas/{t1,t2,mask}.nii.gz (pddpm.data.sri24)."""

import tempfile
from pathlib import Path

from pddpm.data.archives import extract
from pddpm.data.sri24 import EXPECTED, convert
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    with tempfile.TemporaryDirectory(dir=Path(snakemake.output.t1).parent.parent) as tmp:
        folder = extract(snakemake.input[0], Path(tmp) / "sri24", EXPECTED)
        info = convert(folder, dict(snakemake.output.items()), snakemake.params.members)
    log.info("atlas: %s", info)
