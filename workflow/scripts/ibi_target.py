"""The known-answer target of an IBI model: its reference level's liquid at the state point."""
from fusedmlp import logs
from fusedmlp.evaluation.jobs import ibi_reference_target

logs.setup(snakemake.log[0])
ibi_reference_target(snakemake.params.settings, snakemake.wildcards.ibi, snakemake.output.rdf,
                     snakemake.output.state)
