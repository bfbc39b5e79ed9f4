"""DiffTRe of the whole network on the g(r) target of an ``ibi.models`` entry with method difftre
(resumes from its checkpoint when retried)."""
from fusedmlp import logs
from fusedmlp.training.rdf_difftre_job import train_rdf_difftre

logs.setup(snakemake.log[0])
train_rdf_difftre(snakemake.params.settings, snakemake.wildcards.ibi, snakemake.input.model, snakemake.input.target,
                  snakemake.input.get("target_state"), snakemake.output.model, snakemake.output.log_csv,
                  snakemake.params.checkpoint, figure_path=snakemake.output.figure)
