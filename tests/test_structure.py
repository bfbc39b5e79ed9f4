"""RDF, coordination numbers and ADF against perfect lattices, an ideal gas and brute force."""

import jax
import numpy as np
import pytest

from fusedmlp.observables.structure import (
    adf,
    adf_bins,
    adf_frames,
    coordination_number,
    number_density,
    rdf,
    rdf_bins,
    rdf_frames,
)
from fusedmlp.space import all_image_displacements, image_shifts, plane_spacings
from fusedmlp.structures import crystal


def frames_of(atoms):
    return atoms.positions[None], np.asarray(atoms.cell)


def test_fcc_coordination_shells():
    pos, box = frames_of(crystal("Ti", "fcc", 4.15, None, (4, 4, 4)))
    r, g = rdf(pos, box, r_max=8.0, n_bins=400)
    rho = number_density(pos, box)
    assert r[np.argmax(g)] == pytest.approx(4.15 / np.sqrt(2), abs=0.02)  # first shell a/√2
    assert coordination_number(r, g, rho, 3.5) == pytest.approx(12, abs=1e-9)  # a/√2 < 3.5 < a
    assert coordination_number(r, g, rho, 4.6) == pytest.approx(12 + 6, abs=1e-9)  # a < 4.6 < a√1.5


def test_bcc_coordination_shells():
    pos, box = frames_of(crystal("Ti", "bcc", 3.29, None, (4, 4, 4)))
    r, g = rdf(pos, box, r_max=6.5, n_bins=325)
    rho = number_density(pos, box)
    assert coordination_number(r, g, rho, 3.05) == pytest.approx(8, abs=1e-9)  # a√3/2 < 3.05 < a
    assert coordination_number(r, g, rho, 4.0) == pytest.approx(8 + 6, abs=1e-9)  # a < 4 < a√2


def test_ideal_gas_rdf_is_one_in_a_triclinic_box():
    rng = np.random.default_rng(0)
    n, n_frames = 2048, 2
    box = 27.0 * np.array([[1.0, 0.0, 0.0], [0.3, 1.0, 0.0], [0.2, -0.1, 1.0]])
    frames = rng.uniform(size=(n_frames, n, 3)) @ box
    r_max = 0.5 * plane_spacings(box).min()
    r, g = rdf(frames, box, r_max, n_bins=100)
    edges, _ = rdf_bins(r_max, 100)
    # Unordered pairs per bin are Poisson with mean lam; g then has std ≈ 1/√lam.
    lam = n_frames * n * (n - 1) / 2 * 4 * np.pi / 3 * np.diff(edges**3) / abs(np.linalg.det(box))
    z = (np.asarray(g) - (n - 1) / n) * np.sqrt(lam)
    assert np.all(np.abs(z) < 5)
    assert 0.6 < np.mean(z**2) < 1.5  # chi²/dof; its std over 100 bins is 0.14
    assert np.mean(np.asarray(g)[r > 2.0]) == pytest.approx(1.0, abs=3e-3)


def test_rdf_counts_match_all_images_in_a_triclinic_cell():
    rng = np.random.default_rng(1)
    box = np.array([[9.0, 0.0, 0.0], [3.5, 8.0, 0.0], [-2.0, 1.5, 8.5]])
    pos = rng.uniform(size=(40, 3)) @ box
    r_max, n_bins = 0.5 * plane_spacings(box).min(), 30
    _, g = rdf(pos[None], box, r_max, n_bins)
    edges, _ = rdf_bins(r_max, n_bins)
    dr, self_mask = all_image_displacements(pos, box, image_shifts(box, r_max))
    d = np.linalg.norm(np.asarray(dr), axis=-1)[~np.asarray(self_mask)]
    brute, _ = np.histogram(d[d < r_max], bins=edges)
    rho = len(pos) / abs(np.linalg.det(box))
    ideal = len(pos) * rho * 4 * np.pi / 3 * np.diff(edges**3)
    np.testing.assert_allclose(np.asarray(g) * ideal, brute, atol=1e-8)


def test_fcc_adf_peaks_and_normalisation():
    pos, box = frames_of(crystal("Ti", "fcc", 4.15, None, (4, 4, 4)))
    theta, p = adf(pos, box, r_cut=3.5, n_bins=180)
    width = np.diff(adf_bins(180)[0])
    mass = np.asarray(p) * width
    assert mass.sum() == pytest.approx(1.0, abs=1e-12)
    # 12 neighbours -> 66 pairs: 24 at 60°, 12 at 90°, 24 at 120°, 6 at 180°, nothing else.
    expected = {60: 24, 90: 12, 120: 24, 180: 6}
    for angle, n_pairs in expected.items():
        window = np.abs(theta - angle) < 2
        assert mass[window].sum() == pytest.approx(n_pairs / 66, abs=1e-12)
        assert abs(theta[window][np.argmax(mass[window])] - angle) < 1
    assert sum(mass[np.abs(theta - a) < 2].sum() for a in expected) == pytest.approx(1.0)


def _two_frames():
    atoms = crystal("Ti", "fcc", 4.15, None, (3, 3, 3))
    rng = np.random.default_rng(2)
    rattled = atoms.positions + rng.normal(scale=0.15, size=(len(atoms), 3))
    frames = np.stack([atoms.positions, rattled])
    return frames, np.asarray(atoms.cell)


def test_weights_select_frames_and_average():
    frames, box = _two_frames()
    _, g1 = rdf(frames, box, 6.0, 120, weights=np.array([1.0, 0.0]))
    _, g_first = rdf(frames[:1], box, 6.0, 120)
    np.testing.assert_allclose(g1, g_first, atol=1e-12)
    _, p1 = adf(frames, box, 3.5, 90, weights=np.array([1.0, 0.0]))
    _, p_first = adf(frames[:1], box, 3.5, 90)
    np.testing.assert_allclose(p1, p_first, atol=1e-12)
    _, g_frames = rdf_frames(frames, box, 6.0, 120)
    _, g_mean = rdf(frames, box, 6.0, 120)
    np.testing.assert_allclose(g_mean, g_frames.mean(0), atol=1e-12)
    _, p_frames = adf_frames(frames, box, 3.5, 90)
    _, p_w = adf(frames, box, 3.5, 90, weights=np.array([0.25, 0.75]))
    np.testing.assert_allclose(p_w, 0.25 * p_frames[0] + 0.75 * p_frames[1], atol=1e-12)


def test_weights_are_differentiable_for_reweighting():
    frames, box = _two_frames()
    _, g_frames = rdf_frames(frames, box, 6.0, 60)
    grad = jax.grad(lambda w: rdf(frames, box, 6.0, 60, weights=w)[1].sum())(np.array([0.5, 0.5]))
    np.testing.assert_allclose(grad, g_frames.sum(1), rtol=1e-12)


def test_bad_input_raises():
    pos, box = frames_of(crystal("Ti", "fcc", 4.15, None, (2, 2, 2)))  # half spacing 4.15 Å
    with pytest.raises(ValueError, match="half the smallest plane spacing"):
        rdf(pos, box, 4.5, 50)
    with pytest.raises(ValueError, match="half the smallest plane spacing"):
        adf(pos, box, 4.5, 50)
    with pytest.raises(ValueError, match="shape"):
        rdf(pos[0], box, 3.0, 50)
    with pytest.raises(ValueError, match="boxes"):
        rdf(pos, np.eye(2), 3.0, 50)
    with pytest.raises(ValueError, match="weights"):
        rdf(pos, box, 3.0, 50, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        rdf(np.concatenate([pos, pos]), box, 3.0, 50, weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="max_neighbors"):
        adf(pos, box, 3.5, 50, max_neighbors=10)
    with pytest.raises(ValueError, match="two neighbours"):
        adf(pos, box, 2.0, 50)
    r, g = rdf(pos, box, 3.0, 50)
    with pytest.raises(ValueError, match="outside the histogram"):
        coordination_number(r, g, 0.05, 3.5)
