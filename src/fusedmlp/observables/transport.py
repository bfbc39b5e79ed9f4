"""Transport observables: velocity autocorrelation, mean squared displacement and the
self-diffusion coefficient by Green–Kubo and by Einstein, with block error bars.

Series are frames (F, N, 3) sampled every ``dt`` ps: velocities in Å/ps, positions in Å and
*unwrapped* (continuous across the periodic boundaries). Correlations average over atoms and
over every time origin, computed with FFTs (O(F log F)) and normalised by the number of origins
at each lag (unbiased). Thermostats and finite boxes add centre-of-mass motion that is not
self-diffusion, so it is subtracted by default.

Diffusion coefficients are in Å²/ps; ``units.a2_per_ps_to_m2_per_s`` converts them.
"""

from __future__ import annotations

import dataclasses
import numpy as np

from .. import units
from .averages import block_estimate

_FFT_ELEMENTS = 2**22  # padded samples per FFT batch: bounds memory for long, large trajectories


# --- preprocessing ------------------------------------------------------------------------------


def _series(x, name: str) -> np.ndarray:
    x = np.asarray(x, float)
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (F, N, 3) with F >= 2 frames; got {x.shape}")
    return x


def _check_lag(max_lag, n_frames: int) -> int:
    if int(max_lag) != max_lag or not 0 <= max_lag < n_frames:
        raise ValueError(f"max_lag must be an integer in [0, {n_frames - 1}]; got {max_lag}")
    return int(max_lag)


def relative_to_com(series, masses=None) -> np.ndarray:
    """Series (F, N, 3) relative to its per-frame centre of mass (equal masses when None)."""
    series = _series(series, "series")
    if masses is None:
        return series - series.mean(axis=1, keepdims=True)
    masses = np.asarray(masses, float)
    if masses.shape != (series.shape[1],) or np.any(masses <= 0):
        raise ValueError(f"masses must be positive with shape ({series.shape[1]},); "
                         f"got {masses.shape}")
    com = np.einsum("n,fnk->fk", masses / masses.sum(), series)
    return series - com[:, None, :]


def lag_times(max_lag: int, dt: float) -> np.ndarray:
    """Lag times 0, dt, …, max_lag·dt (ps)."""
    return np.arange(max_lag + 1) * dt


# --- correlation functions ---------------------------------------------------------------------


def _autocorrelation_sum(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Σ_columns Σ_{t0} x(t0) x(t0 + τ) for τ = 0..max_lag, x of shape (F, K)."""
    n_frames = x.shape[0]
    n_fft = 1 << int(np.ceil(np.log2(2 * n_frames)))  # ≥ 2F: zero padding makes it acyclic
    batch = max(1, _FFT_ELEMENTS // n_fft)
    total = np.zeros(max_lag + 1)
    for start in range(0, x.shape[1], batch):
        spec = np.fft.rfft(x[:, start:start + batch], n=n_fft, axis=0)
        total += np.fft.irfft(spec * spec.conj(), n=n_fft, axis=0)[:max_lag + 1].sum(axis=1)
    return total


def vacf(velocities, max_lag: int, subtract_com: bool = True, masses=None) -> np.ndarray:
    """Velocity autocorrelation C(τ) = ⟨v(t0)·v(t0 + τ)⟩ for τ = 0..max_lag frames (Å²/ps²).

    Averaged over atoms and all F − τ time origins; the centre-of-mass velocity (mass-weighted
    when ``masses`` is given) is subtracted per frame unless ``subtract_com`` is False.
    """
    v = _series(velocities, "velocities")
    max_lag = _check_lag(max_lag, v.shape[0])
    if subtract_com:
        v = relative_to_com(v, masses)
    n_frames, n_atoms = v.shape[:2]
    origins = n_frames - np.arange(max_lag + 1)
    return _autocorrelation_sum(v.reshape(n_frames, -1), max_lag) / (n_atoms * origins)


def msd(positions, max_lag: int, subtract_com: bool = True, masses=None) -> np.ndarray:
    """Mean squared displacement ⟨|r(t0 + τ) − r(t0)|²⟩ for τ = 0..max_lag frames (Å²).

    ``positions`` must be unwrapped. Averaged over atoms and all F − τ origins with the FFT
    algorithm: Σ|Δr|² = Σ r²(t0) + Σ r²(t0 + τ) − 2 Σ r(t0)·r(t0 + τ).
    """
    x = _series(positions, "positions")
    max_lag = _check_lag(max_lag, x.shape[0])
    if subtract_com:
        x = relative_to_com(x, masses)
    # Per-atom time means cancel in displacements; removing them avoids cancellation error.
    x = x - x.mean(axis=0, keepdims=True)
    n_frames, n_atoms = x.shape[:2]
    x = x.reshape(n_frames, -1)
    sq = np.concatenate([[0.0], np.cumsum(np.sum(x**2, axis=1))])  # sq[k] = Σ_{t<k} r²(t)
    lags = np.arange(max_lag + 1)
    ends = sq[n_frames - lags] + (sq[n_frames] - sq[lags])  # Σ over origins of r²(t0) + r²(t0+τ)
    return (ends - 2.0 * _autocorrelation_sum(x, max_lag)) / (n_atoms * (n_frames - lags))


# --- diffusion coefficients ----------------------------------------------------------------------


def _window(t: np.ndarray, window, name: str) -> np.ndarray:
    """Mask of lag times in ``window`` = (t_start, t_end) ps; default the second half of the lags."""
    start, end = (0.5 * t[-1], t[-1]) if window is None else window
    if not 0 <= start < end or end > t[-1] * (1 + 1e-9):
        raise ValueError(f"{name} must satisfy 0 <= start < end <= {t[-1]:g} ps; got {window}")
    tol = 1e-9 * t[-1]
    return (t >= start - tol) & (t <= end + tol)


def green_kubo_diffusion(vacf, dt: float, plateau: tuple[float, float] | None = None):
    """Running Green–Kubo integral D(t) = (1/3) ∫_0^t C dt' (trapezoid) and its plateau value.

    Parameters
    ----------
    vacf : (L + 1,) velocity autocorrelation at lags 0..L (Å²/ps²).
    dt : time between frames (ps).
    plateau : (t_start, t_end) in ps over which D(t) is averaged; default the second half of the
        lags, which assumes C has decayed by then (choose ``max_lag`` accordingly).

    Returns
    -------
    d_running : (L + 1,) D(t) in Å²/ps.
    d_plateau : mean of D(t) over the plateau window (Å²/ps).
    """
    c = np.asarray(vacf, float)
    if c.ndim != 1 or c.size < 2 or not dt > 0:
        raise ValueError("vacf must be 1-d with at least two lags and dt must be positive")
    d_running = np.concatenate([[0.0], np.cumsum(0.5 * (c[1:] + c[:-1]))]) * dt / 3.0
    mask = _window(lag_times(c.size - 1, dt), plateau, "plateau")
    return d_running, float(d_running[mask].mean())


def einstein_diffusion(msd, dt: float, fit_range: tuple[float, float] | None = None) -> float:
    """Self-diffusion coefficient slope/6 (Å²/ps) of a least-squares line MSD = a + 6 D t.

    ``fit_range`` = (t_start, t_end) in ps should lie in the diffusive regime; default the
    second half of the lags.
    """
    m = np.asarray(msd, float)
    if m.ndim != 1 or m.size < 3 or not dt > 0:
        raise ValueError("msd must be 1-d with at least three lags and dt must be positive")
    t = lag_times(m.size - 1, dt)
    mask = _window(t, fit_range, "fit_range")
    if mask.sum() < 2:
        raise ValueError(f"fit_range {fit_range} holds fewer than two lag times")
    slope, _ = np.polyfit(t[mask], m[mask], 1)
    return float(slope / 6.0)


@dataclasses.dataclass(frozen=True)
class DiffusionSettings:
    """How ``self_diffusion`` turns a trajectory into D."""

    max_lag: int  # correlation length in frames; each block must be longer
    n_blocks: int = 5  # independent blocks for the standard errors
    plateau: tuple[float, float] | None = None  # Green–Kubo plateau window (ps)
    fit_range: tuple[float, float] | None = None  # Einstein fit window (ps)
    subtract_com: bool = True  # thermostats and finite boxes add COM motion


@dataclasses.dataclass(frozen=True)
class DiffusionResult:
    """Self-diffusion coefficients (Å²/ps): block means and their standard errors."""

    D_gk: float
    D_gk_err: float
    D_einstein: float
    D_einstein_err: float
    n_blocks: int

    def in_m2_per_s(self) -> dict[str, float]:
        """The four coefficients converted to m²/s."""
        keys = ("D_gk", "D_gk_err", "D_einstein", "D_einstein_err")
        return {k: float(units.a2_per_ps_to_m2_per_s(getattr(self, k))) for k in keys}


def self_diffusion(velocities, positions, dt: float, settings: DiffusionSettings,
                   masses=None) -> DiffusionResult:
    """Green–Kubo (from ``velocities``) and Einstein (from unwrapped ``positions``) estimates.

    Either series may be None, giving NaN for that method. Centre-of-mass motion is removed from
    the whole trajectory before it is cut into ``settings.n_blocks`` blocks.
    """
    if not dt > 0:
        raise ValueError(f"dt must be positive; got {dt}")
    s = settings

    def prepared(x, name):
        if x is None:
            return None
        x = _series(x, name)
        if x.shape[0] // s.n_blocks <= s.max_lag:
            raise ValueError(f"blocks of {x.shape[0] // s.n_blocks} frames are not longer than "
                             f"max_lag = {s.max_lag}; use fewer blocks or a shorter max_lag")
        return relative_to_com(x, masses) if s.subtract_com else x

    v, x = prepared(velocities, "velocities"), prepared(positions, "positions")
    if v is None and x is None:
        raise ValueError("need velocities, positions or both")
    nan = (float("nan"), float("nan"))
    gk = nan if v is None else block_estimate(
        lambda b: green_kubo_diffusion(vacf(b, s.max_lag, False), dt, s.plateau)[1], v, s.n_blocks)
    ein = nan if x is None else block_estimate(
        lambda b: einstein_diffusion(msd(b, s.max_lag, False), dt, s.fit_range), x, s.n_blocks)
    return DiffusionResult(gk[0], gk[1], ein[0], ein[1], s.n_blocks)
