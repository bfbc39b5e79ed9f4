"""One property of one model (the rule's `prop` parameter names it): tables from MD or phonopy."""
from fusedmlp import logs
from fusedmlp.evaluation import jobs
from fusedmlp.evaluation.potentials import REFERENCE

logs.setup(snakemake.log[0])
model = snakemake.wildcards.model
jobs.run(snakemake.params.prop, snakemake.params.settings, model, None if model == REFERENCE else snakemake.input[0],
         dict(snakemake.output.items()))
