"""One dataset of several levels of theory from one dataset per level."""
from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.data.levels import combine_levels, level_counts

log = logs.setup(snakemake.log[0])
cfg = snakemake.params.settings
paths = list(snakemake.input)
combined = combine_levels([dataset.load(p, allowed_species=cfg["species"]) for p in paths], paths)
dataset.save(snakemake.output[0], combined)
log.info("wrote %s: %s", snakemake.output[0], level_counts(combined))
