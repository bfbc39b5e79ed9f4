"""Phonons of the reference potential: Γ modes, symmetry, paths and sound velocities."""

import numpy as np
import pandas as pd
import pytest
from phonopy.physical_units import get_calculator_physical_units

from fusedmlp import units
from fusedmlp.elastic import cubic, finite_strain_stiffness, hexagonal
from fusedmlp.observables.phonons import (
    STANDARD_PATHS,
    BandPath,
    PhononSettings,
    conventional_to_primitive_q,
    phonons,
    write_band_csv,
    write_dos_csv,
)
from fusedmlp.structures import crystal

A_HCP, COVERA = 2.9403, 1.6230  # 0 K lattice of the reference potential
A_FCC = 4.1545
A_BCC = 3.29


def forces_of(calc):
    return lambda positions, box: calc(positions, box)[1]


@pytest.fixture(scope="module")
def hcp():
    return crystal("Ti", "hcp", A_HCP, COVERA)


@pytest.fixture(scope="module")
def hcp_result(ti_calc, hcp):
    # 4 cells along c keep the Γ–A acoustic slopes within 0.1 % (3×3×2 gives 1.5 %).
    settings = PhononSettings(supercell=(3, 3, 4), displacement=0.01, dos_mesh=(8, 8, 6))
    return phonons(forces_of(ti_calc), hcp, "hcp", settings)


def density(atoms):
    """Mass density in eV ps²/Å⁵, so that sqrt(C/ρ) with C in eV/Å³ is in Å/ps."""
    return units.mass_to_internal(atoms.get_masses().sum()) / atoms.get_volume()


def slopes(result, q_direction, length_inv_a, xi=0.02):
    """Acoustic group velocities (Å/ps) from ν(ξ q̂)/|q| at small ξ; |q| in 1/Å without 2π."""
    nu = np.sort(result.frequencies_at(xi * np.asarray(q_direction, float))[0])[:3]
    return nu * units.THZ / (xi * length_inv_a)


def test_phonopy_unit_factor_is_ours():
    assert np.isclose(get_calculator_physical_units(None).factor, units.EV_A2_AMU_TO_THZ, rtol=1e-6)


def test_hcp_gamma_acoustic_zero_optical_match_unit_cell_hessian(ti_calc, hcp, hcp_result):
    nu = hcp_result.gamma_frequencies
    assert nu.shape == (6,)
    assert np.all(np.abs(nu[:3]) < 0.05)
    assert np.all(nu[3:] > 1.0)
    # Independent: at Γ the dynamical matrix is the Hessian of the periodic 2-atom cell.
    box, x0, h = np.asarray(hcp.cell), hcp.positions, 1e-3
    hess = np.zeros((6, 6))
    for k in range(6):
        dx = np.zeros(6)
        dx[k] = h
        fp = ti_calc(x0 + dx.reshape(2, 3), box)[1]
        fm = ti_calc(x0 - dx.reshape(2, 3), box)[1]
        hess[:, k] = -(fp - fm).ravel() / (2 * h)
    m = np.repeat(hcp.get_masses(), 3)
    lam = np.linalg.eigvalsh(0.5 * (hess + hess.T) / np.sqrt(np.outer(m, m)))
    nu_direct = np.sign(lam) * np.sqrt(np.abs(lam)) * units.EV_A2_AMU_TO_THZ
    np.testing.assert_allclose(nu[3:], nu_direct[3:], rtol=1e-3)


def test_hcp_dispersion_symmetric(hcp_result):
    rng = np.random.default_rng(1)
    q = rng.uniform(-0.5, 0.5, (5, 3))
    nu = hcp_result.frequencies_at(q)
    assert np.all(nu > -0.05)  # stable: no imaginary modes
    np.testing.assert_allclose(hcp_result.frequencies_at(-q), nu, atol=1e-6)
    # Six-fold axis: rotating by 60° maps b1 → b2 and b2 → b2 − b1, i.e. (h, k) → (−k, h + k).
    rotated = np.column_stack([-q[:, 1], q[:, 0] + q[:, 1], q[:, 2]])
    np.testing.assert_allclose(hcp_result.frequencies_at(rotated), nu, atol=1e-6)


def test_hcp_sound_velocities_along_c_match_elastic_constants(ti_calc, hcp, hcp_result):
    c = hexagonal(finite_strain_stiffness(ti_calc, hcp.positions, np.asarray(hcp.cell)))
    assert c["C33"] == pytest.approx(203.2, rel=0.01) and c["C44"] == pytest.approx(36.7, rel=0.01)
    rho = density(hcp)
    v_t, v_t2, v_l = slopes(hcp_result, (0, 0, 1), 1.0 / (A_HCP * COVERA))
    assert v_t == pytest.approx(v_t2, rel=1e-6)  # TA degenerate along the six-fold axis
    assert v_l == pytest.approx(np.sqrt(units.gpa_to_ev_per_a3(c["C33"]) / rho), rel=0.05)
    assert v_t == pytest.approx(np.sqrt(units.gpa_to_ev_per_a3(c["C44"]) / rho), rel=0.05)


def test_hcp_band_structure_layout(hcp_result):
    r = hcp_result
    assert r.segment_labels[:3] == [("Γ", "M"), ("M", "K"), ("K", "Γ")]
    assert r.tick_labels == ["Γ", "M", "K", "Γ", "A", "L", "H", "A|L", "M|K", "H"]
    assert all(f.shape == (51, 6) for f in r.frequencies)
    # Γ–M = |b1|/2 = 1/(√3 a) and Γ–A = 1/(2c) in 1/Å (no 2π).
    assert r.tick_positions[1] == pytest.approx(1 / (np.sqrt(3) * A_HCP))
    assert r.tick_positions[4] - r.tick_positions[3] == pytest.approx(1 / (2 * A_HCP * COVERA))
    assert np.trapezoid(r.dos, r.dos_frequencies) == pytest.approx(6.0, rel=0.02)


@pytest.mark.parametrize("structure, a", [("bcc", A_BCC), ("fcc", A_FCC)])
def test_cubic_path_points_are_textbook_cartesian(structure, a):
    atoms = crystal("Ti", structure, a)
    prim = conventional_to_primitive_q(np.eye(3), structure).T @ np.asarray(atoms.cell)
    recip = np.linalg.inv(prim).T  # rows b_i with a_i · b_j = δ_ij
    for name, q_conv in STANDARD_PATHS[structure].points.items():
        q_cart = conventional_to_primitive_q(q_conv, structure) @ recip
        np.testing.assert_allclose(q_cart * a, q_conv, atol=1e-12, err_msg=name)


def test_bcc_path_and_shapes(ti_calc):
    # bcc is a shape check only: the 0 K bcc phase of this potential is not our target.
    r = phonons(forces_of(ti_calc), crystal("Ti", "bcc", A_BCC), "bcc",
                PhononSettings(supercell=(3, 3, 3), band_points=21, dos_mesh=(6, 6, 6)))
    assert r.tick_labels == ["Γ", "H", "N", "Γ", "P", "H|P", "N"]
    assert all(f.shape == (21, 3) for f in r.frequencies)
    assert np.all(np.abs(r.gamma_frequencies) < 0.05)
    assert r.tick_positions[1] == pytest.approx(1 / A_BCC)  # Γ–H = 2π/a, here without 2π
    nu_h = r.frequencies[0][-1]  # H has full cubic symmetry: triply degenerate
    np.testing.assert_allclose(nu_h, nu_h.mean(), atol=1e-6)


def test_fcc_sound_velocities_along_100_match_elastic_constants(ti_calc):
    atoms = crystal("Ti", "fcc", A_FCC)
    r = phonons(forces_of(ti_calc), atoms, "fcc",
                PhononSettings(supercell=(3, 3, 3), band_points=11, dos_mesh=(4, 4, 4)))
    assert r.tick_labels == ["Γ", "X", "W", "K", "Γ", "L", "U", "W", "L", "K|U", "X"]
    c = cubic(finite_strain_stiffness(ti_calc, atoms.positions, np.asarray(atoms.cell), relax=False))
    v_t, _, v_l = slopes(r, conventional_to_primitive_q((0, 1, 0), "fcc"), 1.0 / A_FCC)
    rho = density(atoms)
    assert v_l == pytest.approx(np.sqrt(units.gpa_to_ev_per_a3(c["C11"]) / rho), rel=0.05)
    assert v_t == pytest.approx(np.sqrt(units.gpa_to_ev_per_a3(c["C44"]) / rho), rel=0.05)


def test_csv_output(hcp_result, tmp_path):
    write_band_csv(hcp_result, tmp_path / "bands.csv")
    write_dos_csv(hcp_result, tmp_path / "dos.csv")
    bands, dos = pd.read_csv(tmp_path / "bands.csv"), pd.read_csv(tmp_path / "dos.csv")
    assert len(bands) == 9 * 51 and list(bands.columns[:4]) == ["segment", "start", "end",
                                                                 "distance_inv_A"]
    np.testing.assert_allclose(bands["band5_thz"].to_numpy()[:51], hcp_result.frequencies[0][:, 5])
    assert list(dos.columns) == ["frequency_thz", "dos_per_thz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bands.csv", "dos.csv"]  # no temp files


def test_bad_input(ti_calc, hcp):
    f = forces_of(ti_calc)
    with pytest.raises(ValueError, match="unknown structure"):
        phonons(f, hcp, "diamond")
    with pytest.raises(ValueError, match="2-atom cell"):
        phonons(f, hcp.repeat((2, 1, 1)), "hcp")
    with pytest.raises(ValueError, match="supercell"):
        PhononSettings(supercell=(3, 3))
    with pytest.raises(ValueError, match="displacement"):
        PhononSettings(displacement=0.0)
    with pytest.raises(ValueError, match="dos_sigma"):
        PhononSettings(dos_method="gaussian")
    with pytest.raises(ValueError, match="undefined points"):
        BandPath(points={"Γ": (0, 0, 0)}, branches=(("Γ", "X"),))
