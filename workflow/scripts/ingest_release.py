"""Read the paper's .npy release (folder or zip) into the canonical dataset."""
from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.data.readers import read_release

log = logs.setup(snakemake.log[0])
rel = snakemake.params.release
ds = read_release(snakemake.input[0], species=rel["species"], fidelity=rel["fidelity"],
                  subdir=rel["subdir"], virial_types=rel["virial_types"],
                  type_names=dict(enumerate(rel["type_names"])),
                  length_unit=rel["length_unit"], energy_unit=rel["energy_unit"])
dataset.validate(ds, snakemake.input[0], allowed_species=snakemake.params.species)
ds.metadata["sha256"] = dataset.file_sha256(snakemake.input[0]) if rel["path"] is None else None
dataset.save(snakemake.output[0], ds)
log.info("read %d configurations (%d with virial) into %s", len(ds), ds.virial_mask.sum(),
         snakemake.output[0])
