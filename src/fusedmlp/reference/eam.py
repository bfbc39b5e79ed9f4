"""Analytic reference potential: the Zhou–Johnson–Wadley generalized EAM in JAX.

X. W. Zhou, R. A. Johnson and H. N. G. Wadley, "Misfit-energy-increasing dislocations in
vapor-deposited CoFe/NiFe multilayers", Phys. Rev. B 69, 144113 (2004), Eqs. (1)–(5) and the
parameter table (Ti row below).

    E   = Σ_i F(ρ_i) + ½ Σ_i Σ_(j≠i, images) φ(r_ij),     ρ_i = Σ_j f(r_ij)
    f(r) = f_e exp[−β(r/r_e − 1)] / (1 + (r/r_e − λ)^20)
    φ(r) = A exp[−α(r/r_e − 1)] / (1 + (r/r_e − κ)^20) − B exp[−β(r/r_e − 1)] / (1 + (r/r_e − λ)^20)
    F(ρ) = Σ_i F_ni (ρ/ρ_n − 1)^i                 ρ < ρ_n = 0.85 ρ_e
         = Σ_i F_i (ρ/ρ_e − 1)^i                  ρ_n ≤ ρ < ρ_0 = 1.15 ρ_e
         = F_e [1 − ln (ρ/ρ_s)^η] (ρ/ρ_s)^η        ρ_0 ≤ ρ

Here φ and f are multiplied by a C² quintic switch from ``r_on`` to ``r_off`` (6–7 Å), which
makes the potential smooth with a finite cutoff; a shorter switch changes the phase order.
Evaluate in float64 (``jax.config.update("jax_enable_x64", True)``): the labels are references.

This is a *reference potential* that stands in for DFT in the embedded demo; it is not DFT.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import space
from ..model.graph import edge_vectors
from ..quantity import energy_forces_virial


@dataclasses.dataclass(frozen=True)
class ZhouParams:
    r_e: float
    f_e: float
    rho_e: float
    rho_s: float
    alpha: float
    beta: float
    A: float
    B: float
    kappa: float
    lam: float
    F_n: tuple[float, float, float, float]
    F: tuple[float, float, float, float]
    eta: float
    F_e: float
    r_on: float = 6.0  # switch start, Å
    r_off: float = 7.0  # cutoff, Å

    @property
    def cutoff(self) -> float:
        return self.r_off


# Zhou, Johnson & Wadley, PRB 69, 144113 (2004), Table III, Ti.
ZHOU2004 = {
    "Ti": ZhouParams(r_e=2.933872, f_e=1.863200, rho_e=25.565138, rho_s=25.565138,
                     alpha=8.775431, beta=4.680230, A=0.373601, B=0.570968, kappa=0.5, lam=1.0,
                     F_n=(-3.203773, -0.198262, 0.683779, -2.321732),
                     F=(-3.22, 0.0, 0.608587, -0.750710), eta=0.558572, F_e=-3.219176),
}


def zhou2004(element: str) -> ZhouParams:
    if element not in ZHOU2004:
        raise KeyError(f"no Zhou–Johnson–Wadley 2004 parameters for {element!r} in this package "
                       f"(available: {sorted(ZHOU2004)})")
    return ZHOU2004[element]


def scaled(p: ZhouParams, alpha_scale: float = 1.0, A_scale: float = 1.0,
           length_scale: float = 1.0) -> ZhouParams:
    """A variant level of theory: α → s_α α, A → s_A A, and r_e and the switch radii × s_r.

    The demo's second fidelity uses (1.05, 1/1.05, 0.995): a harder, slightly shorter-ranged
    potential, with elastic constants 8–18 % higher and forces ≈ 7 % RMS different.
    """
    return dataclasses.replace(p, alpha=p.alpha * alpha_scale, A=p.A * A_scale,
                               r_e=p.r_e * length_scale, r_on=p.r_on * length_scale,
                               r_off=p.r_off * length_scale)


def switch(r, r_on, r_off):
    """C² quintic switch: 1 below r_on, 0 above r_off, S = 1 − 10x³ + 15x⁴ − 6x⁵ between."""
    x = jnp.clip((r - r_on) / (r_off - r_on), 0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


def density(p: ZhouParams, r):
    x = r / p.r_e
    return p.f_e * jnp.exp(-p.beta * (x - 1.0)) / (1.0 + (x - p.lam) ** 20) * switch(r, p.r_on, p.r_off)


def pair(p: ZhouParams, r):
    x = r / p.r_e
    rep = p.A * jnp.exp(-p.alpha * (x - 1.0)) / (1.0 + (x - p.kappa) ** 20)
    att = p.B * jnp.exp(-p.beta * (x - 1.0)) / (1.0 + (x - p.lam) ** 20)
    return (rep - att) * switch(r, p.r_on, p.r_off)


def embedding(p: ZhouParams, rho):
    rho_n, rho_0 = 0.85 * p.rho_e, 1.15 * p.rho_e
    low = sum(c * (rho / rho_n - 1.0) ** i for i, c in enumerate(p.F_n))
    mid = sum(c * (rho / p.rho_e - 1.0) ** i for i, c in enumerate(p.F))
    # Keep the logarithm's argument positive in branches that are not selected (NaN-free grads).
    y = jnp.where(rho >= rho_0, rho, rho_0) / p.rho_s
    high = p.F_e * (1.0 - p.eta * jnp.log(y)) * y**p.eta
    return jnp.where(rho < rho_n, low, jnp.where(rho < rho_0, mid, high))


def energy_from_displacements(p: ZhouParams, dr, pair_mask):
    """Total energy from the displacements of all (i, neighbour-image) pairs.

    ``dr`` has shape (N, K, 3) for N atoms and K candidate neighbours each; ``pair_mask`` (N, K)
    is False for excluded entries. Each pair appears once from each side.
    """
    r2 = jnp.sum(dr**2, axis=-1)
    r = jnp.sqrt(jnp.where(pair_mask, r2, 1.0))  # excluded pairs: safe dummy distance
    inside = pair_mask & (r < p.r_off)
    rho = jnp.sum(jnp.where(inside, density(p, r), 0.0), axis=1)
    e_pair = 0.5 * jnp.sum(jnp.where(inside, pair(p, r), 0.0))
    return jnp.sum(embedding(p, rho)) + e_pair


def energy_fn(p: ZhouParams) -> Callable:
    """``energy(positions, box, shifts)`` for cells of any size and shape.

    ``shifts`` are the lattice translations from ``space.image_shifts(box, cutoff)``; they are an
    argument (not recomputed inside) so that the function stays jittable.
    """

    def energy(positions, box, shifts):
        dr, self_mask = space.all_image_displacements(positions, box, shifts)
        n, m = dr.shape[0], shifts.shape[0]
        return energy_from_displacements(p, dr.reshape(n, n * m, 3), ~self_mask.reshape(n, n * m))

    return energy


@dataclasses.dataclass
class ReferenceCalculator:
    """Energy, forces and virial of single configurations, compiled once per shape.

    ``skin`` widens the image search so a slightly strained or distorted cell needs no new shifts.
    """

    params: ZhouParams
    skin: float = 0.5

    def __post_init__(self):
        if not jax.config.jax_enable_x64:
            raise RuntimeError("the reference potential needs float64: call "
                               "jax.config.update('jax_enable_x64', True) first")
        self.energy = energy_fn(self.params)
        self._efv = jax.jit(energy_forces_virial(self.energy))
        self._e = jax.jit(self.energy)

    def shifts(self, box) -> jnp.ndarray:
        return jnp.asarray(space.image_shifts(box, self.params.cutoff + self.skin))

    def __call__(self, positions, box):
        """(energy eV, forces eV/Å, virial eV) as numpy arrays."""
        pos, box = jnp.asarray(positions, jnp.float64), jnp.asarray(box, jnp.float64)
        u, f, w = self._efv(pos, box, shifts=self.shifts(box))
        return float(u), np.asarray(f), np.asarray(w)

    def potential_energy(self, positions, box) -> float:
        box = jnp.asarray(box, jnp.float64)
        return float(self._e(jnp.asarray(positions, jnp.float64), box, self.shifts(box)))


def graph_energy_fn(p: ZhouParams) -> Callable:
    """``energy(positions, box, graph)`` on a ``model.graph.Graph`` built with cutoff ``p.cutoff``:
    the MD interface shared with the learned potentials (any system size)."""
    def energy(positions, box, graph):
        return energy_from_displacements(p, edge_vectors(positions, box, graph), graph.mask)

    return energy
