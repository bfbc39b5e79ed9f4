"""0 K hcp elastic constants of the multi-fidelity model at each head beside the reference
potential at each level."""
import jax

jax.config.update("jax_enable_x64", True)  # the 0 K elastic constants' finite differences (float64)

from fusedmlp import logs
from fusedmlp.evaluation.multifidelity import elastic_0k_job

logs.setup(snakemake.log[0])
elastic_0k_job(snakemake.params.settings, snakemake.params.model, snakemake.input.model, snakemake.params.levels,
               snakemake.output.table, snakemake.output.markdown)
