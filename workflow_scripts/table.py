"""Rule `table`: the paper's Table 1 (csv, md, tex, html) and its ordering summary from every per-volume
evaluation file."""

from pddpm.report import table
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    p = snakemake.params
    files = {tuple(key): path for key, path in zip(p.per_volume_keys, snakemake.input.per_volume, strict=True)}
    t = table.make_table1(files, p.table, ddof=p.ddof, reference_path=snakemake.input.reference)
    table.write_table1(t, snakemake.output.csv, snakemake.output.md, snakemake.output.tex,
                       snakemake.output.html, snakemake.output.summary)
    logger.info("Table 1 of run %s:\n%s", t.run_name, table.to_markdown(t))
