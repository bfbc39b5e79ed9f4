"""Elastic constants at 0 K from finite strains, and symmetry reductions of a stiffness matrix.

Voigt order (xx, yy, zz, yz, xz, xy); shear columns use engineering strain γ = 2ε. The stress is
the potential Cauchy stress, tension positive, σ = −W/V with W the virial of ``quantity``.
This is the independent reference for the stress-fluctuation estimator at low temperature.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.optimize import minimize

from . import units

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def voigt_strain(j: int, amount: float) -> np.ndarray:
    """Symmetric strain tensor of Voigt component ``j`` (engineering shear for j ≥ 3)."""
    a, b = VOIGT[j]
    e = np.zeros((3, 3))
    if a == b:
        e[a, a] = amount
    else:
        e[a, b] = e[b, a] = amount / 2
    return e


def relax_positions(efv: Callable, positions, box, ftol: float = 1e-6) -> np.ndarray:
    """Minimise the energy over atomic positions at fixed box (internal relaxation)."""
    shape = np.shape(positions)

    def fun(x):
        u, f, _ = efv(x.reshape(shape), box)
        return u, -np.asarray(f).ravel()

    res = minimize(fun, np.asarray(positions, float).ravel(), jac=True, method="L-BFGS-B",
                   options=dict(gtol=ftol, ftol=1e-15, maxiter=2000))
    return res.x.reshape(shape)


def finite_strain_stiffness(efv: Callable, positions, box, delta: float = 1e-3,
                            relax: bool = True) -> np.ndarray:
    """6×6 stiffness C_ij = ∂σ_i/∂ε_j (GPa) by central differences of the stress.

    ``efv(positions, box) -> (U, F, W)`` in eV, eV/Å, eV; ``box`` rows are lattice vectors.
    With ``relax`` the atoms relax in each strained cell (needed for non-Bravais lattices, hcp).
    """
    positions = np.asarray(positions, float)
    box = np.asarray(box, float)
    c = np.zeros((6, 6))
    for j in range(6):
        stresses = []
        for sign in (1.0, -1.0):
            d = np.eye(3) + voigt_strain(j, sign * delta)
            pos, bx = positions @ d.T, box @ d.T
            if relax:
                pos = relax_positions(efv, pos, bx)
            _, _, w = efv(pos, bx)
            sigma = -np.asarray(w) / abs(np.linalg.det(bx))
            stresses.append(np.array([sigma[a, b] for a, b in VOIGT]))
        c[:, j] = (stresses[0] - stresses[1]) / (2 * delta)
    return units.ev_per_a3_to_gpa(c)


def hexagonal(c) -> dict:
    """Five independent constants of a hexagonal crystal (c axis along z), averaging
    the entries that symmetry makes equal (plain arithmetic: traces under JAX)."""
    return {"C11": 0.5 * (c[0, 0] + c[1, 1]), "C33": c[2, 2],
            "C44": 0.5 * (c[3, 3] + c[4, 4]), "C12": 0.5 * (c[0, 1] + c[1, 0]),
            "C13": 0.25 * (c[0, 2] + c[2, 0] + c[1, 2] + c[2, 1])}


def cubic(c) -> dict:
    """Three independent constants of a cubic crystal (axes along the cube edges).
    Plain arithmetic, so it also traces under JAX (the DiffTRe loss)."""
    return {"C11": (c[0, 0] + c[1, 1] + c[2, 2]) / 3,
            "C12": (c[0, 1] + c[1, 0] + c[0, 2] + c[2, 0] + c[1, 2] + c[2, 1]) / 6,
            "C44": (c[3, 3] + c[4, 4] + c[5, 5]) / 3}


def moduli(c: np.ndarray) -> dict:
    """Voigt, Reuss and Hill bulk (K) and shear (G) moduli and Poisson ratios of a 6×6 stiffness
    (any units; Voigt order, engineering shears)."""
    c = np.asarray(c, float)
    s = np.linalg.inv(c)
    kv = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[0, 2] + c[1, 2])) / 9
    gv = (c[0, 0] + c[1, 1] + c[2, 2] - (c[0, 1] + c[0, 2] + c[1, 2])
          + 3 * (c[3, 3] + c[4, 4] + c[5, 5])) / 15
    kr = 1 / (s[0, 0] + s[1, 1] + s[2, 2] + 2 * (s[0, 1] + s[0, 2] + s[1, 2]))
    gr = 15 / (4 * (s[0, 0] + s[1, 1] + s[2, 2]) - 4 * (s[0, 1] + s[0, 2] + s[1, 2])
               + 3 * (s[3, 3] + s[4, 4] + s[5, 5]))
    out = {"K_V": kv, "G_V": gv, "K_R": kr, "G_R": gr, "K_H": 0.5 * (kv + kr), "G_H": 0.5 * (gv + gr)}
    for k in "VRH":
        out[f"nu_{k}"] = poisson_ratio(out[f"K_{k}"], out[f"G_{k}"])
    return {k: float(v) for k, v in out.items()}


def poisson_ratio(k, g):
    """ν = (3K − 2G) / (2(3K + G)) of an isotropic solid."""
    return (3 * k - 2 * g) / (2 * (3 * k + g))


def hexagonal_matrix(c11, c33, c44, c12, c13) -> np.ndarray:
    """Full 6×6 stiffness of a hexagonal crystal from its five constants (C66 = (C11 − C12)/2)."""
    c = np.zeros((6, 6))
    c[0, 0] = c[1, 1] = c11
    c[2, 2] = c33
    c[3, 3] = c[4, 4] = c44
    c[5, 5] = 0.5 * (c11 - c12)
    c[0, 1] = c[1, 0] = c12
    c[0, 2] = c[2, 0] = c[1, 2] = c[2, 1] = c13
    return c


def cubic_matrix(c11, c12, c44) -> np.ndarray:
    """Full 6×6 stiffness of a cubic crystal from its three constants."""
    return hexagonal_matrix(c11, c11, c44, c12, c12) + np.diag([0, 0, 0, 0, 0, c44 - 0.5 * (c11 - c12)])


def symmetric_matrix(constants: dict, symmetry: str) -> np.ndarray:
    """The 6×6 stiffness of ``hexagonal`` or ``cubic`` constants (names C11 …); the moduli of a
    symmetry-averaged tensor are less noisy than those of the raw fluctuation tensor."""
    if symmetry == "hexagonal":
        return hexagonal_matrix(*(constants[k] for k in ("C11", "C33", "C44", "C12", "C13")))
    if symmetry == "cubic":
        return cubic_matrix(*(constants[k] for k in ("C11", "C12", "C44")))
    raise ValueError(f"symmetry {symmetry!r}: expected 'hexagonal' or 'cubic'")
