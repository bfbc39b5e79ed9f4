"""Deterministic train/val/test split of a dataset, by structure (one structure at several levels
of theory is in one subset)."""
from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.data.splits import SplitSettings, save_split, split_by_structure

log = logs.setup(snakemake.log[0])
ds = dataset.load(snakemake.input[0])
opt = snakemake.params.split
settings = SplitSettings(fractions=tuple(opt["fractions"]), shuffle=opt["shuffle"], seed=opt["seed"])
split = split_by_structure(ds, settings)
save_split(snakemake.output[0], split, settings, dataset_path=snakemake.input[0],
           dataset_sha256=dataset.file_sha256(snakemake.input[0]))
log.info("split %d configurations: %s", len(ds), {k: len(v) for k, v in split.items()})
