"""MD ensembles and the stress-fluctuation estimator on the reference potential, whose answers
are known independently (0 K finite-strain constants, equipartition, energy conservation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusedmlp import elastic, units
from fusedmlp.md.ensembles import Barostat, Thermostat
from fusedmlp.md.neighbors import NeighborGraph, frame_graphs
from fusedmlp.md.simulate import MDSettings, Simulator, lattice_site_momenta, run
from fusedmlp.observables.stress import born_terms, frame_pressure, kinetic_tensor, stress_fluctuation, volume
from fusedmlp.observables.averages import block_estimate
from fusedmlp.quantity import energy_forces_virial, lagrangian_strained
from fusedmlp.reference.eam import graph_energy_fn, zhou2004
from fusedmlp.structures import crystal

TI = 47.867
A0, COVERA0 = 2.9403, 1.6230  # the reference potential's 0 K lattice


@pytest.fixture(scope="module")
def eam():
    p = zhou2004("Ti")
    return p, graph_energy_fn(p)


def simulate(eam, atoms, s, **kw):
    p, e = eam
    return run(e, jnp.asarray(atoms.positions), np.asarray(atoms.cell), np.full(len(atoms), TI), s,
               NeighborGraph(p.cutoff, skin=1.0), progress=lambda m: None, **kw)


def born(eam, traj, skip=0):
    p, e = eam
    pos, boxes = traj.positions[skip:], traj.boxes[skip:]
    g = frame_graphs(pos, boxes, p.cutoff)
    f = jax.jit(jax.vmap(lambda r, b, g: born_terms(e)(r, b, graph=g)))
    return f(jnp.asarray(pos), jnp.asarray(boxes), g)


def test_born_terms_are_strain_derivatives(eam):
    """σᴮ = −W/V of ``quantity`` and Cᴮ = the finite-difference second derivative of U in the
    Lagrangian strain."""
    p, e = eam
    at = crystal("Ti", "hcp", A0, COVERA0, (2, 2, 2))
    at.rattle(0.05, seed=3)
    r, box = jnp.asarray(at.positions), jnp.asarray(np.asarray(at.cell))
    g = frame_graphs(r[None], box, p.cutoff)
    g = jax.tree_util.tree_map(lambda x: x[0], g)
    sb, cb = jax.jit(lambda r, b, g: born_terms(e)(r, b, graph=g))(r, box, g)
    _, _, w = jax.jit(lambda r, b, g: energy_forces_virial(e)(r, b, graph=g))(r, box, g)
    v = volume(box)
    np.testing.assert_allclose(sb, -np.array([w[a, b] for a, b in elastic.VOIGT]) / v, atol=1e-12)

    def u(e):  # energy at the Voigt strain e, by finite differences on the host
        return float(e_jit(*lagrangian_strained(np.asarray(r), np.asarray(box), elastic.voigt_to_strain(e)), g))

    e_jit = jax.jit(lambda r, b, g: e(r, b, g))
    h = 1e-4
    fd = np.zeros((6, 6))
    for i in range(6):
        for j in range(i, 6):
            di, dj = np.eye(6)[i] * h, np.eye(6)[j] * h
            fd[i, j] = fd[j, i] = (u(di + dj) - u(di - dj) - u(-di + dj) + u(-di - dj)) / (4 * h * h) / v
    np.testing.assert_allclose(cb, fd, atol=2e-5 * np.abs(fd).max())


@pytest.fixture(scope="module")
def hcp_20k(eam):
    at = crystal("Ti", "hcp", A0, COVERA0, (2, 2, 2))
    s = MDSettings(thermostat=Thermostat("langevin", temperature=20.0, friction_per_ps=10.0),
                   timestep_fs=2.0, steps=10000, record_every=10, chunk=2000, seed=1)
    return at, simulate(eam, at, s)


def test_stress_fluctuation_matches_zero_kelvin_finite_strain(eam, hcp_20k, ti_calc):
    """At low T the fluctuation formula reproduces the relaxed-ion 0 K constants; the Born term
    alone (no internal relaxation) does not."""
    at, traj = hcp_20k
    sb, cb = born(eam, traj, skip=100)
    v = float(volume(jnp.asarray(np.asarray(at.cell))))
    kin = jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(traj.momenta[100:]), traj.masses)
    c = stress_fluctuation(sb, cb, kin, jnp.asarray(traj.energies[100:]), v, len(at), 20.0)["isothermal"]
    c = units.ev_per_a3_to_gpa(np.asarray(c))
    ref = elastic.finite_strain_stiffness(ti_calc, at.positions, np.asarray(at.cell))
    got, want = elastic.hexagonal(c), elastic.hexagonal(ref)
    for k in want:
        assert abs(got[k] - want[k]) < 2.5, (k, got[k], want[k])
    born_only = elastic.hexagonal(units.ev_per_a3_to_gpa(np.asarray(cb.mean(0))))
    assert abs(born_only["C12"] - want["C12"]) > 8.0  # the relaxation term matters for hcp
    # pressure of the 0 K lattice at 20 K is small and equals the mean of the instantaneous one
    pv = units.ev_per_a3_to_gpa(np.asarray(frame_pressure(sb, kin, v)))
    assert np.all(np.abs(pv[:3]) < 0.2) and np.all(np.abs(pv[3:]) < 0.05)


def test_langevin_holds_temperature(hcp_20k):
    _, traj = hcp_20k
    t = traj.temperatures[100:]
    assert abs(t.mean() - 20.0) < 0.6, t.mean()


@pytest.mark.parametrize("kind", ["langevin", "nose-hoover"])
def test_thermostats_hold_temperature(eam, kind):
    at = crystal("Ti", "hcp", A0, COVERA0, (2, 2, 2))
    s = MDSettings(thermostat=Thermostat(kind, temperature=600.0, tau_fs=50.0), timestep_fs=1.0,
                   steps=6000, record_every=10, chunk=2000, seed=2)
    t = simulate(eam, at, s).temperatures[100:]
    mean, err = block_estimate(np.mean, t, 5)
    # canonical relative fluctuation of T for 3N−3 degrees of freedom
    assert abs(t.std() / t.mean() - np.sqrt(2 / (3 * len(at) - 3))) < 0.05
    assert abs(mean - 600.0) < max(4 * err, 12.0), (mean, err)


def test_nve_conserves_energy(eam):
    """Total energy drift at the demo time step (0.5 fs), reported per atom per ns."""
    at = crystal("Ti", "hcp", A0, COVERA0, (3, 3, 2))
    at.rattle(0.05, seed=4)
    s = MDSettings(thermostat=Thermostat("none", temperature=600.0), timestep_fs=0.5, steps=8000,
                   record_every=20, chunk=2000, seed=5)
    traj = simulate(eam, at, s)
    ke = 0.5 * np.sum(traj.momenta**2 / traj.masses[None, :, None], axis=(1, 2))
    total = (traj.energies + ke) / len(at)
    drift = np.polyfit(traj.times, total, 1)[0] * 1e3  # eV/atom/ns
    print(f"NVE drift {drift:.2e} eV/atom/ns, fluctuation {total.std():.2e} eV/atom")
    assert abs(drift) < 1e-3
    assert total.std() < 1e-4 * np.abs(ke / len(at)).mean() + 2e-5
    assert traj.temperatures.mean() > 200  # it really moved


@pytest.mark.slow  # ~20 s
def test_lattice_site_momenta_start_a_crystal_at_its_temperature(eam):
    """Equipartition: a crystal at its lattice sites given ``lattice_site_momenta`` for T runs at T
    in NVE (to the anharmonicity at 100 K and the finite sample), where Maxwell–Boltzmann momenta at
    T leave it near T/2. No centre-of-mass drift."""
    at = crystal("Ti", "hcp", A0, COVERA0, (3, 3, 2))
    masses = np.full(len(at), TI)
    s = MDSettings(thermostat=Thermostat("none", temperature=100.0), timestep_fs=1.0, steps=600,
                   record_every=10, chunk=600, seed=3)
    mean_t = {}
    for start, momenta in (("lattice", lattice_site_momenta(masses, 100.0, seed=3)), ("maxwell", None)):
        traj = simulate(eam, at, s, **({} if momenta is None else {"momenta": momenta}))
        mean_t[start] = traj.temperatures[10:].mean()  # after the first 0.1 ps (a vibration period)
        if momenta is not None:
            np.testing.assert_allclose(np.sum(momenta, 0), 0.0, atol=1e-10)
            # the kinetic energy it starts with: twice that of 100 K for 3N − 3 degrees of freedom
            t0 = np.sum(momenta**2 / units.mass_to_internal(masses)[:, None]) / ((3 * len(at) - 3) * units.KB)
            assert 140.0 < t0 < 260.0, t0
    assert abs(mean_t["lattice"] - 100.0) < 12.0, mean_t
    assert abs(mean_t["maxwell"] - 50.0) < 12.0, mean_t


def test_run_resumes_from_checkpoint(eam, tmp_path):
    at = crystal("Ti", "hcp", A0, COVERA0, (2, 2, 2))
    s = MDSettings(thermostat=Thermostat("langevin", temperature=300.0), barostat=Barostat(every=5),
                   timestep_fs=1.0, steps=400, record_every=20, chunk=100, seed=6, checkpoint_s=0.0)
    whole = simulate(eam, at, s)

    class Killed(Exception):
        pass

    def kill(msg):
        if "step 200/" in msg:
            raise Killed

    p, e = eam
    ck = tmp_path / "md.npz"
    with pytest.raises(Killed):
        run(e, jnp.asarray(at.positions), np.asarray(at.cell), np.full(len(at), TI), s,
            NeighborGraph(p.cutoff), checkpoint=ck, progress=kill)
    assert ck.exists()
    resumed = simulate(eam, at, s, checkpoint=ck)
    np.testing.assert_array_equal(resumed.positions, whole.positions)
    np.testing.assert_array_equal(resumed.final["box"], whole.final["box"])
    other = MDSettings(**{**s.__dict__, "seed": 7})
    with pytest.raises(ValueError, match="another run"):
        simulate(eam, at, other, checkpoint=ck)
    # a run that overrides the settings' temperature, seed or length is another run too
    sim = Simulator(lambda params, r, b, g: e(r, b, g), np.full(len(at), TI), s,
                    NeighborGraph(p.cutoff, skin=1.0))
    for override in ({"temperature": 600.0}, {"seed": 7}, {"steps": 600}):
        with pytest.raises(ValueError, match="another run"):
            sim.run(jnp.asarray(at.positions), np.asarray(at.cell), checkpoint=ck, progress=lambda m: None,
                    **override)


@pytest.mark.parametrize("kind", ["langevin", "nose-hoover"])
def test_step_with_virial_is_jax_mds_step_and_the_virial_where_it_ends(eam, kind):
    """``virial_step`` against jax-md's own step from the same state, and its virial against
    energy, forces and virial evaluated at the positions where the step ends."""
    from jax_md import space as jmd_space

    from fusedmlp.md.ensembles import integrator, virial_step

    p, e = eam
    at = crystal("Ti", "hcp", A0, COVERA0, (2, 2, 2))
    at.rattle(0.05, seed=3)
    box = jnp.asarray(np.asarray(at.cell))
    ng = NeighborGraph(p.cutoff, skin=1.0)
    nb = ng.allocate(jnp.asarray(at.positions), box)
    u = lambda r, neighbor, box, **kw: e(r, box, ng.graph(r, box, neighbor))  # noqa: E731
    efv = energy_forces_virial(lambda r, b: u(r, nb, b))
    th = Thermostat(kind, temperature=600.0, friction_per_ps=20.0, tau_fs=20.0)
    _, shift = jmd_space.free()
    init_fn, step_fn = integrator(th, u, shift, 2e-3)
    step = virial_step(th, lambda r, neighbor, box: efv(r, box)[1:], shift, 2e-3)
    kT = units.kT(450.0)  # a run's own temperature overrides the thermostat's
    st = init_fn(jax.random.PRNGKey(0), jnp.asarray(at.positions), mass=jnp.full((len(at), 1), TI),
                 neighbor=nb, box=box, kT=kT)
    ref, got = st, st
    for _ in range(3):
        ref = step_fn(ref, neighbor=nb, box=box, kT=kT)
        got, w = step(got, neighbor=nb, box=box, kT=kT)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(w), np.asarray(efv(ref.position, box)[2]), rtol=1e-12, atol=1e-12)
    assert float(jnp.abs(ref.position - st.position).max()) > 1e-4  # the steps moved the atoms
    assert virial_step(Thermostat("none"), None, shift, 2e-3) is None


def test_npt_takes_the_virial_from_the_step_before_each_cell_update(eam, monkeypatch):
    """An NPT run whose cell updates take the virial from the step before them follows the
    trajectory of the run that evaluates it apart after that step (float64; the driver's wiring
    is the same for both thermostats, whose steps the test above checks)."""
    import fusedmlp.md.simulate as md_simulate

    at = crystal("Ti", "hcp", A0 * 1.01, 1.58, (2, 2, 2))
    s = MDSettings(thermostat=Thermostat("langevin", temperature=300.0),
                   barostat=Barostat(pressure_gpa=0.0, tau_ps=0.2, coupling="hexagonal", every=5),
                   timestep_fs=1.0, steps=200, record_every=20, chunk=100, seed=4)
    fused = simulate(eam, at, s)
    monkeypatch.setattr(md_simulate, "virial_step", lambda *a: None)
    apart = simulate(eam, at, s)
    assert float(np.abs(apart.boxes[-1] - apart.boxes[0]).max()) > 1e-3  # the cell moved
    np.testing.assert_allclose(fused.boxes, apart.boxes, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fused.positions, apart.positions, rtol=0, atol=1e-8)


def test_blow_up_is_reported(eam):
    at = crystal("Ti", "hcp", A0, COVERA0, (2, 2, 2))
    at.positions[1] = at.positions[0] + [0.3, 0, 0]  # nearly overlapping atoms
    s = MDSettings(thermostat=Thermostat("none", temperature=300.0), timestep_fs=5.0, steps=200,
                   record_every=10, chunk=100)
    with pytest.raises((FloatingPointError, RuntimeError)):
        simulate(eam, at, s)


@pytest.mark.slow
def test_npt_lattice_has_zero_pressure_and_independent_c_over_a(eam):
    """NPT from a wrong c/a relaxes a and c independently; NVT at the mean NPT cell then has
    zero pressure within its error."""
    at = crystal("Ti", "hcp", A0 * 1.01, 1.58, (3, 3, 2))
    s = MDSettings(thermostat=Thermostat("langevin", temperature=300.0),
                   barostat=Barostat(pressure_gpa=0.0, tau_ps=0.2, coupling="hexagonal", every=5),
                   timestep_fs=1.0, steps=24000, record_every=20, chunk=2000, seed=8)
    traj = simulate(eam, at, s)
    keep = slice(len(traj.boxes) // 3, None)
    a = np.linalg.norm(traj.boxes[keep, 0], axis=1) / 3
    c = traj.boxes[keep, 2, 2] / 2
    assert 1.60 < (c / a).mean() < 1.64  # c/a left 1.58 for the potential's own ≈ 1.62
    assert abs(a.mean() - A0) < 0.02
    box = np.mean(traj.boxes[keep], axis=0)
    frac = traj.final["positions"] @ np.linalg.inv(traj.final["box"])
    at.set_cell(box)
    at.positions = frac @ box
    nvt = MDSettings(thermostat=Thermostat("langevin", temperature=300.0), timestep_fs=1.0,
                     steps=12000, record_every=20, chunk=2000, seed=9)
    t2 = simulate(eam, at, nvt)
    sb, _ = born(eam, t2, skip=100)
    kin = jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(t2.momenta[100:]), t2.masses)
    per_frame = np.asarray(jax.vmap(lambda s, k: frame_pressure(s[None], k[None], volume(jnp.asarray(box))))(sb, kin))
    p = units.ev_per_a3_to_gpa(per_frame[:, :3].mean(1))
    mean, err = block_estimate(np.mean, p, 5)
    print(f"NPT a {a.mean():.4f} c/a {(c / a).mean():.4f}; NVT pressure {mean:.4f} ± {err:.4f} GPa")
    assert abs(mean) < max(3 * err, 0.05)


@pytest.mark.slow
def test_fcc_stress_fluctuation_has_cubic_symmetry(eam, ti_calc):
    """fcc at 50 K: C11≈C22≈C33, C12≈C13≈C23, C44≈C55≈C66 within noise, and the cubic
    constants match the 0 K finite-strain ones."""
    at = crystal("Ti", "fcc", 4.1545, None, (2, 2, 2))
    s = MDSettings(thermostat=Thermostat("langevin", temperature=50.0, friction_per_ps=10.0),
                   timestep_fs=2.0, steps=10000, record_every=10, chunk=2000, seed=11)
    traj = simulate(eam, at, s)
    sb, cb = born(eam, traj, skip=100)
    v = float(volume(jnp.asarray(np.asarray(at.cell))))
    kin = jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(traj.momenta[100:]), traj.masses)
    c = stress_fluctuation(sb, cb, kin, jnp.asarray(traj.energies[100:]), v, len(at), 50.0)["isothermal"]
    c = units.ev_per_a3_to_gpa(np.asarray(c))
    d, off, shear = np.diag(c)[:3], [c[0, 1], c[0, 2], c[1, 2]], np.diag(c)[3:]
    print("fcc C diag", d, "off", off, "shear", shear)
    for group in (d, off, shear):
        assert np.ptp(group) < 4.0
    ref = elastic.cubic(elastic.finite_strain_stiffness(ti_calc, at.positions, np.asarray(at.cell), relax=False))
    got = elastic.cubic(c)
    for k in ref:
        assert abs(got[k] - ref[k]) < 4.0, (k, got[k], ref[k])


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_dynamics_from_the_evaluation_config_give_the_thermostat_and_barostat_of_its_runs(name):
    """``md.settings.Dynamics`` of ``evaluation.md`` builds exactly the thermostat, barostat and
    step counts the evaluation built field by field before it existed (``RunSettings``)."""
    import dataclasses
    from pathlib import Path

    from fusedmlp.config import load_config
    from fusedmlp.evaluation.jobs import run_settings
    from fusedmlp.md.settings import Dynamics

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / name)
    md = cfg["evaluation"]["md"]
    dyn = Dynamics.from_config(md)
    assert dyn == run_settings(cfg)
    assert dyn.thermostat(900.0) == Thermostat(md["thermostat"], temperature=900.0,
                                               friction_per_ps=md["friction_per_ps"], tau_fs=md["tau_fs"],
                                               chain_length=md["chain_length"], chain_steps=md["chain_steps"],
                                               sy_steps=md["sy_steps"])
    for coupling in ("hexagonal", "isotropic"):
        assert dyn.barostat(0.0, coupling) == Barostat(pressure_gpa=0.0, tau_ps=md["barostat_tau_ps"],
                                                       coupling=coupling,
                                                       compressibility_per_gpa=md["compressibility_per_gpa"])
    assert (dyn.timestep_fs, dyn.seed) == (md["timestep_fs"], md["seed"])
    assert dyn.steps(1.0) == max(1, int(round(1.0 / (md["timestep_fs"] * units.FS))))
    assert dyn.md(300.0, steps=10, record_every=5, chunk=50) == MDSettings(
        thermostat=dyn.thermostat(300.0), timestep_fs=md["timestep_fs"], steps=10, record_every=5, chunk=50,
        seed=md["seed"])
    # evaluation.diffusion names its own thermostat kind
    nh = dataclasses.replace(dyn, thermostat_kind="nose-hoover")
    assert nh.thermostat(300.0).kind == "nose-hoover" and nh.thermostat(300.0).tau_fs == md["tau_fs"]
    # keys of a section that are not dynamics (run lengths of reference.sampling.md) are not read
    s = cfg["reference"]["sampling"]["md"]
    assert Dynamics.from_config(s) == Dynamics(timestep_fs=s["timestep_fs"], friction_per_ps=s["friction_per_ps"])


def test_dynamics_refuse_an_unknown_thermostat_kind():
    import dataclasses

    from fusedmlp.md.settings import Dynamics

    with pytest.raises(ValueError, match="'berendsen'"):
        Dynamics.from_config({"thermostat": "berendsen", "timestep_fs": 1.0})
    with pytest.raises(ValueError, match="'andersen'"):
        dataclasses.replace(Dynamics(), thermostat_kind="andersen")
    with pytest.raises(ValueError, match="Suzuki"):
        Dynamics(sy_steps=4)
