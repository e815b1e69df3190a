"""Rule atlas_sri24: the SRI24 archive -> resources/atlas/{t1,t2,mask}.nii.gz."""

import tempfile
from pathlib import Path

from pddpm.data.archives import extract
from pddpm.data.sri24 import EXPECTED, convert
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    with tempfile.TemporaryDirectory(dir=Path(snakemake.output.t1).parent.parent) as tmp:
        folder = extract(snakemake.input[0], Path(tmp) / "sri24", EXPECTED)
        convert(folder, dict(snakemake.output.items()))
