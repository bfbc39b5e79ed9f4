"""VACF, MSD and self-diffusion against an Ornstein–Uhlenbeck (Langevin) velocity process.

For v_{n+1} = v_n e^{-γΔt} + sqrt(kT/m (1 − e^{-2γΔt})) ξ the VACF per atom is 3 (kT/m) e^{-γt}
and D = kT/(mγ). Subtracting the centre-of-mass velocity of N independent equal-mass particles
scales both by (1 − 1/N), which the references include.
"""

import numpy as np
import pytest
from scipy.signal import lfilter

from fusedmlp import units
from fusedmlp.observables.averages import block_estimate
from fusedmlp.observables.transport import (
    DiffusionSettings,
    einstein_diffusion,
    green_kubo_diffusion,
    lag_times,
    msd,
    self_diffusion,
    vacf,
)

TEMPERATURE = 1000.0  # K
MASS = units.mass_to_internal(47.867)  # Ti
GAMMA = 5.0  # 1/ps
DT = 0.01  # ps, γΔt = 0.05
KT_M = units.kT(TEMPERATURE) / MASS  # Å²/ps² per Cartesian component
D_REF = KT_M / GAMMA  # Å²/ps


def ornstein_uhlenbeck(n_frames, n_atoms, seed):
    """Exactly discretised OU velocities (F, N, 3), stationary from the start, and positions
    integrated with the trapezoid rule (unwrapped, random origins)."""
    rng = np.random.default_rng(seed)
    rho = np.exp(-GAMMA * DT)
    kicks = np.sqrt(KT_M * (1 - rho**2)) * rng.normal(size=(n_frames, n_atoms, 3))
    kicks[0] = np.sqrt(KT_M) * rng.normal(size=(n_atoms, 3))  # v_0 from Maxwell–Boltzmann
    v = lfilter([1.0], [1.0, -rho], kicks, axis=0)
    steps = 0.5 * (v[1:] + v[:-1]) * DT
    x = rng.uniform(0, 30, (1, n_atoms, 3)) + np.concatenate([np.zeros((1, n_atoms, 3)),
                                                              np.cumsum(steps, axis=0)])
    return v, x


def direct_correlations(v, x, max_lag):
    """O(F²) loops over origins of ⟨v(0)·v(τ)⟩ and ⟨|x(τ) − x(0)|²⟩."""
    n_frames = v.shape[0]
    c = np.zeros(max_lag + 1)
    m = np.zeros(max_lag + 1)
    for lag in range(max_lag + 1):
        origins = range(n_frames - lag)
        c[lag] = np.mean([np.sum(v[t] * v[t + lag], axis=-1).mean() for t in origins])
        m[lag] = np.mean([np.sum((x[t + lag] - x[t]) ** 2, axis=-1).mean() for t in origins])
    return c, m


def test_fft_correlations_equal_direct_loops():
    rng = np.random.default_rng(0)
    n_frames, n_atoms = 40, 3
    v = rng.normal(size=(n_frames, n_atoms, 3)) + 0.3
    x = 1000.0 + np.cumsum(rng.normal(size=(n_frames, n_atoms, 3)), axis=0)  # far from origin
    c, m = direct_correlations(v, x, n_frames - 1)
    np.testing.assert_allclose(vacf(v, n_frames - 1, subtract_com=False), c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(msd(x, n_frames - 1, subtract_com=False), m, rtol=1e-9, atol=1e-9)
    masses = np.array([1.0, 2.0, 5.0])
    com = lambda s: s - np.einsum("n,fnk->fk", masses / masses.sum(), s)[:, None]
    c, m = direct_correlations(com(v), com(x), 10)
    np.testing.assert_allclose(vacf(v, 10, masses=masses), c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(msd(x, 10, masses=masses), m, rtol=1e-9, atol=1e-9)


def test_ou_vacf_matches_analytic_curve():
    n_atoms = 256
    v, _ = ornstein_uhlenbeck(8000, n_atoms, seed=1)
    c = vacf(v, 300)
    ref = 3 * KT_M * (1 - 1 / n_atoms) * np.exp(-GAMMA * lag_times(300, DT))
    # The estimator's std is about 0.002 of C(0) at every lag here.
    np.testing.assert_allclose(c, ref, atol=0.01 * ref[0])
    assert c[0] == pytest.approx(ref[0], rel=0.01)  # std ≈ 0.0026


def test_ou_diffusion_green_kubo_and_einstein_agree_with_kT_over_m_gamma():
    n_atoms = 256
    v, x = ornstein_uhlenbeck(8000, n_atoms, seed=2)
    settings = DiffusionSettings(max_lag=300, n_blocks=8, plateau=(1.5, 3.0), fit_range=(1.5, 3.0))
    res = self_diffusion(v, x, DT, settings)
    d_ref = D_REF * (1 - 1 / n_atoms)
    for d, err in ((res.D_gk, res.D_gk_err), (res.D_einstein, res.D_einstein_err)):
        assert 0 < err < 0.05 * d_ref
        assert abs(d - d_ref) < 3 * err
    assert abs(res.D_gk - res.D_einstein) < 3 * np.hypot(res.D_gk_err, res.D_einstein_err)
    si = res.in_m2_per_s()
    assert si["D_gk"] == pytest.approx(units.a2_per_ps_to_m2_per_s(res.D_gk))
    assert si["D_einstein_err"] == pytest.approx(units.a2_per_ps_to_m2_per_s(res.D_einstein_err))


def test_centre_of_mass_drift_is_removed():
    v, x = ornstein_uhlenbeck(600, 64, seed=3)
    drift = np.array([0.7, -0.4, 0.2])  # Å/ps, e.g. from a thermostat
    v_d = v + drift
    x_d = x + lag_times(599, DT)[:, None, None] * drift
    np.testing.assert_allclose(vacf(v_d, 100), vacf(v, 100), atol=1e-10)
    np.testing.assert_allclose(msd(x_d, 100), msd(x, 100), atol=1e-9)
    assert vacf(v_d, 100, subtract_com=False)[-1] > vacf(v, 100, subtract_com=False)[-1] + 0.5
    settings = DiffusionSettings(max_lag=100, n_blocks=3)
    with_drift, without = self_diffusion(v_d, x_d, DT, settings), self_diffusion(v, x, DT, settings)
    assert with_drift.D_gk == pytest.approx(without.D_gk, rel=1e-9)
    assert with_drift.D_einstein == pytest.approx(without.D_einstein, rel=1e-9)


def test_estimators_on_exact_curves():
    t = lag_times(2000, DT)
    _, d_plateau = green_kubo_diffusion(3 * KT_M * np.exp(-GAMMA * t), DT)
    assert d_plateau == pytest.approx(D_REF, rel=1e-3)  # trapezoid error (γΔt)²/12
    tau = 1 / GAMMA
    exact_msd = 6 * D_REF * (t - tau * (1 - np.exp(-t / tau)))
    d_fit = einstein_diffusion(exact_msd, DT, fit_range=(5.0, 20.0))
    assert d_fit == pytest.approx(D_REF, rel=1e-9)


def test_block_estimate_and_bad_input():
    mean, err = block_estimate(np.mean, np.arange(11.0), 5)  # last frame dropped
    assert mean == pytest.approx(4.5)
    assert err == pytest.approx(np.std([0.5, 2.5, 4.5, 6.5, 8.5], ddof=1) / np.sqrt(5))
    v = np.zeros((50, 4, 3))
    with pytest.raises(ValueError, match="max_lag"):
        vacf(v, 50)
    with pytest.raises(ValueError, match="shape"):
        msd(v[:, :, :2], 10)
    with pytest.raises(ValueError, match="n_blocks"):
        block_estimate(np.mean, v, 1)
    with pytest.raises(ValueError, match="max_lag"):
        self_diffusion(v, v, DT, DiffusionSettings(max_lag=20, n_blocks=3))
    with pytest.raises(ValueError, match="fit_range"):
        einstein_diffusion(np.arange(11.0), DT, fit_range=(0.05, 0.5))
    with pytest.raises(ValueError, match="masses"):
        vacf(v, 10, masses=np.ones(3))
