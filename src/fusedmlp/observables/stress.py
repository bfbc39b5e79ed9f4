"""Stress, pressure tensor and the isothermal stress-fluctuation elastic tensor.

Conventions: box rows are lattice vectors; strains act as h' = (1 + ε) h at fixed fractional
coordinates; tensors use Voigt order (xx, yy, zz, yz, xz, xy) with engineering shear strains,
so Voigt stresses are σ_I = σ_ab and C_IJ = C_abcd. Pressure is positive in compression:
P = (Σ p⊗p/m + W)/V with W = −∂U/∂ε the virial of ``quantity``; the Cauchy stress is σ = −P.

Born terms (Van Workum & de Pablo, PRE 71, 061102, 2005), per frame:

    σᴮ_I = (1/V) ∂U/∂ε_I,     Cᴮ_IJ = (1/V) ∂²U/∂ε_I∂ε_J          at ε = 0

and the isothermal elastic tensor from their fluctuations,

    C_IJ = ⟨Cᴮ_IJ⟩ − (V/k_BT)(⟨σᴮ_I σᴮ_J⟩ − ⟨σᴮ_I⟩⟨σᴮ_J⟩) + (N k_BT/V)(δ_ik δ_jl + δ_il δ_jk).

Averages take per-frame ``weights`` (DiffTRe reweighting); ``None`` means plain averages.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .. import units
from ..elastic import tensor_to_voigt, voigt_to_strain
from ..quantity import strained_energy
from .averages import weighted_average

# (δ_ik δ_jl + δ_il δ_jk) in Voigt form: 2 on the normal diagonal, 1 on the shear diagonal
KINETIC_VOIGT = jnp.diag(jnp.array([2.0, 2.0, 2.0, 1.0, 1.0, 1.0]))


def volume(box):
    return jnp.abs(jnp.linalg.det(box))


def kinetic_tensor(momenta, masses):
    """Σ_i p_i ⊗ p_i / m_i (eV); ``masses`` (N,) or (N, 1) in internal units."""
    m = jnp.reshape(masses, (-1, 1)) if jnp.ndim(masses) else masses
    return jnp.einsum("ia,ib->ab", momenta / m, momenta)


def pressure_tensor(momenta, masses, virial, box):
    """P = (Σ p⊗p/m + W)/V (eV/Å³, positive in compression)."""
    return (kinetic_tensor(momenta, masses) + virial) / volume(box)


def born_terms(energy: Callable) -> Callable:
    """``f(positions, box, **kw) -> (σᴮ (6,), Cᴮ (6, 6))`` in eV/Å³ for ``energy(positions, box, **kw)``.

    The neighbour structure passed in ``kw`` stays fixed under the strain; a smooth cutoff makes
    that exact for the first and second derivatives at ε = 0.
    """

    def f(positions, box, **kw):
        def u_of(e):
            return strained_energy(energy, positions, box, voigt_to_strain(e), **kw)

        zero = jnp.zeros(6, box.dtype)
        grad = jax.grad(u_of)
        v = volume(box)
        return grad(zero) / v, jax.jacfwd(grad)(zero) / v

    return f


def stress_fluctuation(born_stress, born_stiffness, volume_a3, n_atoms: int, temperature: float,
                       weights=None):
    """Isothermal elastic tensor C (6×6, eV/Å³) from per-frame Born terms at fixed box.

    ``born_stress`` (F, 6), ``born_stiffness`` (F, 6, 6) in eV/Å³; ``volume_a3`` the box volume.
    """
    kT = units.kT(temperature)
    mean_s = weighted_average(born_stress, weights)
    ds = born_stress - mean_s
    cov = weighted_average(ds[:, :, None] * ds[:, None, :], weights)
    return (weighted_average(born_stiffness, weights) - (volume_a3 / kT) * cov
            + (n_atoms * kT / volume_a3) * KINETIC_VOIGT)


def frame_pressure(born_stress, kinetic, volume_a3, weights=None):
    """Mean pressure tensor (3×3 diagonal part as a Voigt 6-vector, eV/Å³) of NVT frames:
    P = ⟨Σ p⊗p/m⟩/V − ⟨σᴮ⟩ with ``kinetic`` (F, 3, 3) the per-frame Σ p⊗p/m."""
    kin = jax.vmap(tensor_to_voigt)(kinetic) / volume_a3
    return weighted_average(kin - born_stress, weights)
