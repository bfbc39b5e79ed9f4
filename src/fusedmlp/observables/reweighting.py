"""Recorded frames, their per-frame quantities and reweighting to other parameters.

Reweighting (Zwanzig free-energy perturbation; used by DiffTRe, Thaler & Zavadlav, Nat. Commun.
12, 6884, 2021): frames x_i sampled with parameters θ̂ give ensemble averages at nearby θ,

    w_i = softmax_i(−β [U_θ(x_i) − U_θ̂(x_i)]),     ⟨O⟩_θ = Σ_i w_i O_θ(x_i),

and the effective sample size exp(−Σ w ln w)/F says how far θ has moved from θ̂ (1 for uniform
weights). The per-frame quantities are the energy and, for stresses and elastic constants, the
Born terms of ``stress.born_terms``; they are evaluated in batches of one compiled shape, so that
memory stays bounded by one batch and every trajectory length shares one compilation.

The evaluation measures elastic constants with these quantities (plain averages); the DiffTRe
trainer (``training.difftre``) adds its loss and gradients on top.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import units
from ..compilation import Program
from ..quantity import energy_forces_virial
from .born_directions import born_directions
from .stress import born_cotangent, born_directional, born_terms, kinetic_tensor
from .structure import rdf_frames


def reweighting_weights(u, u_ref, temperature: float):
    """w_i = softmax(−β[U_θ − U_θ̂]) over frames."""
    return jax.nn.softmax(-(u - u_ref) / units.kT(temperature))


def effective_sample_size(w) -> float:
    """exp(−Σ w ln w) / F: 1 for uniform weights."""
    w = np.asarray(w, float)
    nz = w[w > 0]
    return float(np.exp(-np.sum(nz * np.log(nz))) / len(w))


def frame_quantities(energy: Callable, with_born: bool) -> Callable:
    """``q(params, positions, box, graph) -> dict`` per frame for ``energy(params, r, box, graph)``."""

    def q(params, positions, box, graph):
        def u(r, b, graph):
            return energy(params, r, b, graph)

        out = {"energy": u(positions, box, graph)}
        if with_born:
            out["born_stress"], out["born_stiffness"] = born_terms(u)(positions, box, graph=graph)
        return out

    return q


def frame_forces(energy: Callable) -> Callable:
    """``f(params, positions, box, graph) -> forces`` (N, 3) of one frame (``quantity``'s forces;
    the unused virial drops out of the compiled program)."""

    def f(params, positions, box, graph):
        efv = energy_forces_virial(lambda r, b, graph: energy(params, r, b, graph))
        return efv(positions, box, graph=graph)[1]

    return f


def directional_quantities(energy: Callable) -> Callable:
    """``q(params, positions, box, graph, directions) -> dict`` per frame: the energy, the Born
    stress and the Born stiffness along the frame's strain ``directions`` (p, 6)
    (``stress.born_directional``)."""

    def q(params, positions, box, graph, directions):
        def u(r, b, graph):
            return energy(params, r, b, graph)

        energy_, stress, y = born_directional(u)(positions, box, directions, graph=graph)
        return {"energy": energy_, "born_stress": stress, "born_directional": y}

    return q


def directional_gradient(energy: Callable) -> Callable:
    """``g(params, positions, box, graphs, directions, c) -> ∂/∂θ Σ_i c_i · q_i(θ)`` over a batch of
    frames, for cotangents ``c`` of ``directional_quantities``' outputs (``stress.born_cotangent``)."""

    def g(params, positions, box, graphs, directions, c):
        def total(p):
            def one(r, graph, d, c_u, c_s, c_y):
                return born_cotangent(lambda x, b, graph: energy(p, x, b, graph))(
                    r, box, d, c_u, c_s, c_y, graph=graph)

            return jnp.sum(jax.vmap(one)(positions, graphs, directions, c["energy"], c["born_stress"],
                                         c["born_directional"]))

        return jax.grad(total)(params)

    return g


@dataclasses.dataclass(frozen=True)
class Frames:
    """Recorded frames of one state point with what does not depend on θ."""

    positions: np.ndarray  # (F, N, 3)
    box: np.ndarray  # (3, 3)
    graphs: object  # stacked Graph (F leading)
    u_ref: np.ndarray  # (F,) U_θ̂ of the sampling parameters
    fixed: dict  # kinetic tensors, per-frame RDFs, strain directions of the Born stiffness

    @property
    def directional(self) -> bool:
        """Whether the frames carry strain directions (``born_directions``): their Born
        stiffness is sampled along those, not evaluated in full."""
        return "born_index" in self.fixed


def make_frames(positions, momenta, masses_u, box, graphs, u_ref, sp) -> Frames:
    """Frames with their kinetic tensors; if the state point ``sp`` (a ``name``, ``targets`` and
    the DiffTRe state point's Born settings) has an ``rdf`` target, their RDFs on the target's
    bins; if it samples the Born stiffness along ``born_directions`` per frame, the directions of
    each frame (``born_index`` into the state point's direction set, ``born_vectors``)."""
    mass = units.mass_to_internal(np.asarray(masses_u, float))
    kin = np.asarray(jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(momenta), jnp.asarray(mass)))
    fixed = {"kinetic": kin}
    per_frame = getattr(sp, "born_directions", 0)
    if per_frame and getattr(sp, "needs_born", False):
        if sp.stiffness_constants:
            dirs = born_directions(sp.symmetry, sp.stiffness_constants)
            index = dirs.assign(len(positions), min(per_frame, dirs.count))
            vectors = dirs.vectors[index]
        else:  # the pressure needs the Born stress only
            index, vectors = np.zeros((len(positions), 0), int), np.zeros((len(positions), 0, 6))
        fixed["born_index"] = index
        fixed["born_vectors"] = vectors.astype(np.asarray(positions).dtype)
    if "rdf" in sp.targets:
        r_target = np.asarray(sp.targets["rdf"][0])
        dr = r_target[1] - r_target[0]
        r_max = r_target[-1] + 0.5 * dr
        r, g = rdf_frames(positions, box, r_max, len(r_target))
        if not np.allclose(r, r_target, atol=1e-6 * r_max):
            raise ValueError(f"state point {sp.name}: the rdf target must be on uniform bin centres "
                             "starting at Δr/2")
        fixed["rdf"] = np.asarray(g)
    return Frames(np.asarray(positions), np.asarray(box), graphs, np.asarray(u_ref), fixed)


class BatchedQuantities:
    """Per-frame quantities (``frame_quantities``) of recorded frames for one energy function,
    in batches of ``batch_frames`` frames (the last batch padded by repeating a frame)."""

    def __init__(self, energy: Callable, batch_frames: int = 16):
        self.batch = batch_frames
        self._q = {b: Program(jax.vmap(frame_quantities(energy, b), (None, 0, None, 0)))
                   for b in (False, True)}
        self._q_directional = Program(jax.vmap(directional_quantities(energy), (None, 0, None, 0, 0)))
        self._forces = Program(jax.vmap(frame_forces(energy), (None, 0, None, 0)))

    def _batches(self, n: int):
        for s in range(0, n, self.batch):
            idx = np.arange(s, min(s + self.batch, n))
            yield idx, np.r_[idx, np.full(self.batch - len(idx), idx[0])]  # one compiled shape

    def _take(self, fr: Frames, padded):
        return (jnp.asarray(fr.positions[padded]), jnp.asarray(fr.box),
                jax.tree_util.tree_map(lambda x: x[padded], fr.graphs))

    def quantities(self, params, fr: Frames, with_born: bool) -> dict:
        """Energies and, ``with_born``, the Born terms (along the frames' strain directions if
        they carry some, else the full stiffness) of every frame."""
        parts = []
        for idx, padded in self._batches(len(fr.positions)):
            if with_born and fr.directional:
                q = self._q_directional(params, *self._take(fr, padded),
                                        jnp.asarray(fr.fixed["born_vectors"][padded]))
            else:
                q = self._q[with_born](params, *self._take(fr, padded))
            parts.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[:len(idx)], q))
        return {k: jnp.asarray(np.concatenate([p[k] for p in parts])) for k in parts[0]}

    def forces(self, params, fr: Frames) -> np.ndarray:
        """Forces (F, N, 3) of every frame (eV/Å)."""
        parts = [np.asarray(self._forces(params, *self._take(fr, padded)))[:len(idx)]
                 for idx, padded in self._batches(len(fr.positions))]
        return np.concatenate(parts)

    def energies(self, params, fr: Frames) -> np.ndarray:
        return np.asarray(self.quantities(params, fr, False)["energy"])
