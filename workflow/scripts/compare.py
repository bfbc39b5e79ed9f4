"""Comparison tables of every evaluated model with experiment (CSV and Markdown)."""
from fusedmlp import logs
from fusedmlp.evaluation import compare

logs.setup(snakemake.log[0])
compare.write_all(dict(snakemake.input.items()), snakemake.params.settings,
                  {k: v for k, v in snakemake.output.items() if k != "csv"})
