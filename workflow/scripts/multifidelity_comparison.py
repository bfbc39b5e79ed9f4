"""The seed paper's comparison at the high level: tables and the learning curve."""
import jax

jax.config.update("jax_enable_x64", True)  # the 0 K elastic constants' finite differences (float64)

from fusedmlp import logs
from fusedmlp.evaluation.multifidelity import comparison_job

logs.setup(snakemake.log[0])
models = {tuple(key): path for key, path in zip(snakemake.params.runs, snakemake.input.models)}
comparison_job(snakemake.params.settings, models, snakemake.input.dataset, snakemake.input.split,
               dict(snakemake.output.items()))
