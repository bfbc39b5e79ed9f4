"""Mechanical quantities of any energy function U(positions, box) by automatic differentiation.

This is the one definition of forces and of the virial used by the reference data, the
trainers and the observables:

    F_i = -∂U/∂r_i
    W   = -∂U(ε)/∂ε |_(ε=0),   U(ε) = U(r (1+ε)ᵀ, box (1+ε)ᵀ)

i.e. the virial is the strain derivative of the energy at fixed fractional coordinates (box rows
are lattice vectors; a homogeneous deformation 1+ε maps every row vector x to (1+ε) x). For an
energy invariant under rotations W is symmetric; it equals Σ_i r_i ⊗ F_i − (∂U/∂h) hᵀ of the
fused-training paper for box columns h. The potential part of the Cauchy stress (tension
positive) is −W/V.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def deformed(positions, box, deform):
    """The configuration under the homogeneous deformation F at fixed fractional coordinates:
    x' = x Fᵀ for the positions and for the box rows (lattice vectors)."""
    return positions @ deform.T, box @ deform.T


def strained(positions, box, strain):
    """The configuration under the linear (small) strain ε: F = 1 + ε.

    NumPy in, NumPy out; JAX (traced) in, JAX out. The identity takes the box's dtype so that a
    float32 model is not promoted to float64 by the strain.
    """
    return deformed(positions, box, np.eye(3, dtype=box.dtype) + strain)


def lagrangian_strained(positions, box, eta):
    """The configuration at the symmetric Lagrangian strain η = ½(FᵀF − 1), through the symmetric
    F = 1 + η − ½η² (= √(1 + 2η) to second order: FᵀF = 1 + 2η + O(η³)). Derivatives of U up to
    the second at η = 0 are therefore the Lagrangian ones; the first equal those of ``strained``.
    """
    return deformed(positions, box, np.eye(3, dtype=box.dtype) + eta - 0.5 * eta @ eta)


def strained_energy(energy_fn: Callable, positions, box, strain, **kwargs):
    """U at the homogeneously strained configuration (fixed fractional coordinates)."""
    return energy_fn(*strained(positions, box, strain), **kwargs)


def energy_forces_virial(energy_fn: Callable) -> Callable:
    """Return ``f(positions, box, **kw) -> (U, F, W)`` for ``energy_fn(positions, box, **kw)``."""

    def wrapped(positions, box, **kwargs):
        def u_of(pos, strain):
            return strained_energy(energy_fn, pos, box, strain, **kwargs)

        zero = jnp.zeros((3, 3), dtype=box.dtype)
        u, (g_pos, g_strain) = jax.value_and_grad(u_of, argnums=(0, 1))(positions, zero)
        return u, -g_pos, -g_strain

    return wrapped
