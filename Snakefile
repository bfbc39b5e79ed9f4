# Fused DFT + experiment training of machine-learning interatomic potentials.
# `snakemake` runs the embedded demo (config/config.yaml) on a workstation;
# `snakemake --profile slurm --configfile config/paper.yaml` runs the paper-scale campaign.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/multifidelity.smk"
include: "workflow/rules/evaluation.smk"


rule all:
    input:
        all_targets(),
    default_target: True
