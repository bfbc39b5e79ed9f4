"""Reference-data (DFT) test errors of one model: table and parity plots."""
from fusedmlp import logs
from fusedmlp.evaluation.errors import dft_errors

logs.setup(snakemake.log[0])
dft_errors(snakemake.params.settings, snakemake.input[0], snakemake.input.dataset, snakemake.input.split,
           snakemake.output.table, snakemake.output.markdown, snakemake.output.figure,
           model_name=snakemake.wildcards.model, by_type_csv=snakemake.output.by_type)
