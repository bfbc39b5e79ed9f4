"""The stress-fluctuation estimator (``observables.stress``) on models with known answers.

* An energy of the volume alone, U = a·V: a fluid, whose stress–strain (Birch) coefficients are
  B11 = B12 = K = −V dP/dV = N k_BT/V and B44 = B66 = 0 at any pressure (a = N k_BT/V: zero
  total pressure), and whose adiabatic K_S is γK with γ = 5/3 (ideal gas).
* Atoms tethered harmonically to the sites of the box, U = a·V + ½κ(V) Σ|r_i − s_i h|² with
  κ = κ₀ (V₀/V)^g: exactly sampled (Gaussian positions, Maxwell momenta); the free energy depends
  on V alone, A = aV + (3N/2) k_BT ln κ(V) + f(T), so B = K δ_ij δ_kl with
  K_T = (3/2) g N k_BT/V, (∂P/∂T)_V = (3/2) g N k_B/V, C_V = 3N k_B and
  K_S − K_T = T V (∂P/∂T)²/C_V = (3/4) g² N k_BT/V. The configurational thermal stress and
  var(U) carry the adiabatic correction here (the kinetic parts alone would give another number).
  Its pressure P = (3/2) g N k_BT/V − a depends on T and V alone, so along boxes that expand at
  linear rates α (V'/V = α_1 + α_2 + α_3) it changes at dP/dT = (3/2) g N k_B/V (1 − T Σα): the
  slope ``pressure_path_slope`` takes from the thermal stress and B^T.
* Finite temperature, finite strain (slow): NVT of the reference EAM, hcp Ti at 1200 K; the mean
  Cauchy stress of boxes strained by ±δ (same seeds) gives ∂σ/∂ε = B^T by central differences.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusedmlp import elastic, units
from fusedmlp.evaluation.elasticity import summarize
from fusedmlp.observables.stress import (born_terms, kinetic_tensor, pressure_path_slope, stress_fluctuation,
                                        thermal_stress, volume)

T = 600.0
N = 8
MASS = units.mass_to_internal(47.867)


def frames(energy, positions, box, seed=0):
    """Born terms, kinetic tensors and energies of ``positions`` (F, N, 3) at one box, with momenta
    drawn at T."""
    rng = np.random.default_rng(seed)
    mom = rng.normal(scale=np.sqrt(MASS * units.kT(T)), size=positions.shape)
    sb, cb = jax.vmap(lambda r: born_terms(energy)(r, box))(positions)
    kin = jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(mom), jnp.full(positions.shape[1], MASS))
    u = jax.vmap(lambda r: energy(r, box))(positions)
    return sb, cb, kin, u


@pytest.mark.parametrize("pressure_factor", [1.0, 0.0, 3.0])
def test_volume_only_energy_has_no_shear_stiffness(pressure_factor):
    """U = a·V: B11 = B12 = ⟨K_xx⟩/V (= N k_BT/V up to the momenta's noise), B44 = B66 = 0 to
    round-off, at zero total pressure (a = N k_BT/V) and at others; adiabatic B11 ≈ (5/3) N k_BT/V."""
    rng = np.random.default_rng(1)
    box = jnp.asarray(np.diag([9.0, 10.0, 11.0]) + 0.3 * np.triu(np.ones((3, 3)), 1))
    v = float(volume(box))
    p = N * units.kT(T) / v
    a = pressure_factor * p

    def energy(r, b):
        return a * volume(b)

    pos = jnp.asarray(rng.uniform(0, 9, (200, N, 3)))
    sb, cb, kin, u = frames(energy, pos, box)
    c = stress_fluctuation(sb, cb, kin, u, v, N, T)
    k = np.asarray(kin).mean(0) / v
    b_t, b_s = np.asarray(c["isothermal"]), np.asarray(c["adiabatic"])
    expected = np.outer(elastic.tensor_to_voigt(k), [1, 1, 1, 0, 0, 0])  # B_ijkl = K_ij δ_kl / V
    np.testing.assert_allclose(b_t, expected, atol=1e-12 * p)
    assert abs(b_t[0, 0] - p) < 0.1 * p and abs(b_t[0, 1] - p) < 0.1 * p
    for i in (3, 4, 5):
        assert abs(b_t[i, i]) < 1e-12 * p and abs(b_s[i, i]) < 1e-12 * p
    np.testing.assert_allclose(b_s - b_t, (2 / 3) * p * np.outer([1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]),
                               atol=1e-12 * p)  # K_S − K_T = (γ − 1) p for the ideal gas
    # the mean pressure is p − a (kinetic minus the volume energy's): zero for a = p
    assert abs(np.trace(k) / 3 - np.mean(sb[:, :3]) - (p - a)) < 0.1 * p


def tethered_frames(g, n_frames=40000):
    """Exactly sampled frames of the tethered harmonic model (module docstring) at T: the Born
    terms, kinetic tensors, energies and the box volume."""
    rng = np.random.default_rng(2)
    box0 = np.diag([8.0, 8.0, 8.0]) + np.array([[0, 0.4, 0], [0, 0, 0.3], [0, 0, 0]])
    v0 = abs(np.linalg.det(box0))
    sites = rng.uniform(0, 1, (N, 3))
    kappa0, a = 2.0, 0.01

    def energy(r, b):
        vol = volume(b)
        kappa = kappa0 * (v0 / vol) ** g
        return a * vol + 0.5 * kappa * jnp.sum((r - sites @ b) ** 2)

    pos = sites @ box0 + rng.normal(scale=np.sqrt(units.kT(T) / kappa0), size=(n_frames, N, 3))
    return frames(energy, jnp.asarray(pos), jnp.asarray(box0), seed=3) + (v0,)


@pytest.mark.parametrize("g", [pytest.param(2.0, marks=pytest.mark.slow), 0.5])  # ~20 s each
def test_tethered_harmonic_isothermal_and_adiabatic_bulk_moduli(g):
    """B^T = K_T δδ and B^S = K_S δδ with the analytic K_T, K_S of the module docstring, from
    exactly sampled frames (statistical tolerance ~6 standard errors of 8 blocks)."""
    n_frames = 40000
    sb, cb, kin, u, v0 = tethered_frames(g, n_frames)
    p = N * units.kT(T) / v0
    want = {"isothermal": 1.5 * g * p, "adiabatic": 1.5 * g * p + 0.75 * g**2 * p}
    blocks = np.array_split(np.arange(n_frames), 8)
    for kind, k in want.items():
        def of(idx):
            c = np.asarray(stress_fluctuation(sb[idx], cb[idx], kin[idx], u[idx], v0, N, T)[kind]) / p
            return np.r_[c[:3, :3].ravel(), np.diag(c)[3:]]

        got, err = of(np.arange(n_frames)), np.std([of(b) for b in blocks], axis=0, ddof=1) / np.sqrt(8)
        expected = np.r_[np.full(9, k / p), np.zeros(3)]
        print(f"g {g} {kind}: B/p normal block mean {got[:9].mean():.3f} (want {k / p:.3f}), "
              f"shear {got[9:].round(3)}, err ≤ {err.max():.3f}")
        np.testing.assert_array_less(np.abs(got - expected), 6 * err + 1e-9)
        assert err.max() < 0.05 * want["isothermal"] / p  # the test resolves K_T and K_S − K_T


def test_pressure_slope_along_an_expanding_lattice():
    """dP/dT = −λ − B^T α along boxes expanding at α (anisotropic, with T Σα ≈ 0.5 so that the
    B^T α term is half the thermal stress's) against the analytic (3/2) g N k_B/V (1 − T Σα) of
    the tethered harmonic model; the fixed-box part T λ = −(3/2) g N k_BT/V on its own
    (statistical tolerance ~6 standard errors of 8 blocks)."""
    g, n_frames = 0.5, 40000
    sb, cb, kin, u, v0 = tethered_frames(g, n_frames)
    alpha = np.array([2e-4, 3e-4, 3.5e-4, 0.0, 0.0, 0.0])  # 1/K
    dp_dt_v = 1.5 * g * N * units.KB / v0
    want = dp_dt_v * (1 - T * alpha.sum())

    def of(idx):
        b_t = stress_fluctuation(sb[idx], cb[idx], kin[idx], u[idx], v0, N, T)["isothermal"]
        t_lambda = thermal_stress(sb[idx], u[idx], v0, N, T)
        return np.r_[np.asarray(pressure_path_slope(t_lambda, b_t, jnp.asarray(alpha), T)),
                     -np.asarray(t_lambda)[:3] / T]

    got = of(np.arange(n_frames))
    err = np.std([of(b) for b in np.array_split(np.arange(n_frames), 8)], axis=0, ddof=1) / np.sqrt(8)
    expected = np.r_[np.full(3, want), np.full(3, dp_dt_v)]
    print(f"dP/dT along the path {got[:3] / want} x analytic, (dP/dT)_V {got[3:] / dp_dt_v} x, "
          f"err ≤ {err.max() / want:.3f}")
    np.testing.assert_array_less(np.abs(got - expected), 6 * err + 1e-12)
    assert err.max() < 0.05 * want  # resolves the B^T α term (half of (dP/dT)_V)
    # the evaluation table's columns (MPa/K), with their block errors
    row = summarize({"born_stress": sb, "born_stiffness": cb, "kinetic": kin, "energy": u, "volume": v0},
                    N, T, "cubic", 8, expansion=alpha)
    mpa = units.ev_per_a3_to_mpa
    for name, value in (("dPa_dT_MPa_K", want), ("dPc_dT_MPa_K", want), ("dPa_dT_V_MPa_K", dp_dt_v),
                        ("dPc_dT_V_MPa_K", dp_dt_v)):
        assert abs(row[name] - mpa(value)) < 6 * row[f"{name}_err"], name
        assert row[f"{name}_err"] < 0.05 * mpa(value)


@pytest.mark.slow
def test_finite_temperature_finite_strain_matches_fluctuation_estimate():
    """hcp Ti (reference EAM, 36 atoms at its 0 K lattice) at 900 K, where the thermal pressure
    (≈ 3 GPa) and the kinetic term (N k_BT/V ≈ 0.7 GPa) matter: the isothermal Birch
    coefficients B_IJ = ∂σ_I/∂ε_J by central differences of the mean Cauchy stress (kinetic +
    virial) of NVT runs in boxes strained by ±δ (same initial state and Langevin noise: common
    random numbers, which keep the ± runs nearly synchronous) against the fluctuation estimate."""
    from fusedmlp.md.ensembles import Thermostat
    from fusedmlp.md.neighbors import NeighborGraph, frame_graphs
    from fusedmlp.md.simulate import MDSettings, Simulator
    from fusedmlp.observables.averages import block_slices, standard_error
    from fusedmlp.observables.stress import _pair_sym
    from fusedmlp.quantity import energy_forces_virial, strained
    from fusedmlp.reference.eam import graph_energy_fn, zhou2004
    from fusedmlp.structures import crystal

    temp, delta, n_blocks = 900.0, 0.01, 10
    pot = zhou2004("Ti")
    e = graph_energy_fn(pot)
    at = crystal("Ti", "hcp", 2.9403, 1.6230, (3, 3, 2))
    box0, n = np.asarray(at.cell), len(at)
    s = MDSettings(thermostat=Thermostat("langevin", temperature=temp, friction_per_ps=10.0),
                   timestep_fs=2.0, steps=2000, record_every=10, chunk=2000, seed=1)
    sim = Simulator(lambda prm, r, b, g: e(r, b, g), np.full(n, 47.867), s, NeighborGraph(pot.cutoff, skin=1.0))
    quiet = dict(progress=lambda m: None)
    eq = sim.run(jnp.asarray(at.positions), box0, **quiet)
    frac, mom = eq.final["positions"] @ np.linalg.inv(box0), eq.final["momenta"]

    def kinetic(tr):
        return jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(tr.momenta), tr.masses)

    # the fluctuation estimate at the reference box
    tr = sim.run(jnp.asarray(frac @ box0), box0, momenta=mom, seed=2, steps=50_000, **quiet)
    g = frame_graphs(tr.positions, box0, pot.cutoff)
    sb, cb = jax.jit(jax.vmap(lambda r, g: born_terms(e)(r, jnp.asarray(box0), graph=g)))(jnp.asarray(tr.positions), g)
    kin, u, v = kinetic(tr), jnp.asarray(tr.energies), float(abs(np.linalg.det(box0)))

    def fluct(idx):
        b = units.ev_per_a3_to_gpa(np.asarray(stress_fluctuation(sb[idx], cb[idx], kin[idx], u[idx], v, n, temp)
                                              ["isothermal"]))
        return np.array([(b[0, 0] + b[1, 1]) / 2, (b[1, 0] + b[0, 1]) / 2, (b[2, 0] + b[2, 1]) / 2, b[2, 2],
                         (b[0, 2] + b[1, 2]) / 2, (b[3, 3] + b[4, 4]) / 2])

    def former(idx):  # the former estimator: ε-Born terms (Cᴮ_ε = Cᴮ_η + ½S(σᴮ)), its kinetic term, no Birch
        kt = units.kT(temp)
        ds = sb[idx] - sb[idx].mean(0)
        c = (cb[idx].mean(0) + 0.5 * _pair_sym(elastic.voigt_to_tensor(sb[idx].mean(0)))
             - (v / kt) * jnp.einsum("fi,fj->ij", ds, ds) / len(ds) + (n * kt / v) * jnp.diag(jnp.array([2.0, 2, 2, 1, 1, 1])))
        c = units.ev_per_a3_to_gpa(np.asarray(c))
        return np.array([(c[0, 0] + c[1, 1]) / 2, c[0, 1], (c[0, 2] + c[1, 2]) / 2, c[2, 2], (c[0, 2] + c[1, 2]) / 2,
                         (c[3, 3] + c[4, 4]) / 2])

    all_frames = np.arange(len(sb))
    blocks = block_slices(len(sb), n_blocks)
    est = fluct(all_frames)
    est_err = np.array([standard_error(x) for x in np.array([fluct(b) for b in blocks]).T])
    old = former(all_frames)
    p_mean = units.ev_per_a3_to_gpa(float(jnp.trace(kin.mean(0)) / (3 * v) - sb[:, :3].mean()))

    # central differences: strains xx (column 1), zz (column 3), yz (column 4)
    efv = jax.jit(jax.vmap(lambda r, b, g: energy_forces_virial(e)(r, b, graph=g)[2], (0, None, 0)))

    def cauchy(tr, box):
        w = efv(jnp.asarray(tr.positions), jnp.asarray(box), frame_graphs(tr.positions, box, pot.cutoff))
        return units.ev_per_a3_to_gpa(np.asarray(jax.vmap(elastic.tensor_to_voigt)(-(w + kinetic(tr)) / abs(np.linalg.det(box)))))

    slope = {}
    for j in (0, 2, 3):
        sig = []
        for sign in (1.0, -1.0):
            _, box = strained(np.zeros((1, 3)), box0, elastic.voigt_to_strain(sign * delta * np.eye(6)[j]))
            t = sim.run(jnp.asarray(frac @ box), box, momenta=mom, seed=3, steps=20_000, **quiet)
            sig.append(cauchy(t, box))
        slope[j] = (sig[0] - sig[1]) / (2 * delta)  # (F, 6) per frame, common random numbers
    pairs = [(0, 0), (1, 0), (2, 0), (2, 2), (0, 2), (3, 3)]  # (σ_I, ε_J): B11 B21 B31 B33 B13 B44
    fd = np.array([slope[j][:, i].mean() for i, j in pairs])
    fd_err = np.array([standard_error([slope[j][b, i].mean() for b in block_slices(len(slope[j]), n_blocks)])
                       for i, j in pairs])
    names = ["B11", "B12", "B31", "B33", "B13", "B44"]
    print(f"\nhcp Ti 900 K, {n} atoms, P = {p_mean:.2f} GPa, N k_BT/V = {units.ev_per_a3_to_gpa(n * units.kT(temp) / v):.2f} GPa")
    for k, name in enumerate(names):
        print(f"  {name}: finite strain {fd[k]:7.2f} ± {fd_err[k]:.2f}   fluctuation {est[k]:7.2f} ± {est_err[k]:.2f}"
              f"   former estimator {old[k]:7.2f}")
    sigma = np.hypot(fd_err, est_err)
    assert np.all(np.abs(fd - est) < 3 * sigma + 1.0), (fd - est, sigma)
    assert np.max(np.abs(fd - old) - 3 * sigma) > 1.0  # the test resolves the former estimator's error


def _rotated_about_z(c, theta):
    """The 6×6 stiffness (Voigt, engineering shears) of the crystal turned by ``theta`` about z."""
    # c_abkm = C[V(ab), V(km)]: expand the column index, then the row index
    full = elastic.voigt_to_tensor(np.moveaxis(elastic.voigt_to_tensor(c), 0, -1)).transpose(2, 3, 0, 1)
    ct, st = np.cos(theta), np.sin(theta)
    rot = np.array([[ct, -st, 0.0], [st, ct, 0.0], [0.0, 0.0, 1.0]])
    return elastic.stiffness_to_voigt(np.einsum("ia,jb,kc,ld,abcd->ijkl", rot, rot, rot, rot, full))


def test_hexagonal_constants_are_the_average_over_rotations_about_c():
    """The five constants of any 6×6 stiffness (a noisy estimate) equal those of its average
    over rotations about z, the transversely isotropic tensor nearest to it: they do not depend
    on the crystal's orientation in the box, and C11 − C12 reads the in-plane shear entry as well
    as the normal ones. Reading the normal entries alone would fail both checks."""
    rng = np.random.default_rng(5)
    c = rng.normal(size=(6, 6)) * 20.0
    c = c + c.T
    angles = 2 * np.pi * np.arange(8) / 8  # exact for the harmonics of a 4th-rank tensor (up to 4θ)
    mean = np.mean([_rotated_about_z(c, t) for t in angles], axis=0)
    want = {"C11": mean[0, 0], "C33": mean[2, 2], "C44": mean[3, 3], "C12": mean[0, 1], "C13": mean[0, 2]}
    got = elastic.hexagonal(c)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    turned = elastic.hexagonal(_rotated_about_z(c, 0.37))
    for k in want:
        assert turned[k] == pytest.approx(got[k], abs=1e-9), k
    # a hexagonal tensor is read back exactly
    exact = elastic.hexagonal(elastic.hexagonal_matrix(160.0, 180.0, 46.0, 92.0, 69.0))
    assert [exact[k] for k in elastic.HEXAGONAL_CONSTANTS] == pytest.approx([160.0, 180.0, 46.0, 92.0, 69.0])
