"""Iterative Boltzmann Inversion of a pair correction on the pre-trained model (resumes from its
checkpoint when retried)."""
from fusedmlp import logs
from fusedmlp.training.ibi_job import train_ibi

logs.setup(snakemake.log[0])
train_ibi(snakemake.params.settings, snakemake.wildcards.ibi, snakemake.input.model, snakemake.input.target,
          snakemake.input.get("target_state"), snakemake.output.model, snakemake.output.log_csv,
          snakemake.output.rdf_csv, snakemake.output.correction_csv, snakemake.params.checkpoint,
          figure_path=snakemake.output.figure)
