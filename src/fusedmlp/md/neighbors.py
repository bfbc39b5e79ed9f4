"""Neighbour graphs for MD: Verlet tables with a skin feeding ``model.graph``.

A table holds, per atom, the candidates within cutoff + skin with explicit lattice shifts
(``HostNeighbors``, built on the host, exact for any cell shape and size); shifts are corrected
for atoms the integrator wraps back into the box. Every force call keeps the candidates within
the cutoff, at most ``capacity`` per atom. The table flags itself stale once an atom has moved
more than skin/2, and ``exceeded`` flags an atom with more neighbours than the capacity; the
MD driver then discards the chunk of steps, calls ``grow`` and ``allocate``, and recomputes it.

Current state: every box uses the host table. A jax-md neighbour list (dense format, cell list in
fractional coordinates) is wired in the ``not host`` branches, but jax-md ``NeighborList`` objects
cannot yet be carried through ``lax.scan`` with JAX 0.10 (the carry's equality check fails on
their static fields), so that branch is switched off in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition
from jax_md import space as jmd_space

from ..model.graph import Graph, build_graph, minimum_image_shifts, neighbor_table


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["idx", "shifts", "mask", "reference", "stale"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class HostNeighbors:
    """Verlet table with explicit lattice shifts (any cell, including narrow ones)."""

    idx: jnp.ndarray  # (N, M)
    shifts: jnp.ndarray  # (N, M, 3)
    mask: jnp.ndarray  # (N, M)
    reference: jnp.ndarray  # (N, 3) positions at the build
    stale: jnp.ndarray  # () an atom moved more than skin/2 since the build

    @property
    def did_buffer_overflow(self):
        return self.stale


@dataclasses.dataclass
class NeighborGraph:
    """Candidate table + per-atom graph capacity for one box."""

    box: np.ndarray  # rows are lattice vectors
    cutoff: float
    skin: float = 1.0
    capacity: int = 0  # neighbours per atom kept within the cutoff (0: size from the first call)
    margin: float = 1.25  # headroom of the candidate list
    extra: int = 4  # headroom of the graph capacity over the largest neighbour count seen

    def __post_init__(self):
        self.box = np.asarray(self.box, float)
        # jax-md list objects cannot yet be carried through lax.scan with this JAX (their static
        # fields fail the carry's equality check), so every box uses the host Verlet table.
        self.host = True
        self._inv = jnp.asarray(np.linalg.inv(self.box))
        if not self.host:
            disp, _ = jmd_space.periodic_general(jnp.asarray(self.box.T), fractional_coordinates=True)
            self._fn = partition.neighbor_list(
                disp, jnp.asarray(self.box.T), self.cutoff, dr_threshold=self.skin,
                capacity_multiplier=self.margin, fractional_coordinates=True,
                format=partition.NeighborListFormat.Dense)

    def fractional(self, positions):
        f = positions @ self._inv.astype(positions.dtype)
        return f - jnp.floor(f)

    def allocate(self, positions):
        """A new list sized for ``positions`` with headroom (host call: not jittable)."""
        if self.host:
            pos = np.asarray(positions, float)
            nbr, shf, msk = neighbor_table(pos, self.box, self.cutoff + self.skin)
            m = int(math.ceil(nbr.shape[1] * self.margin))
            pad = ((0, 0), (0, m - nbr.shape[1]))
            nbrs = HostNeighbors(jnp.asarray(np.pad(nbr, pad)),
                                 jnp.asarray(np.pad(shf, pad + ((0, 0),)), positions.dtype),
                                 jnp.asarray(np.pad(msk, pad)), positions, jnp.asarray(False))
        else:
            nbrs = self._fn.allocate(self.fractional(positions))
        g = self._graph(positions, nbrs, nbrs.idx.shape[1])
        # triplet work grows as capacity², so the headroom is additive, not a factor
        self.capacity = max(self.capacity, int(g.max_neighbors) + self.extra)
        return nbrs

    def _host_candidates(self, positions, nbrs):
        """Table entries with shifts corrected for atoms the integrator wrapped into the box
        since the build: r_true = r + w·box with w = round((r_ref − r)·box⁻¹)."""
        w = jnp.round((nbrs.reference - positions) @ self._inv.astype(positions.dtype))
        shifts = nbrs.shifts + w[nbrs.idx] - w[:, None, :]
        return nbrs.idx, shifts, nbrs.mask

    def _candidates(self, positions, nbrs):
        if self.host:
            return self._host_candidates(positions, nbrs)
        mask = nbrs.idx < positions.shape[0]
        cand = jnp.where(mask, nbrs.idx, 0)
        return cand, minimum_image_shifts(positions, jnp.asarray(self.box, positions.dtype), cand), mask

    def _max_count(self, positions, nbrs):
        """Largest number of candidates of one atom within the cutoff."""
        cand, shifts, mask = self._candidates(positions, nbrs)
        d = positions[cand] + shifts @ jnp.asarray(self.box, positions.dtype) - positions[:, None, :]
        return jnp.max(jnp.sum(mask & (jnp.sum(d**2, -1) < self.cutoff**2), axis=1))

    def grow(self, positions, nbrs) -> None:
        """After an overflow: raise the graph capacity to what ``positions`` need (host call)."""
        self.capacity = max(self.capacity, int(self._max_count(positions, nbrs)) + self.extra)

    # jax-md lists carry static fields that may hold arrays (cell sizes), which a scan carry
    # cannot compare; loops therefore carry only the array fields and rebuild the list.
    def split(self, nbrs) -> tuple:
        if self.host:
            return (nbrs.idx, nbrs.shifts, nbrs.mask, nbrs.reference, nbrs.stale)
        self._template = nbrs
        return (nbrs.idx, nbrs.reference_position, nbrs.error)

    def join(self, arrays):
        if self.host:
            return HostNeighbors(*arrays)
        idx, ref, err = arrays
        return self._template.set(idx=idx, reference_position=ref, error=err)

    def update(self, positions, nbrs):
        if self.host:
            # minimum-image displacement: the integrator wraps atoms back into the box
            box = jnp.asarray(self.box, positions.dtype)
            df = (positions - nbrs.reference) @ self._inv.astype(positions.dtype)
            dr = (df - jnp.round(df)) @ box
            moved = jnp.max(jnp.sum(dr**2, -1))
            return dataclasses.replace(nbrs, stale=nbrs.stale | (moved > (0.5 * self.skin) ** 2))
        return self._fn.update(self.fractional(positions), nbrs)

    def _graph(self, positions, nbrs, capacity) -> Graph:
        cand, shifts, mask = self._candidates(positions, nbrs)
        return build_graph(positions, jnp.asarray(self.box, positions.dtype), cand, shifts, mask,
                           self.cutoff, capacity)

    def graph(self, positions, nbrs) -> Graph:
        return self._graph(positions, nbrs, self.capacity)

    def exceeded(self, positions, nbrs):
        """Cheap per-step check: list overflowed or stale, or an atom has more neighbours within
        the cutoff than the graph capacity."""
        return ((jnp.asarray(nbrs.did_buffer_overflow) != 0)
                | (self._max_count(positions, nbrs) > self.capacity))
