"""Sample the reference dataset's configurations (unlabelled) with the sampling level."""
import jax

jax.config.update("jax_enable_x64", True)

from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.reference import ReferenceCalculator, level_params
from fusedmlp.reference.sampling import SamplingSettings, sample_configurations

log = logs.setup(snakemake.log[0])
ref = snakemake.params.settings["reference"]
settings = SamplingSettings.from_config(ref)
calc = ReferenceCalculator(level_params(ref, ref["sampling_level"]))
log.info("sampling configurations with reference level %r", ref["sampling_level"])
configs = sample_configurations(settings, calc, progress=log.info)
configs.metadata["sampling_level"] = ref["sampling_level"]
dataset.save(snakemake.output[0], configs)
log.info("wrote %d configurations to %s", len(configs), snakemake.output[0])
