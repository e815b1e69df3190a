"""Rule `table`: the paper's Table 1 (csv, md, tex, html) from every per-volume evaluation file."""

from pddpm.report import table
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    t = table.make_table1(snakemake.params.eval_dir, snakemake.params.table, ddof=snakemake.params.ddof,
                          reference_path=snakemake.input.reference)
    table.write_table1(t, snakemake.output.csv, snakemake.output.md, snakemake.output.tex,
                       snakemake.output.html)
    logger.info("Table 1 of run %s:\n%s", t.run_name, table.to_markdown(t))
