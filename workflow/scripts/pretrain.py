"""Bottom-up pre-training (resumes from its checkpoint when the job is retried)."""
from fusedmlp import logs
from fusedmlp.training.bottom_up import pretrain

logs.setup(snakemake.log[0])
pretrain(snakemake.params.settings, snakemake.input.dataset, snakemake.input.split, snakemake.output.model,
         snakemake.output.log_csv, snakemake.params.checkpoint, figure_path=snakemake.output.figure)
