"""Read the paper's .npy release (folder or zip) into the canonical dataset."""
from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.data.readers import read_release

log = logs.setup(snakemake.log[0])
rel = snakemake.params.release
# a pinned sha256 is checked for a local path as for a download (which download.py checked already)
ds = read_release(snakemake.input[0], species=rel["species"], fidelity=rel["fidelity"],
                  subdir=rel["subdir"], virial_types=rel["virial_types"],
                  type_names=dict(enumerate(rel["type_names"])),
                  length_unit=rel["length_unit"], energy_unit=rel["energy_unit"], labels=rel["labels"],
                  limits=dataset.Limits.from_config(snakemake.params.checks),
                  sha256=rel["sha256"] if rel["path"] is not None else None)
dataset.validate(ds, snakemake.input[0], allowed_species=snakemake.params.species)
ds.metadata["sha256"] = dataset.file_sha256(snakemake.input[0]) if rel["path"] is None else rel["sha256"]
dataset.save(snakemake.output[0], ds)
log.info("read %d configurations (%d with virial) into %s", len(ds), ds.virial_mask.sum(),
         snakemake.output[0])
