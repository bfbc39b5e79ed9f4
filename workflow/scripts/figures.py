"""The paper's evaluation figures from the per-model tables."""
from fusedmlp import logs
from fusedmlp.evaluation import figures

logs.setup(snakemake.log[0])
figures.write_all(dict(snakemake.input.items()), snakemake.params.settings, dict(snakemake.output.items()))
