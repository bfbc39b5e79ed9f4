"""Read labelled structures in any ASE format into the canonical dataset."""
from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.data.readers import read_ase

log = logs.setup(snakemake.log[0])
opt = snakemake.params.ase
ds = read_ase(snakemake.input[0], fidelity=opt["fidelity"], index=opt["index"], format=opt["format"],
              allowed_species=snakemake.params.species, labels=opt["labels"],
              limits=dataset.Limits.from_config(snakemake.params.checks))
dataset.save(snakemake.output[0], ds)
log.info("read %d configurations into %s", len(ds), snakemake.output[0])
