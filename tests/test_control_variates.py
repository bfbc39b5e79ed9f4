"""Control variates of the hcp stress-fluctuation estimate: the calibration weights are the regression
estimator (its intercept), the Stein variates have mean zero where the distribution is known exactly
(an Einstein crystal), and in MD of the reference potential they remove the E2g noise of C11 − C12
without moving the estimate (0 K finite strains are the reference)."""
import numpy as np
import pytest

from fusedmlp import elastic
from fusedmlp.config import validate_config
from fusedmlp.evaluation.elasticity import ElasticSettings, elastic_at
from fusedmlp.evaluation.potentials import load_potential
from fusedmlp.evaluation.sampling import Sampling
from fusedmlp.md.settings import Dynamics
from fusedmlp.observables.control_variates import (MIN_FRAMES_PER_VARIATE, calibration_weights,
                                                   sublattice_variates, variate_count)
from fusedmlp.structures import crystal, sublattices

A0, COVERA0 = 2.93984, 1.62364  # the reference potential's 0 K hcp lattice (as test_evaluation)


def test_calibration_weights_give_the_intercept_of_the_regression_on_the_variates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = 1.5 + x @ np.array([20.0, -10.0, 5.0]) + 0.3 * rng.normal(size=400)
    w = calibration_weights(x)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w @ x, 0.0, atol=1e-12)
    # ordinary least squares of y on (1, x): the intercept is the mean of y where x is at its mean 0
    intercept = np.linalg.lstsq(np.c_[np.ones(400), x], y, rcond=None)[0][0]
    assert w @ y == pytest.approx(intercept, rel=1e-10)
    # what the variates explain is gone: the error is that of the residual noise, 0.3/√400
    assert abs(w @ y - 1.5) < 4 * 0.3 / np.sqrt(400)
    np.testing.assert_allclose(calibration_weights(np.zeros((5, 0))), 0.2)


def test_too_few_frames_per_variate_is_an_error():
    with pytest.raises(ValueError, match="29 frames for 3 variates"):
        calibration_weights(np.random.default_rng(0).normal(size=(MIN_FRAMES_PER_VARIATE * 3 - 1, 3)))


def test_stein_variates_have_mean_zero_in_an_einstein_crystal():
    """Independent harmonic oscillators, U = k/2 Σ|u|², sampled exactly: unequal sublattices (three
    of 3, 5 and 4 atoms) test the metric 1/n_0 + δ/n_b of the relative coordinates."""
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], [3, 5, 4])
    k, kT, frames = 2.0, 0.05, 40000
    u = rng.normal(scale=np.sqrt(kT / k), size=(frames, len(labels), 3))
    x = sublattice_variates(u, -k * u, labels, kT)
    assert x.shape == (frames, variate_count(3)) == (frames, 6)
    se = x.std(axis=0) / np.sqrt(frames)
    assert np.all(np.abs(x.mean(axis=0)) < 4 * se)
    # the known means are not small against the noise: a wrong metric would show
    q = u[:, labels == 1].mean(1) - u[:, labels == 0].mean(1)
    assert np.mean(k * q[:, 0] ** 2) == pytest.approx(kT * (1 / 3 + 1 / 5), rel=0.02)
    assert sublattice_variates(u[:, labels == 0], -k * u[:, labels == 0], np.zeros(3, int), kT).shape == (frames, 0)


def test_hcp_sublattices_follow_the_crystal_atom_order():
    at = crystal("Ti", "hcp", A0, COVERA0, (3, 3, 2))
    labels = sublattices("hcp", (3, 3, 2))
    frac = at.get_scaled_positions() * np.array([3, 3, 2])  # in units of the primitive cell
    for b in (0, 1):
        rest = np.round(frac[labels == b] % 1.0, 6) % 1.0  # the basis atom's position in its cell
        assert len(np.unique(rest, axis=0)) == 1
    assert not np.allclose(frac[labels == 0][0] % 1, frac[labels == 1][0] % 1)
    assert len(sublattices("fcc", (2, 2, 2))) == len(crystal("Ti", "fcc", 4.1, None, (2, 2, 2)))


def test_control_variates_remove_the_e2g_noise_of_hcp_c11_minus_c12():
    """Reference potential at 30 K in its 0 K box, 3 ps: the plain estimate of C11 − C12 carries the
    E2g mode's relaxation noise (test_evaluation allows it 15 GPa); with the control variates the
    same frames give it within a few GPa of the 0 K finite-strain value, with a far smaller block
    error, and every constant agrees with the plain estimate within their errors. Friction 20/ps:
    at 4/ps the cold crystal's optical mode rings for picoseconds, and a 0.75-ps block holds too
    few independent samples to fit even three coefficients (the evaluations run at 323 K and
    above, where the mode's stress decorrelates within about 0.1 ps)."""
    pot = load_potential(validate_config({}), "reference")
    atoms = crystal("Ti", "hcp", A0, COVERA0, (3, 3, 2))
    rs = Dynamics(timestep_fs=2.0, thermostat_kind="langevin", friction_per_ps=20.0)
    es = ElasticSettings(Sampling(0.5, 3.0, 10.0), n_blocks=4, control_variates=True)
    cv = elastic_at(pot, atoms, 30.0, rs, es, "hexagonal", progress=lambda s: None, at_lattice_sites=True,
                    sublattice=sublattices("hcp", (3, 3, 2)))
    assert cv["control_variates"] == 3
    plain = {k[:-len("_plain")] if k.endswith("_plain") else k.replace("_plain_err", "_err"): v
             for k, v in cv.items() if "_plain" in k}
    ref = elastic.hexagonal(elastic.finite_strain_stiffness(
        pot.host_efv(atoms.numbers[:2]), crystal("Ti", "hcp", A0, COVERA0).positions,
        np.asarray(crystal("Ti", "hcp", A0, COVERA0).cell[:])))

    cv_err = np.sqrt(cv["C11_err"] ** 2 + cv["C12_err"] ** 2 - 2 * cv["C11_C12_cov"])
    assert cv["C11"] - cv["C12"] == pytest.approx(ref["C11"] - ref["C12"], abs=max(3.0, 3 * cv_err))
    assert cv["C11"] + cv["C12"] == pytest.approx(ref["C11"] + ref["C12"], abs=5.0)  # as test_evaluation
    # anti-correlated errors: their sum is about the error of C11 − C12
    assert cv["C11_err"] + cv["C12_err"] < 0.5 * (plain["C11_err"] + plain["C12_err"])
    for name in elastic.HEXAGONAL_CONSTANTS:
        both = np.hypot(cv[f"{name}_err"], plain[f"{name}_err"])
        assert cv[name] == pytest.approx(plain[name], abs=max(0.3, 3 * both)), name
