"""Label the sampled configurations at one level of the reference potential."""
import jax

jax.config.update("jax_enable_x64", True)

from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.reference import ReferenceCalculator, level_params
from fusedmlp.reference.sampling import label

log = logs.setup(snakemake.log[0])
cfg = snakemake.params.settings
ref = cfg["reference"]
level = snakemake.wildcards.level
configs = dataset.load(snakemake.input[0], allowed_species=cfg["species"])
calc = ReferenceCalculator(level_params(ref, level))
labelled = label(configs, calc, fidelity=level, virial_kinds=ref["virial_kinds"], progress=log.info)
labelled.metadata.update(reference_level=level, level_scales=ref["levels"][level],
                         potential=f"{ref['potential']} {ref['element']} (reference potential, not DFT)")
dataset.save(snakemake.output[0], labelled)
log.info("wrote %s", snakemake.output[0])
