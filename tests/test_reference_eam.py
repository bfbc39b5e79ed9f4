"""The analytic reference potential against finite differences and its known reference state."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusedmlp import space
from fusedmlp.reference import ReferenceCalculator, eam, scaled, zhou2004
from fusedmlp.structures import crystal, relax_lattice


def distorted_hcp(seed=1, supercell=(2, 1, 1)):
    """A small triclinic, strained, perturbed hcp cell (narrower than twice the 7 Å cutoff)."""
    rng = np.random.default_rng(seed)
    at = crystal("Ti", "hcp", 2.94, 1.623, supercell)
    d = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
    return at.positions @ d.T + rng.normal(scale=0.08, size=at.positions.shape), np.asarray(at.cell) @ d.T


def test_cells_are_narrower_than_the_cutoff():
    _, box = distorted_hcp()
    assert space.plane_spacings(box).min() < 7.0  # periodic images of the atom itself interact
    assert space.image_shifts(box, 7.0).shape[0] > 27


def test_forces_are_minus_energy_gradient(ti_calc):
    pos, box = distorted_hcp()
    _, forces, _ = ti_calc(pos, box)
    h = 1e-5
    fd = np.zeros_like(pos)
    for i in range(len(pos)):
        for a in range(3):
            p, m = pos.copy(), pos.copy()
            p[i, a] += h
            m[i, a] -= h
            fd[i, a] = -(ti_calc.potential_energy(p, box) - ti_calc.potential_energy(m, box)) / (2 * h)
    np.testing.assert_allclose(forces, fd, atol=1e-7)
    assert np.abs(forces).max() > 0.1  # the check is not trivial


def test_virial_is_strain_derivative(ti_calc):
    pos, box = distorted_hcp(seed=2)
    _, _, w = ti_calc(pos, box)
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = np.zeros((3, 3))
            e[a, b] = h
            up = ti_calc.potential_energy(pos @ (np.eye(3) + e).T, box @ (np.eye(3) + e).T)
            dn = ti_calc.potential_energy(pos @ (np.eye(3) - e).T, box @ (np.eye(3) - e).T)
            fd[a, b] = -(up - dn) / (2 * h)
    np.testing.assert_allclose(w, fd, atol=1e-6)
    np.testing.assert_allclose(w, w.T, atol=1e-9)  # rotation invariance makes W symmetric
    assert np.abs(w).max() > 0.1


def test_energy_per_atom_independent_of_supercell(ti_calc):
    # a 2-atom cell (many images of itself) and a 4×4×3 supercell must give the same crystal
    small = crystal("Ti", "hcp", 2.95, 1.6, (1, 1, 1))
    large = crystal("Ti", "hcp", 2.95, 1.6, (4, 4, 3))
    e1, f1, w1 = ti_calc(small.positions, np.asarray(small.cell))
    e2, f2, w2 = ti_calc(large.positions, np.asarray(large.cell))
    assert np.isclose(e1 / 2, e2 / len(large), rtol=0, atol=1e-10)
    np.testing.assert_allclose(w1 / 2, w2 / len(large), atol=1e-9)
    assert np.abs(f2).max() < 1e-9


def test_invariances(ti_calc):
    pos, box = distorted_hcp(seed=3)
    e0 = ti_calc.potential_energy(pos, box)
    # lattice translation of one atom, and permutation of atoms
    moved = pos.copy()
    moved[1] += box[0] - 2 * box[2]
    assert np.isclose(ti_calc.potential_energy(moved, box), e0, atol=1e-10)
    perm = np.random.default_rng(0).permutation(len(pos))
    assert np.isclose(ti_calc.potential_energy(pos[perm], box), e0, atol=1e-10)
    # rigid rotation of atoms and box together
    th = 0.7
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    assert np.isclose(ti_calc.potential_energy(pos @ rot.T, box @ rot.T), e0, atol=1e-10)


def test_switch_is_c2_smooth_and_cuts_off():
    p = zhou2004("Ti")
    s = lambda r: eam.switch(r, p.r_on, p.r_off)  # noqa: E731
    ds = jax.grad(s)
    dds = jax.grad(ds)
    for r in (p.r_on, p.r_off):
        for fn in (ds, dds):
            assert abs(float(fn(jnp.float64(r)))) < 1e-12
    assert float(s(p.r_on)) == 1.0 and float(s(p.r_off)) == 0.0
    assert float(eam.pair(p, jnp.float64(7.2))) == 0.0 and float(eam.density(p, jnp.float64(7.01))) == 0.0
    assert float(eam.pair(p, jnp.float64(6.5))) != 0.0


def test_embedding_is_continuous_across_branches():
    p = zhou2004("Ti")
    for rho in (0.85 * p.rho_e, 1.15 * p.rho_e):
        lo, hi = eam.embedding(p, jnp.float64(rho - 1e-9)), eam.embedding(p, jnp.float64(rho + 1e-9))
        assert abs(float(lo - hi)) < 1e-3  # the published piecewise form matches to ~1e-4 eV


def test_needs_float64():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="float64"):
            ReferenceCalculator(zhou2004("Ti"))
    finally:
        jax.config.update("jax_enable_x64", True)


def test_unknown_element():
    with pytest.raises(KeyError, match="no Zhou"):
        zhou2004("Xx")


@pytest.fixture(scope="module")
def relaxed(ti_calc):
    guesses = {"hcp": (2.94, 1.62), "bcc": (3.29, None), "fcc": (4.15, None)}
    return {s: relax_lattice(ti_calc.potential_energy, "Ti", s, *g) for s, g in guesses.items()}


def test_reference_state_of_hcp(relaxed):
    hcp = relaxed["hcp"]
    assert abs(hcp.a - 2.940) < 0.002
    assert abs(hcp.covera - 1.623) < 0.002
    assert abs(-hcp.energy_per_atom - 4.870) < 0.002


def test_hcp_is_the_ground_state(relaxed):
    assert relaxed["hcp"].energy_per_atom < relaxed["fcc"].energy_per_atom
    assert relaxed["hcp"].energy_per_atom < relaxed["bcc"].energy_per_atom


def test_relaxed_cell_is_stress_free(ti_calc, relaxed):
    hcp = relaxed["hcp"]
    at = crystal("Ti", "hcp", hcp.a, hcp.covera, (2, 2, 2))
    _, f, w = ti_calc(at.positions, np.asarray(at.cell))
    # zero pressure from an independent route: the virial, not the energy minimum the relaxation used
    assert np.abs(w).max() / len(at) < 1e-5
    assert np.abs(f).max() < 1e-9


def test_harder_level_differs_like_another_functional(ti_calc):
    hard = ReferenceCalculator(scaled(zhou2004("Ti"), 1.05, 1 / 1.05, 0.995))
    rng = np.random.default_rng(5)
    df, f0 = [], []
    for k in range(4):
        pos, box = distorted_hcp(seed=10 + k, supercell=(2, 2, 2))
        pos = pos + rng.normal(scale=0.05, size=pos.shape)
        f0.append(ti_calc(pos, box)[1])
        df.append(hard(pos, box)[1] - f0[-1])
    df, f0 = np.concatenate(df), np.concatenate(f0)
    rel = np.sqrt(np.mean(df**2) / np.mean(f0**2))
    assert 0.04 < rel < 0.10
    corr = np.corrcoef(f0.ravel(), (f0 + df).ravel())[0, 1]
    assert corr > 0.99  # correlated ...
    # ... but not a uniform rescaling: the best single scale factor leaves most of the difference
    f1 = f0 + df
    s = np.sum(f0 * f1) / np.sum(f0**2)
    residual = np.sqrt(np.mean((f1 - s * f0) ** 2) / np.mean(f0**2))
    assert residual > 0.25 * rel, (s, residual, rel)


def _hcp_constants(calc):
    from fusedmlp.elastic import finite_strain_stiffness, hexagonal

    lp = relax_lattice(calc.potential_energy, "Ti", "hcp", 2.94, 1.62)
    at = crystal("Ti", "hcp", lp.a, lp.covera)
    return hexagonal(finite_strain_stiffness(calc, at.positions, np.asarray(at.cell)))


def test_zero_kelvin_hcp_elastic_constants_of_the_reference_state(ti_calc):
    # science.md: at 0 K C11 ≈ 148, C12 ≈ 88.5, C13 ≈ 69, C33 ≈ 203, C44 ≈ 37 GPa
    c = _hcp_constants(ti_calc)
    expected = {"C11": 148.0, "C12": 88.5, "C13": 69.0, "C33": 203.0, "C44": 37.0}
    for k, v in expected.items():
        assert abs(c[k] - v) < 1.5, (k, c[k])


def test_harder_level_is_stiffer(ti_calc):
    base = _hcp_constants(ti_calc)
    hard = _hcp_constants(ReferenceCalculator(scaled(zhou2004("Ti"), 1.05, 1 / 1.05, 0.995)))
    rise = {k: hard[k] / base[k] - 1 for k in base}
    # measured: C11 +12.6 %, C33 +10.7 %, C44 +13.3 %, C12 +9.0 %, C13 +7.5 %
    assert all(0.06 < r < 0.18 for r in rise.values()), rise


def test_cubic_bulk_modulus_agrees_with_energy_volume_curvature(ti_calc):
    from fusedmlp import units
    from fusedmlp.elastic import cubic, finite_strain_stiffness

    lp = relax_lattice(ti_calc.potential_energy, "Ti", "bcc", 3.29)
    at = crystal("Ti", "bcc", lp.a)
    c = cubic(finite_strain_stiffness(ti_calc, at.positions, np.asarray(at.cell), relax=False))
    b_voigt = (c["C11"] + 2 * c["C12"]) / 3
    # independent route: B = V d²E/dV² from the energy of isotropically scaled cells
    v0, h = at.get_volume(), 2e-3
    e = [ti_calc.potential_energy(at.positions * s, np.asarray(at.cell) * s)
         for s in ((1 - h) ** (1 / 3), 1.0, (1 + h) ** (1 / 3))]
    b_ev = v0 * (e[0] - 2 * e[1] + e[2]) / (h * v0) ** 2
    assert abs(b_voigt - units.ev_per_a3_to_gpa(b_ev)) < 0.5
    assert abs(c["C11"] - c["C12"]) > 5  # a genuine anisotropic tensor, not a degenerate one


def test_md_run_volume_scale_samples_an_expanded_box_and_labels_it(ti_calc):
    """A melt sampled at 1.15 times the crystal's volume per atom: its boxes are the relaxed
    crystal scaled uniformly, and the labels say so; the expanded box is under tension (the
    crystal's box compresses a melt), which is what such data teach a model."""
    from fusedmlp.reference.sampling import MDRun, PhaseSpec, SamplingSettings, label, sample_configurations

    s = SamplingSettings(element="Ti", phases={"bcc": PhaseSpec("bcc", 3.29, supercells=((2, 2, 2),))},
                         strained_per_phase=0, perturbed_per_phase=0, equilibration_steps=20,
                         snapshots_per_run=2, snapshot_interval=5,
                         md_runs=(MDRun("bcc", (2, 2, 2), 2500.0, "liquid"),
                                  MDRun("bcc", (2, 2, 2), 2500.0, "liquid", volume_scale=1.15)))
    ds = label(sample_configurations(s, ti_calc, progress=lambda _: None), ti_calc, "ref", virial_kinds=("md",))
    vol = {t: [] for t in ("eq", "crystal box", "expanded")}
    pressure = {"crystal box": [], "expanded": []}
    for i in range(len(ds)):
        c = ds.config(i)
        v = abs(np.linalg.det(c["box"])) / len(c["positions"])
        kind = ("eq" if c["config_type"] == "bcc/equilibrium" else
                "expanded" if "V/V0 1.15" in c["source"] else "crystal box")
        vol[kind].append(v)
        if kind != "eq":
            assert c["config_type"] == "liquid/md" and c["virial_mask"]
            pressure[kind].append(np.trace(c["virial"]) / (3 * v * len(c["positions"])))
    assert [len(v) for v in vol.values()] == [1, 2, 2]
    np.testing.assert_allclose(vol["crystal box"], vol["eq"][0] * np.ones(2), rtol=1e-12)
    np.testing.assert_allclose(vol["expanded"], 1.15 * vol["eq"][0] * np.ones(2), rtol=1e-12)
    assert max(pressure["expanded"]) < min(pressure["crystal box"])
