"""A short-range pair repulsion added to the network's energy.

A message-passing network knows nothing of distances shorter than those in its training data:
there it extrapolates, often to no repulsion at all, and a hot melt then lets two atoms pass
through each other (seen in the demo: a fused model at 2000 K with pairs at 0.5 Å and an
unchanged energy, until the temperature ran away). The prior

    φ(r) = ε (r_in / r − 1)³   for r < r_in,   0 beyond

is zero, with its first two derivatives, at and beyond ``r_in``. ``r_in`` is taken from the
training data (their shortest interatomic distance), so the prior changes nothing where there
are labels and the network is fitted as before; below it φ grows like r⁻³ (ε at r_in / 2).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..space import edge_displacements
from .graph import Graph, edge_vectors


@dataclasses.dataclass(frozen=True)
class RepulsionSettings:
    energy: float = 10.0  # ε, eV: φ(r_in / 2)
    r_inner: float = 0.0  # Å; set from the training data (shortest distance), 0 until then


def pair_repulsion(s: RepulsionSettings, r):
    """φ(r) (eV) of pair distances ``r`` (Å)."""
    inside = r < s.r_inner
    x = s.r_inner / jnp.where(inside, r, s.r_inner)  # no division by zero or NaN in gradients
    return jnp.where(inside, s.energy * (x - 1.0) ** 3, 0.0)


def repulsion_energy(s: RepulsionSettings, positions, box, graph: Graph, atom_mask=None):
    """Σ over pairs of φ (eV): each pair appears as two directed edges of the graph."""
    d = edge_vectors(positions, box, graph)
    # empty slots sit at r_in, where φ is exactly zero (and its gradient too)
    phi = pair_repulsion(s, jnp.sqrt(jnp.where(graph.mask, jnp.sum(d**2, axis=-1), s.r_inner**2)))
    if atom_mask is not None:
        phi = phi * atom_mask[:, None]
    return 0.5 * jnp.sum(phi)


def shortest_distance(positions, box, neighbors, shifts, mask) -> float:
    """Shortest edge length (Å) of padded configurations: positions (B, N, 3), box (B, 3, 3),
    neighbour tables (B, N, K) with lattice shifts (B, N, K, 3) and validity mask."""
    best = np.inf
    for r, h, nb, sh, m in zip(positions, box, neighbors, shifts, mask):
        if not m.any():
            continue
        d = edge_displacements(r, h, nb, sh.astype(float))
        best = min(best, float(np.sqrt(np.min(np.sum(d**2, -1)[m]))))
    return best
