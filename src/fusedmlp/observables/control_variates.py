"""Control variates for canonical averages of crystals: per-frame quantities of known mean, and
the frame weights that use them.

Stein's identity. For canonical sampling, exp(−U/k_BT), and fixed directions e, e' in
configuration space, integration by parts gives ⟨(e·r)(e'·∇U)⟩ = k_BT e·e', whatever U is. Take
q = e·r the mean displacement of one sublattice of a crystal relative to another (a Γ-point optical
coordinate) and g = e'·∇U the matching difference of mean forces: every product q g has a known
mean, and it follows the thermal noise of the sublattice shift closely (exactly q g = k q² for a
harmonic mode of stiffness k). In hcp that shift is the E2g mode, whose variance is the internal
relaxation term of C11 − C12 in the stress-fluctuation formula and the main noise of C11 and C12
(evaluation README); the control variates remove most of it.

Calibration weights. With X (F, p) per-frame variates of zero expectation, the regression
(control-variate) estimate of any mean ⟨Y⟩ is Ȳ − Ĉov(Y, X) Ŝ⁻¹ X̄ (Ŝ the sample covariance of X).
It is a weighted average Σ w_f Y_f with weights w = (1 − (X − X̄) Ŝ⁻¹ X̄)/F that do not depend on Y:
they sum to 1 and give Σ w X = 0, the known mean. Any estimator built from weighted averages (the
stress-fluctuation coefficients) then uses them as it would use uniform weights. The weights may
be negative. The estimate is consistent, with an O(p/F) bias from estimating the coefficients, so
it needs many frames per variate (``MIN_FRAMES_PER_VARIATE``).

The identity needs the atoms to stay near their lattice sites (a crystal, displacements unwrapped
from the sites); it does not hold for a liquid in a periodic box. MD samples the canonical
distribution up to its integrator's O(dt²) error, and so satisfies it to that order.
"""

from __future__ import annotations

import numpy as np

MIN_FRAMES_PER_VARIATE = 10
# Each block of frames fits its own coefficients, and what counts is independent samples of the
# optical modes, not frames: blocks of 0.3 ps (hcp, 323 K) and of 0.75 ps (30 K, Langevin 4/ps)
# gave block errors of C11 larger than the plain estimate's, blocks of 3 ps errors 3-4x smaller.
MIN_BLOCK_PS = 2.0


def variate_count(n_sublattices: int) -> int:
    """Columns of ``sublattice_variates`` for a crystal with ``n_sublattices`` sublattices."""
    return 3 * (n_sublattices - 1)


def sublattice_variates(displacements, forces, sublattice, kT: float) -> np.ndarray:
    """Zero-mean Stein variates (F, p) of NVT frames of a crystal.

    ``displacements`` (F, N, 3): unwrapped positions minus lattice sites (Å); ``forces`` (F, N, 3)
    (eV/Å); ``sublattice`` (N,): integer label of each atom's sublattice (the basis atom of the
    primitive cell it repeats); ``kT`` in eV. The coordinates are q_b = mean displacement of
    sublattice b minus that of sublattice 0 (b ≥ 1, three axes each: p = 3 (n_sub − 1)), g_b = ∂U/∂q_b
    along the same directions, and the variates q_i g_i minus their known mean k_BT e_i·e_i. Only
    these diagonal products: with the products across axes as well (six for hcp), blocks with few
    independent samples (30 K, 0.75 ps) fitted their coefficients to noise and gave C11 a larger
    error than the plain estimate (4.7 against 3.1 GPa), where the three gave a smaller one. Zero
    columns for a crystal with one sublattice.
    """
    u = np.asarray(displacements, float)
    f = np.asarray(forces, float)
    labels = np.asarray(sublattice)
    kinds = np.unique(labels)
    if len(kinds) < 2:
        return np.zeros((len(u), 0))
    counts = np.array([np.sum(labels == k) for k in kinds])
    mean_u = np.stack([u[:, labels == k].mean(axis=1) for k in kinds], axis=1)  # (F, n_sub, 3)
    mean_f = np.stack([f[:, labels == k].mean(axis=1) for k in kinds], axis=1)
    q = mean_u[:, 1:] - mean_u[:, :1]  # (F, n_sub − 1, 3)
    # e_b has 1/n_b on the atoms of b and −1/n_0 on those of 0: e_b·∇U = −(mean F_b − mean F_0),
    # e_b·e_b = 1/n_b + 1/n_0 along each axis
    g = -(mean_f[:, 1:] - mean_f[:, :1])
    norm = 1.0 / counts[1:] + 1.0 / counts[0]
    return (q * g - kT * norm[None, :, None]).reshape(len(u), -1)


def calibration_weights(variates) -> np.ndarray:
    """Frame weights (F,) that sum to 1 and make the weighted mean of every column of ``variates``
    (F, p), of known mean zero, exactly zero: the regression control-variate estimator as weights.
    Uniform weights when p = 0. Fewer than ``MIN_FRAMES_PER_VARIATE`` frames per variate is an
    error (the regression would fit the noise)."""
    x = np.asarray(variates, float)
    n, p = x.shape
    if p == 0:
        return np.full(n, 1.0 / n)
    if n < MIN_FRAMES_PER_VARIATE * p:
        raise ValueError(f"control variates: {n} frames for {p} variates; at least "
                         f"{MIN_FRAMES_PER_VARIATE * p} are needed")
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / n
    # least squares: a variate that is a combination of the others (a symmetric cell) adds nothing
    beta = np.linalg.lstsq(cov, x.mean(axis=0), rcond=1e-10)[0]
    return (1.0 - centred @ beta) / n
