"""Stress, pressure tensor and the stress-fluctuation elastic constants (isothermal and adiabatic).

Conventions: box rows are lattice vectors; tensors use Voigt order (xx, yy, zz, yz, xz, xy) with
engineering shear strains, so Voigt stresses are σ_I = σ_ab and C_IJ = C_abcd. Pressure is
positive in compression: P = (K + W)/V with K = Σ p⊗p/m and W = −∂U/∂ε the virial of
``quantity``; the Cauchy stress (tension positive) is σ = −P.

Born terms, per frame, at the Lagrangian strain η = ½(FᵀF − 1) of the deformation F applied to
positions and box at fixed fractional coordinates (``quantity.lagrangian_strained``):

    σᴮ_I = (1/V) ∂U/∂η_I,     Cᴮ_IJ = (1/V) ∂²U/∂η_I∂η_J          at η = 0.

Isothermal elastic constants, the second η-derivatives of the free energy per reference volume
(Squire, Holt & Hoover, Physica 42, 388, 1969; Lutsko, J. Appl. Phys. 65, 2991, 1989;
Van Workum & de Pablo, PRE 71, 061102, 2005), from NVT frames at the reference box:

    C^T_ijkl = ⟨Cᴮ_ijkl⟩ − (V/k_BT) cov(σᴮ_ij, σᴮ_kl) + S_ijkl(⟨K⟩/V),
    S_ijkl(a) = ½(a_ik δ_jl + a_jk δ_il + a_il δ_jk + a_jl δ_ik),

whose kinetic term S(⟨K⟩/V) equals (N k_BT/V)(δ_ik δ_jl + δ_il δ_jk) in expectation; the
measured ⟨K⟩ is used so that it is the same ⟨K⟩ as in the stress below. The kinetic term belongs
to the Lagrangian strain: for the linear strain F = 1 + ε it is half as large, and the Born
stiffness of ε exceeds that of η by ½S(σᴮ). (The former estimator, like the fused-training
paper's code, mixed ε-Born terms with this η kinetic term: for U = U(V) it gave C11 = 2p,
C12 = p, C44 = p/2 at zero pressure, p = N k_BT/V, instead of p, p, 0.) What is returned are
the stress–strain (Birch) coefficients at the mean Cauchy stress σ = ⟨σᴮ⟩ − ⟨K⟩/V of the
frames (Wallace, Thermodynamics of Crystals, 1972, ch. 1),

    B_ijkl = C_ijkl + S_ijkl(σ) − σ_ij δ_kl  = ∂σ_ij/∂ε_kl,

the slope of the Cauchy stress under a small linear strain of the stressed box (equal to C at
zero stress; a fluid has B11 = B12 = K and B44 = 0 at any pressure). Adiabatic constants
(Wallace 1972; Ray, Comput. Phys. Rep. 8, 109, 1988) from the same frames:

    C^S = C^T + (T V / C_V) λ ⊗ λ,     B^S − B^T = C^S − C^T,
    T λ_I = T (∂σ_I/∂T)_V = cov(σᴮ_I, U)/k_BT − (N k_BT/V) δ_I      (δ_I = 1 on xx, yy, zz),
    C_V / k_B = 3N/2 + var(U)/(k_BT)²,

classical NVT with U the per-frame potential energy: the kinetic parts are those of free momenta
(∂⟨K⟩/∂T = N k_B δ, kinetic heat capacity 3N k_B/2), the configurational ones are the
temperature derivatives of canonical averages, ∂⟨A⟩/∂T = cov(A, U)/(k_BT²).

Averages take per-frame ``weights`` (DiffTRe reweighting); ``None`` means plain averages.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .. import units
from ..elastic import stiffness_to_voigt, tensor_to_voigt, voigt_to_strain, voigt_to_tensor
from ..quantity import lagrangian_strained
from .averages import weighted_average

ELASTIC_KINDS = ("adiabatic", "isothermal")


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
    """``f(positions, box, **kw) -> (σᴮ (6,), Cᴮ (6, 6))`` in eV/Å³ for ``energy(positions, box, **kw)``,
    derivatives at the Lagrangian strain η = 0.

    The neighbour structure passed in ``kw`` stays fixed under the strain; a smooth cutoff makes
    that exact for the first and second derivatives at η = 0.
    """

    def f(positions, box, **kw):
        def u_of(e):
            return energy(*lagrangian_strained(positions, box, voigt_to_strain(e)), **kw)

        zero = jnp.zeros(6, box.dtype)
        grad = jax.grad(u_of)
        v = volume(box)
        return grad(zero) / v, jax.jacfwd(grad)(zero) / v

    return f


def born_directional(energy: Callable) -> Callable:
    """``f(positions, box, directions, **kw) -> (U, σᴮ (6,), y (p,))`` (eV; eV/Å³): the energy,
    the Born stress and the Born stiffness along p Voigt strain directions d_j,
    y_j = d_jᵀ Cᴮ d_j = (1/V) d²U(η(t d_j))/dt² at t = 0 (the Lagrangian strain of ``born_terms``),
    one forward-over-forward pass each instead of the six forward-over-reverse passes of the full Cᴮ."""

    def f(positions, box, directions, **kw):
        def u_of(e):
            return energy(*lagrangian_strained(positions, box, voigt_to_strain(e)), **kw)

        zero = jnp.zeros(6, box.dtype)
        v = volume(box)
        u, grad = jax.value_and_grad(u_of)(zero)
        # a Python loop, not vmap: batched tangents of the graph network run several times slower
        y = [jax.jvp(lambda e: jax.jvp(u_of, (e,), (d,))[1], (zero,), (d,))[1] for d in directions]
        return u, grad / v, (jnp.stack(y) if y else jnp.zeros(0, box.dtype)) / v

    return f


def born_cotangent(energy: Callable) -> Callable:
    """``s(positions, box, directions, c_u, c_stress, c_y, **kw)``: the scalar
    c_u U + c_stress · σᴮ + Σ_j c_y[j] y_j of ``born_directional``'s outputs, through directional
    derivatives only, so that its gradient in the parameters of ``energy`` (the reweighting
    gradient's vector–Jacobian product) costs a reverse pass over forward passes.

    Along the strain path e(t) = t a + t² b, d²U/dt² at t = 0 is D²U[a, a] + 2 DU[b]: with
    a = √|c| d and b = sign(c) c_stress / 2 one nested forward pass gives U, the first direction's
    term and the stress term together (further directions take one pass each).
    """

    def s(positions, box, directions, c_u, c_stress, c_y, **kw):
        def u_of(e):
            return energy(*lagrangian_strained(positions, box, voigt_to_strain(e)), **kw)

        def along(a, b):
            """(U, d²U/dt²) at t = 0 on the path t a + t² b."""
            def f_and_slope(t):
                return jax.jvp(lambda t: u_of(t * a + t * t * b), (t,), (jnp.ones_like(t),))

            (u, _), (_, curvature) = jax.jvp(f_and_slope, (jnp.zeros((), box.dtype),), (jnp.ones((), box.dtype),))
            return u, curvature

        if len(directions) == 0:  # the stress term alone: t² b gives 2 DU[b]
            u, curv = along(jnp.zeros(6, box.dtype), 0.5 * c_stress)
            return c_u * u + curv / volume(box)
        sign = jnp.where(c_y[0] >= 0, 1.0, -1.0).astype(box.dtype)
        u, curv = along(jnp.sqrt(jnp.abs(c_y[0])) * directions[0], 0.5 * sign * c_stress)
        total = sign * curv
        for c, d in zip(c_y[1:], directions[1:]):
            total = total + c * along(d, jnp.zeros(6, box.dtype))[1]
        return c_u * u + total / volume(box)

    return s


def _pair_sym(a):
    """S_ijkl(a) = ½(a_ik δ_jl + a_jk δ_il + a_il δ_jk + a_jl δ_ik) (Voigt 6×6) of a 3×3 ``a``."""
    d = jnp.eye(3, dtype=a.dtype)
    t = (jnp.einsum("ik,jl->ijkl", a, d) + jnp.einsum("jk,il->ijkl", a, d)
         + jnp.einsum("il,jk->ijkl", a, d) + jnp.einsum("jl,ik->ijkl", a, d))
    return 0.5 * stiffness_to_voigt(t)


def stress_fluctuation(born_stress, born_stiffness, kinetic, energy, volume_a3, n_atoms: int,
                       temperature: float, weights=None) -> dict:
    """Isothermal and adiabatic stress–strain coefficients B^T, B^S (6×6, eV/Å³) of NVT frames at
    one box (see the module docstring): ``{"isothermal": B^T, "adiabatic": B^S}``.

    ``born_stress`` (F, 6), ``born_stiffness`` (F, 6, 6) in eV/Å³, or (6, 6): its (weighted) mean
    estimated otherwise (``born_directions``), ``kinetic`` (F, 3, 3) the per-frame Σ p⊗p/m (eV),
    ``energy`` (F,) the potential energies (eV); ``volume_a3`` the box volume. Differentiable in
    all per-frame inputs and ``weights``.
    """
    kT = units.kT(temperature)

    def mean(x):
        return weighted_average(x, weights)

    ds = born_stress - mean(born_stress)
    du = energy - mean(energy)
    kin = mean(kinetic) / volume_a3
    born_mean = born_stiffness if jnp.ndim(born_stiffness) == 2 else mean(born_stiffness)
    c_t = (born_mean - (volume_a3 / kT) * mean(ds[:, :, None] * ds[:, None, :])
           + _pair_sym(kin))
    sigma = voigt_to_tensor(mean(born_stress)) - kin  # mean Cauchy stress
    b_t = c_t + _pair_sym(sigma) - jnp.outer(tensor_to_voigt(sigma), jnp.array([1.0, 1, 1, 0, 0, 0]))
    t_lambda = thermal_stress(born_stress, energy, volume_a3, n_atoms, temperature, weights)
    cv = 1.5 * n_atoms + mean(du * du) / kT**2  # C_V / k_B
    b_s = b_t + (volume_a3 / (kT * cv)) * jnp.outer(t_lambda, t_lambda)
    return {"isothermal": b_t, "adiabatic": b_s}


def thermal_stress(born_stress, energy, volume_a3, n_atoms: int, temperature: float, weights=None):
    """T λ = T (∂σ/∂T)_V (Voigt 6-vector, eV/Å³) of NVT frames at one box (module docstring):
    the configurational part from the covariance of the Born stress with the potential energy,
    the kinetic part that of free momenta."""
    kT = units.kT(temperature)

    def mean(x):
        return weighted_average(x, weights)

    ds = born_stress - mean(born_stress)
    du = energy - mean(energy)
    return mean(ds * du[:, None]) / kT - (n_atoms * kT / volume_a3) * jnp.array([1.0, 1, 1, 0, 0, 0])


def pressure_path_slope(t_lambda, b_isothermal, expansion, temperature: float):
    """dP_I/dT (I = xx, yy, zz; eV/Å³/K) along a path of boxes that expand at the linear strain
    rate ``expansion`` (Voigt 6-vector, 1/K; e.g. d ln a/dT of a measured lattice): with
    σ(T, ε), dσ/dT = λ + B^T dε/dT and P = −σ on the diagonal,

        dP/dT = −λ − B^T α,

    ``t_lambda`` = T λ (``thermal_stress``), ``b_isothermal`` the isothermal stress–strain
    coefficients B^T (6×6, eV/Å³; ``stress_fluctuation``) at the same box. Along the zero-pressure
    lattice of experiment it vanishes: a model whose slope is positive there expands more than
    the crystal measured."""
    return -(t_lambda / temperature + b_isothermal @ expansion)[:3]


def frame_pressure(born_stress, kinetic, volume_a3, weights=None):
    """Mean pressure tensor (3×3 diagonal part as a Voigt 6-vector, eV/Å³) of NVT frames:
    P = ⟨Σ p⊗p/m⟩/V − ⟨σᴮ⟩ with ``kinetic`` (F, 3, 3) the per-frame Σ p⊗p/m."""
    kin = jax.vmap(tensor_to_voigt)(kinetic) / volume_a3
    return weighted_average(kin - born_stress, weights)
