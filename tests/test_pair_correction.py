"""The tabulated pair correction (IBI): its interpolant against scipy's spline, smoothness at its
cutoff, forces and virial against finite differences, its run-time form (the evaluation
potentials': the same correction, one program with and without it), and corrected model files
everywhere (file round trip, ASE calculator, evaluation potential, an MD run)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from fusedmlp.model import graph as G
from fusedmlp.model.api import Potential
from fusedmlp.model.energy import energy_fn
from fusedmlp.model.file import load_model, save_model
from fusedmlp.model.pair_correction import (PairCorrectionSettings, correction_energy, pair_correction,
                                            runtime_correction_energy, runtime_table)
from fusedmlp.model.params import with_pair_correction
from fusedmlp.model.settings import ModelSettings

from test_model import SMALL, random_params, triclinic_cell

PC = PairCorrectionSettings(r_min=1.8, cutoff=4.5, n_points=28)


def wiggly_table(s=PC, seed=0):
    """A table with structure on every scale (a well, a bump, noise) and a non-zero last entry."""
    r = s.grid
    rng = np.random.default_rng(seed)
    u = 0.3 * np.exp(-((r - 2.6) / 0.3) ** 2) - 0.15 * np.exp(-((r - 3.4) / 0.4) ** 2) + 0.02 * rng.normal(size=r.size)
    return {"u": jnp.asarray(u + 0.05)}


# jitted: evaluated op by op, every array shape of these tests would compile each of its ops
_pair_correction = jax.jit(pair_correction, static_argnums=0)


def v(r, table, s=PC):
    return np.asarray(_pair_correction(s, table, jnp.asarray(r, jnp.float64)))


def test_interpolant_is_the_natural_clamped_spline_through_the_shifted_table():
    """Inside the table v is scipy's cubic spline through u − u_last, natural at r_min and with
    zero slope at the cutoff; below r_min the tangent line; zero at and beyond the cutoff."""
    table = wiggly_table()
    y = np.asarray(table["u"]) - float(table["u"][-1])
    ref = CubicSpline(PC.grid, y, bc_type=((2, 0.0), (1, 0.0)))
    r = np.linspace(PC.r_min, PC.cutoff - 1e-9, 997)
    np.testing.assert_allclose(v(r, table), ref(r), atol=1e-12)
    np.testing.assert_allclose(v(PC.grid[:-1], table), y[:-1], atol=1e-12)  # it interpolates
    below = np.array([0.5, 1.0, 1.7])
    np.testing.assert_allclose(v(below, table), y[0] + ref(PC.r_min, 1) * (below - PC.r_min), atol=1e-12)
    assert np.all(v([PC.cutoff, PC.cutoff + 1e-6, 5.0, 9.0], table) == 0.0)


def test_correction_and_its_force_vanish_smoothly_at_the_cutoff_and_are_continuous():
    table = wiggly_table(seed=1)
    dv = jax.jit(jax.vmap(jax.grad(lambda r: pair_correction(PC, table, r))))
    rc, h = PC.cutoff, 1e-6
    # value and slope → 0 from inside; the slope of autodiff equals finite differences there
    assert abs(v(rc - h, table)) < 1e-9 and abs(float(dv(jnp.array([rc - h]))[0])) < 1e-5
    r = np.linspace(0.5, 6.0, 5001)
    d_auto = np.asarray(dv(jnp.asarray(r)))
    d_fd = (v(r + 1e-6, table) - v(r - 1e-6, table)) / 2e-6
    np.testing.assert_allclose(d_auto, d_fd, atol=2e-6)
    # no jump anywhere in v or v' (every node, r_min and the cutoff included)
    dr = r[1] - r[0]
    assert np.max(np.abs(np.diff(v(r, table)))) < 30 * dr * np.max(np.abs(d_auto))
    assert np.max(np.abs(np.diff(d_auto))) < 0.1


@pytest.fixture(scope="module")
def corrected():
    base = ModelSettings.create(["Ti", "Zr"], **SMALL)
    params = random_params(base)
    settings, params = with_pair_correction(base, params, PC, wiggly_table())
    return base, settings, params


def _graph(pos, box, cutoff):
    nbr, shf, msk = G.neighbor_table(pos, box, cutoff)
    return G.build_graph(jnp.asarray(pos), jnp.asarray(box), jnp.asarray(nbr), jnp.asarray(shf, float),
                         jnp.asarray(msk), cutoff, nbr.shape[1])


def test_energy_adds_the_pair_sum_once_per_pair(corrected):
    """U(corrected) − U(network) = Σ_{i<j, images} v(r_ij), summed by brute force over images."""
    base, settings, params = corrected
    pos, box, z = triclinic_cell(seed=4)
    sp = jnp.asarray(np.where(z == 22, 0, 1))
    g = _graph(pos, box, settings.dimenet.cutoff)
    diff = (jax.jit(energy_fn(settings))(params, jnp.asarray(pos), jnp.asarray(box), sp, g)
            - jax.jit(energy_fn(base))(params, jnp.asarray(pos), jnp.asarray(box), sp, g))
    n = len(pos)
    shifts = np.array(np.meshgrid(*[range(-3, 4)] * 3)).reshape(3, -1).T
    d = pos[None, None, :, :] + (shifts @ box)[:, None, None, :] - pos[None, :, None, :]
    r = np.linalg.norm(d, axis=-1)
    r[np.all(shifts == 0, axis=1)] += np.diag(np.full(n, np.inf))  # no self pair in the home cell
    brute = 0.5 * np.sum(v(np.minimum(r, 50.0).ravel(), params["pair"]))
    np.testing.assert_allclose(float(diff), brute, rtol=1e-10, atol=1e-12)
    assert abs(brute) > 1e-2


def test_forces_and_virial_are_finite_differences_of_the_corrected_energy(corrected):
    _, settings, params = corrected
    pot = Potential(settings, params)
    pos, box, z = triclinic_cell(seed=5)
    u, f, w = pot(pos, box, z)
    h = 1e-5
    for i, a in [(0, 0), (2, 1), (3, 2)]:
        p, m = pos.copy(), pos.copy()
        p[i, a] += h
        m[i, a] -= h
        fd = -(pot(p, box, z)[0] - pot(m, box, z)[0]) / (2 * h)
        assert abs(f[i, a] - fd) < 1e-6 * max(1.0, abs(fd)), (i, a, f[i, a], fd)
    for a, b in [(0, 0), (1, 1), (0, 2), (1, 2)]:
        e = np.zeros((3, 3))
        e[a, b] = h
        up = pot(pos @ (np.eye(3) + e).T, box @ (np.eye(3) + e).T, z)[0]
        dn = pot(pos @ (np.eye(3) - e).T, box @ (np.eye(3) - e).T, z)[0]
        assert abs(w[a, b] + (up - dn) / (2 * h)) < 1e-6, (a, b)
    # the correction alone: its forces and virial are those of a pair potential (Σ r⊗F)
    g = _graph(pos, box, settings.dimenet.cutoff)
    from fusedmlp.quantity import energy_forces_virial
    _, fp, wp = jax.jit(energy_forces_virial(lambda r, b: correction_energy(PC, params["pair"], r, b, g)))(
        jnp.asarray(pos), jnp.asarray(box))
    np.testing.assert_allclose(np.asarray(wp), np.asarray(wp).T, atol=1e-10)
    assert abs(float(jnp.sum(fp))) < 1e-10 and float(jnp.abs(fp).max()) > 1e-3


def test_runtime_form_is_the_correction_and_zero_without_one(corrected):
    """The run-time form (grid and second derivatives as arrays, padded) gives the correction's
    energy, forces and virial to round-off; the form of a model without a correction gives
    exactly zero energy and forces."""
    from fusedmlp.quantity import energy_forces_virial

    _, settings, params = corrected
    pos, box, z = triclinic_cell(seed=7)
    g = _graph(pos, box, settings.dimenet.cutoff)
    args = (jnp.asarray(pos), jnp.asarray(box))
    ref = jax.jit(energy_forces_virial(lambda r, b: correction_energy(PC, params["pair"], r, b, g)))(*args)
    table = runtime_table(PC, params["pair"], settings.dimenet.cutoff, jnp.float64)
    assert table["y"].shape == (256,)  # padded: every table up to 256 knots is one program
    got = jax.jit(energy_forces_virial(lambda r, b: runtime_correction_energy(table, r, b, g)))(*args)
    assert abs(float(ref[0])) > 1e-2
    for a, b in zip(got, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    zero = runtime_table(None, None, settings.dimenet.cutoff, jnp.float64)
    u, f, w = jax.jit(energy_forces_virial(lambda r, b: runtime_correction_energy(zero, r, b, g)))(*args)
    assert float(u) == 0.0 and not np.any(np.asarray(f)) and not np.any(np.asarray(w))


def test_evaluation_programs_of_models_with_and_without_a_correction_are_one_program(tmp_path):
    """The evaluation rules' potentials of a corrected model and of the model it corrects lower
    to the same program (so the corrected model's jobs load it from the persistent cache), and
    each gives its own energy."""
    from fusedmlp.config import validate_config
    from fusedmlp.evaluation.potentials import load_potential
    from fusedmlp.model.settings import model_settings

    arch = {k: v for k, v in SMALL.items() if k != "aggregation_scale"}  # from the data, not the config
    cfg = validate_config({"species": ["Ti"], "model": {"dtype": "float64", **arch}})
    base = model_settings(cfg, aggregation_scale=20.0)
    params = random_params(base)
    settings, corrected = with_pair_correction(base, params, PC, wiggly_table(seed=3))
    save_model(tmp_path / "base.npz", base, params)
    save_model(tmp_path / "ibi.npz", settings, corrected)
    pos, box, _ = triclinic_cell(seed=8)
    z = np.full(len(pos), 22)
    g = _graph(pos, box, settings.dimenet.cutoff)
    args = (jnp.asarray(pos), jnp.asarray(box), g)
    texts, energies = [], []
    for name in ("base", "ibi"):
        pot = load_potential(cfg, name, tmp_path / f"{name}.npz")
        u = pot.energy(z)
        texts.append(jax.jit(u).lower(pot.params, *args).as_text())
        energies.append(float(jax.jit(u)(pot.params, *args)))
    assert texts[0] == texts[1]
    sp = jnp.zeros(len(pos), jnp.int32)
    for e, (s, p) in zip(energies, [(base, params), (settings, corrected)]):
        assert abs(e - float(jax.jit(energy_fn(s))(p, args[0], args[1], sp, g))) < 1e-9
    assert abs(energies[1] - energies[0]) > 1e-3


def test_a_correction_beyond_the_network_cutoff_is_refused():
    base = ModelSettings.create(["Ti"], **SMALL)
    with pytest.raises(ValueError, match="exceeds the network's cutoff"):
        dataclasses.replace(base, pair_correction=PairCorrectionSettings(2.0, 6.0, 10))


def test_corrected_model_file_round_trips_and_loads(tmp_path, corrected):
    """Save and load (the table is a parameter, the grid a setting; the architecture check
    passes against the uncorrected model's), the ASE calculator; a file of a model without the
    correction (older files) loads with none."""
    from ase import Atoms

    base, settings, params = corrected
    save_model(tmp_path / "m.npz", settings, params, metadata={"ibi": "test"})
    s2, p2, meta = load_model(tmp_path / "m.npz", expected=base)  # same architecture as the base
    assert s2 == settings and s2.pair_correction == PC and meta["ibi"] == "test"
    np.testing.assert_array_equal(np.asarray(p2["pair"]["u"]), np.asarray(params["pair"]["u"]))
    pos, box, z = triclinic_cell(seed=6)
    atoms = Atoms(numbers=z, positions=pos, cell=box, pbc=True)
    atoms.calc = Potential.load(tmp_path / "m.npz").calculator()
    u = atoms.get_potential_energy()
    assert u == Potential(settings, params)(pos, box, z)[0]
    assert abs(u - Potential(base, params)(pos, box, z)[0]) > 1e-3  # the correction is in it
    d = settings.to_dict()
    d.pop("pair_correction")
    assert ModelSettings.from_dict(d).pair_correction is None


@pytest.mark.slow
def test_corrected_model_file_runs_in_the_evaluation_and_md(tmp_path):
    """The evaluation rules' potential (checked against the configuration's architecture) gives
    the corrected energy, and MD runs with it."""
    from fusedmlp.config import validate_config
    from fusedmlp.evaluation.potentials import load_potential
    from fusedmlp.evaluation.sampling import simulate
    from fusedmlp.md.settings import Dynamics
    from fusedmlp.structures import crystal

    cfg = validate_config({"species": ["Ti"], "model": {"dtype": "float64", "embed_size": 8, "out_embed_size": 8,
                                                        "type_embed_size": 4, "int_embed_size": 4,
                                                        "basis_embed_size": 3, "n_blocks": 2}})
    from fusedmlp.model.settings import model_settings
    ti = model_settings(cfg, aggregation_scale=20.0)
    ti_s, ti_p = with_pair_correction(ti, random_params(ti), PC, wiggly_table(seed=2))
    save_model(tmp_path / "ti.npz", ti_s, ti_p)
    pot = load_potential(cfg, "ibi", tmp_path / "ti.npz")
    hcp = crystal("Ti", "hcp", 2.95, 1.6, (2, 2, 2))
    e_eval = pot.host_efv(hcp.numbers)(hcp.positions, np.asarray(hcp.cell))[0]
    assert abs(e_eval - Potential(ti_s, ti_p)(hcp.positions, np.asarray(hcp.cell), hcp.numbers)[0]) < 1e-9
    traj = simulate(pot, hcp, 300.0, Dynamics(timestep_fs=1.0), 0.02, 5.0, progress=lambda m: None)
    assert len(traj.positions) == 4 and np.all(np.isfinite(traj.energies))
