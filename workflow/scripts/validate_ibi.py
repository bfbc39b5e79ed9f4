"""The before/after measurement of an IBI model: the start model and the kept correction each
sampled for `ibi.validation_ps` at the state point."""
from fusedmlp import logs
from fusedmlp.training.ibi_job import validate_ibi

logs.setup(snakemake.log[0])
validate_ibi(snakemake.params.settings, snakemake.wildcards.ibi, snakemake.input.model, snakemake.input.target,
             snakemake.input.get("target_state"), snakemake.output.table, snakemake.output.rdf,
             figure_path=snakemake.output.figure)
