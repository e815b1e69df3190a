"""Rule demo_cohort: synthesise one demo subject from its seed and write the raw scan and its truth."""

import time

from pddpm.demo import anatomy, cohort, subject_index
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    ds, sub = snakemake.wildcards.ds, snakemake.wildcards.sub
    start = time.perf_counter()
    ref = anatomy.load_reference(snakemake.input[0])
    seed = cohort.subject_seed(snakemake.params.seed, ds, subject_index(ds, sub))
    subject = cohort.make_subject(ref, snakemake.params.kind, seed)
    cohort.write_subject(subject, dict(snakemake.output.items()))
    logger.info("%s/%s (%s): %s, %s in %.1f s", ds, sub, snakemake.params.kind, subject.t2.shape,
                cohort.describe(subject), time.perf_counter() - start)
