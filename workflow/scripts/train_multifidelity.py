"""Multi-fidelity training, or one model of the seed paper's comparison (variant, size, seed in
params); resumes from its checkpoint when the job is retried."""
from fusedmlp import logs
from fusedmlp.training.multifidelity_job import train_multifidelity

logs.setup(snakemake.log[0])
p = snakemake.params
train_multifidelity(p.settings, snakemake.input.dataset, snakemake.input.split, snakemake.output.model,
                    snakemake.output.log_csv, p.checkpoint, figure_path=snakemake.output.get("figure"),
                    variant=p.variant, size=p.size, seed=p.seed, comparison=p.comparison)
