"""MD neighbour structures: overflow is detected and handled by reallocating and recomputing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusedmlp.md.neighbors import NeighborGraph
from fusedmlp.md.simulate import LangevinSettings, nvt_langevin
from fusedmlp.model.potential import ModelSettings, energy_fn, init_params
from fusedmlp.structures import crystal

TINY = dict(embed_size=8, out_embed_size=8, type_embed_size=4, int_embed_size=4, basis_embed_size=3,
            n_blocks=1, aggregation_scale=20.0)


@pytest.fixture(scope="module")
def energy():
    s = ModelSettings.create(["Ti"], **TINY)
    p = init_params(s, jax.random.PRNGKey(0), dtype=jnp.float64)
    p["net"] = {k: ({"w": 0.05 * jax.random.normal(jax.random.PRNGKey(2), v["w"].shape)}
                    if k.endswith("lin_out") else v) for k, v in p["net"].items()}
    e = energy_fn(s)
    return lambda r, b, spc, g: e(p, r, b, spc, g)


@pytest.mark.parametrize("supercell, host", [((2, 2, 2), True),
                                             pytest.param((5, 5, 3), True, marks=pytest.mark.slow)])
def test_overflow_is_reallocated_and_recomputed(energy, supercell, host):
    at = crystal("Ti", "hcp", 2.95, 1.6, supercell)
    at.rattle(0.05, seed=1)
    pos = jnp.asarray(at.positions)
    spc = jnp.zeros(len(at), jnp.int32)
    md = LangevinSettings(temperature=600.0, timestep_fs=1.0, steps=40, chunk=10, seed=3)
    roomy = NeighborGraph(np.asarray(at.cell), 5.0, skin=1.0, capacity=40)
    assert roomy.host == host
    ref, _, s1 = nvt_langevin(energy, pos, np.asarray(at.cell), spc, 47.867, md, roomy, progress=lambda m: None)
    assert s1["reallocations"] == 0
    # no headroom anywhere: a tiny skin (the host table goes stale, the jax-md list rebuilds
    # often), no spare candidate slots and no spare graph slots
    tight = NeighborGraph(np.asarray(at.cell), 5.0, skin=0.1, margin=1.0, extra=0)
    assert tight.host == host
    got, _, s2 = nvt_langevin(energy, pos, np.asarray(at.cell), spc, 47.867, md, tight,
                              progress=lambda m: None)
    # the run had to reallocate, and the recomputed trajectory is the same trajectory
    assert s2["reallocations"] >= 1
    np.testing.assert_allclose(np.asarray(got.position), np.asarray(ref.position), atol=1e-6)
    assert 300 < np.mean(s2["temperatures"]) < 1200
