"""Top-down (DiffTRe) training, sequential or fused (resumes from its checkpoint when retried)."""
from fusedmlp import logs
from fusedmlp.training.schemes import train_scheme

logs.setup(snakemake.log[0])
train_scheme(snakemake.params.settings, snakemake.wildcards.scheme, snakemake.input.model, snakemake.input.dataset,
             snakemake.input.split, snakemake.output.model, snakemake.output.log_csv,
             snakemake.params.checkpoint, figure_path=snakemake.output.figure)
