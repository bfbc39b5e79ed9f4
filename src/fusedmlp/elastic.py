"""Elastic constants at 0 K from finite strains, and symmetry reductions of a stiffness matrix.

Voigt order (xx, yy, zz, yz, xz, xy); shear columns use engineering strain γ = 2ε. The stress is
the potential Cauchy stress, tension positive, σ = −W/V with W the virial of ``quantity``.
This is the independent reference for the stress-fluctuation estimator at low temperature.
Central differences of the Cauchy stress under the linear strain h' = (1 + ε)h give the
stress–strain (Birch) coefficients B_ijkl = ∂σ_ij/∂ε_kl of the reference state, which is what
``observables.stress.stress_fluctuation`` returns (and equals the Lagrangian C at zero stress);
so the linear strain is the right one here.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.optimize import minimize

from . import units
from .quantity import strained

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
# The independent constants by crystal symmetry, in the order of the paper's tables
# ("none": the 21 of a symmetric 6×6 matrix).
HEXAGONAL_CONSTANTS = ("C11", "C33", "C44", "C12", "C13")
CUBIC_CONSTANTS = ("C11", "C12", "C44")
SYMMETRY_CONSTANTS = {"hexagonal": HEXAGONAL_CONSTANTS, "cubic": CUBIC_CONSTANTS,
                      "none": tuple(f"C{i}{j}" for i in range(1, 7) for j in range(i, 7))}

_VOIGT_ROWS, _VOIGT_COLS = (np.array(ix) for ix in zip(*VOIGT))
# Voigt component of each tensor entry, and its factor: ε_aa = e_I on the diagonal, and
# ε_ab = γ_I / 2 off it, since the shear components are engineering strains γ = 2ε.
_VOIGT_OF_ENTRY = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2]])
_STRAIN_FACTOR = np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]])


def voigt_to_strain(e):
    """Symmetric 3×3 strain tensor of a Voigt 6-vector ``e`` with engineering shears.

    NumPy or JAX (traceable, so the Born terms differentiate through it); keeps ``e``'s dtype.
    """
    return e[..., _VOIGT_OF_ENTRY] * np.asarray(_STRAIN_FACTOR, dtype=e.dtype)


def tensor_to_voigt(t):
    """Voigt 6-vector (xx, yy, zz, yz, xz, xy) of a symmetric 3×3 tensor (a stress: no factor
    on the shear components). NumPy or JAX; leading axes are kept."""
    return t[..., _VOIGT_ROWS, _VOIGT_COLS]


def voigt_to_tensor(s):
    """Symmetric 3×3 tensor of a Voigt 6-vector ``s`` (a stress: no factor on the shear
    components); the inverse of ``tensor_to_voigt``. NumPy or JAX."""
    return s[..., _VOIGT_OF_ENTRY]


def stiffness_to_voigt(c):
    """6×6 Voigt matrix C_IJ = c_abcd (I = ab, J = cd) of a 3×3×3×3 tensor. NumPy or JAX."""
    return c[..., _VOIGT_ROWS[:, None], _VOIGT_COLS[:, None], _VOIGT_ROWS[None, :], _VOIGT_COLS[None, :]]


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
            pos, bx = strained(positions, box, voigt_to_strain(sign * delta * np.eye(6)[j]))
            if relax:
                pos = relax_positions(efv, pos, bx)
            _, _, w = efv(pos, bx)
            sigma = -np.asarray(w) / abs(np.linalg.det(bx))
            stresses.append(tensor_to_voigt(sigma))
        c[:, j] = (stresses[0] - stresses[1]) / (2 * delta)
    return units.ev_per_a3_to_gpa(c)


def hexagonal(c) -> dict:
    """Five independent constants of a hexagonal crystal (c axis along z), averaging
    the entries that symmetry makes equal (plain arithmetic: traces under JAX).

    The basal plane is isotropic, so C11 − C12 = 2 C66 is read twice: from the normal entries
    (½(C11 + C22) − ½(C12 + C21)) and from the in-plane shear (2 C66), and C11 + C12 from the
    normal entries alone. In a stress-fluctuation estimate the relaxation term of C11 − C12 is
    carried by one degenerate optical mode (E2g, the basal sublattice shift); its two components
    drive σ_xx − σ_yy and σ_xy, so reading both at least halves the variance of C11 and C12
    (the demo's pre-trained model, 8 ps at 323 K, 36 atoms, 8 blocks: standard errors 2.7
    against 5.1 GPa from the normal entries alone). For any 6×6 input the five constants are
    those of its average over rotations about z.
    """
    s = 0.5 * (c[0, 0] + c[1, 1] + c[0, 1] + c[1, 0])  # C11 + C12
    d = 0.5 * (0.5 * (c[0, 0] + c[1, 1] - c[0, 1] - c[1, 0]) + 2.0 * c[5, 5])  # C11 − C12
    return {"C11": 0.5 * (s + d), "C33": c[2, 2],
            "C44": 0.5 * (c[3, 3] + c[4, 4]), "C12": 0.5 * (s - d),
            "C13": 0.25 * (c[0, 2] + c[2, 0] + c[1, 2] + c[2, 1])}


def cubic(c) -> dict:
    """Three independent constants of a cubic crystal (axes along the cube edges).
    Plain arithmetic, so it also traces under JAX (the DiffTRe loss)."""
    return {"C11": (c[0, 0] + c[1, 1] + c[2, 2]) / 3,
            "C12": (c[0, 1] + c[1, 0] + c[0, 2] + c[2, 0] + c[1, 2] + c[2, 1]) / 6,
            "C44": (c[3, 3] + c[4, 4] + c[5, 5]) / 3}


def reduce_stiffness(c, symmetry: str) -> dict:
    """The named constants (``SYMMETRY_CONSTANTS[symmetry]``) of a 6×6 stiffness, averaged over
    the entries the symmetry makes equal; "none" symmetrises C_ij. Plain arithmetic, so it also
    traces under JAX."""
    if symmetry == "hexagonal":
        return hexagonal(c)
    if symmetry == "cubic":
        return cubic(c)
    return {f"C{i + 1}{j + 1}": 0.5 * (c[i, j] + c[j, i]) for i in range(6) for j in range(i, 6)}


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
        return hexagonal_matrix(*(constants[k] for k in HEXAGONAL_CONSTANTS))
    if symmetry == "cubic":
        return cubic_matrix(*(constants[k] for k in CUBIC_CONSTANTS))
    raise ValueError(f"symmetry {symmetry!r}: expected 'hexagonal' or 'cubic'")
