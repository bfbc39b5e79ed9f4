import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

# The reference potential and the finite-difference checks need float64.
jax.config.update("jax_enable_x64", True)

# One persistent compilation cache for the session, empty at its start, as a campaign shares one
# among its jobs: tests that build the same program (a trainer's update step for another
# setting, the MD chunk of another run, the jobs of the workflow tests in their Snakemake
# subprocesses) load it instead of compiling it again. JAX reads the setting at the first
# compilation, so it is set here; the directory is removed at the end of the session.
_CACHE = tempfile.mkdtemp(prefix="fusedmlp-tests-jax-cache-")
for _key, _value in (("jax_compilation_cache_dir", _CACHE), ("jax_persistent_cache_min_compile_time_secs", 0),
                     ("jax_persistent_cache_min_entry_size_bytes", 0)):
    jax.config.update(_key, _value)
    os.environ[_key.upper()] = str(_value)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)

from fusedmlp.data.dataset import from_configs  # noqa: E402
from fusedmlp.reference import ReferenceCalculator, zhou2004  # noqa: E402
from fusedmlp.structures import crystal  # noqa: E402


@pytest.fixture(scope="session")
def ti_calc():
    return ReferenceCalculator(zhou2004("Ti"))


def make_configs(calc, n=5, seed=0):
    """A few labelled Ti configurations of different sizes and shapes."""
    rng = np.random.default_rng(seed)
    cells = [crystal("Ti", "hcp", 2.94, 1.623, (2, 2, 1)), crystal("Ti", "bcc", 3.29, None, (2, 1, 1)),
             crystal("Ti", "fcc", 4.15, None, (1, 1, 1)), crystal("Ti", "hcp", 2.94, 1.623, (1, 1, 2))]
    configs = []
    for k in range(n):
        at = cells[k % len(cells)]
        eps = rng.uniform(-0.02, 0.02, (3, 3))
        d = np.eye(3) + 0.5 * (eps + eps.T)
        box = np.asarray(at.cell) @ d.T
        pos = at.positions @ d.T + rng.normal(scale=0.05, size=at.positions.shape)
        e, f, w = calc(pos, box)
        configs.append(dict(positions=pos, species=at.numbers, box=box, energy=e, forces=f,
                            virial=w if k % 2 == 0 else None, fidelity="ref",
                            config_type=f"test/{k}", source=f"fixture#{k}"))
    return configs


@pytest.fixture(scope="session")
def small_dataset(ti_calc):
    return from_configs(make_configs(ti_calc), metadata={"what": "test fixture"})
