"""Neighbour lists for MD feeding ``model.graph``: jax-md lists for MD-size boxes, exact host
tables with lattice shifts for narrow cells.

A list holds, per atom, the candidates within cutoff + skin; every force call keeps the
candidates within the cutoff, at most ``capacity`` per atom (``model.graph.build_graph``).

The shape is jax-md's ``partition.neighbor_list``: ``NeighborGraph`` is a frozen description
(cutoff, skin, headroom, variable box) with a host ``allocate(positions, box, capacity)`` and a
jittable ``update(positions, box, nbrs)``; the value they return is a pytree whose class is the
kind of list and whose graph capacity is a static field. Nothing is changed in place: a larger
capacity is a new value from a new ``allocate``.

* **jax-md** (``partition.neighbor_list``, per-atom format, fractional coordinates) whenever
  cutoff + skin is below half of the smallest plane spacing of the box: the minimum image is then
  the only image within reach, and the list rebuilds itself inside the jitted loop when an atom
  has moved more than skin/2.
* **images** otherwise, for small cells: a Verlet table of the candidates within cutoff + skin
  among every atom in every lattice translation that can reach that far (N·S per atom), searched
  again inside the jitted loop when an atom has moved more than skin/2; cells narrower than twice
  the cutoff, as DFT cells often are, stay exact.
* **host** tables (``model.graph.neighbor_table``) with explicit lattice shifts for larger narrow
  cells (N·S above ``max_images``); the table flags itself stale instead of rebuilding, and the MD driver reallocates it.

With a variable box (NPT) host tables and jax-md lists also go stale once the cell has deformed
so much since the build that a pair could have crossed the skin: 2·max|δ| + ‖h_ref⁻¹h − 1‖·(r_c +
skin) > skin, with δ the atomic displacements relative to the affine deformation; image tables
search again on the same criterion, and go stale once their translations no longer reach cutoff +
skin.

The graphs list their edges compactly (``model.graph``): besides the slots per atom, a value
carries an edge capacity E, N times the mean neighbour count at the allocation plus
``edge_extra`` (rounded to the quantum), which the model's per-edge layers run over instead of
the N·K slots.

Systems of at least 2 × ``group_rows`` atoms also give the triplet blocks row groups
(``model.graph``): up to ``row_groups`` groups of rows sorted by neighbour count, each with a
capacity of its fullest row's count at the allocation plus ``group_extra``, and (with the density
floor) at least the mean count in the cutoff sphere minus ``group_extra``; the first group, which
holds the fullest rows, has the graph capacity.

Failures are never truncations: an overflowing list, a stale table, an atom with more neighbours
than the graph capacity, a group's fullest row above the group's capacity, or more edges than the
edge capacity sets ``did_buffer_overflow`` in the value; the MD driver discards the chunk,
allocates again from the state before it with capacities above the largest counts seen
(``grown_capacity``, ``grown_groups``, ``grown_edge_capacity``), and recomputes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition
from jax_md import space as jmd_space

from ..model.graph import (Graph, build_graph, first_inside, fullest_counts, group_starts, minimum_image_shifts,
                           neighbor_table)
from ..space import edge_displacements, image_shifts, plane_spacings

# Graph capacities (neighbours per atom) are rounded up to a multiple of this: runs of different
# potentials on the same system then have the same shapes, so one compiled program (in JAX's
# persistent cache) serves them all, and small growths after an overflow need no new compile.
CAPACITY_QUANTUM = 4
# Candidate-table widths (image and host tables) are rounded up to a multiple of this: a wider
# table only costs a few more distances per search, while each width is a compilation, and the
# widths of one system's runs (its liquid at two temperatures, an equilibration and its
# production) then coincide.
WIDTH_QUANTUM = 16
# Row groups of the triplet blocks of a large cell (``NeighborGraph.row_groups``)
ROW_GROUPS = 8


def round_capacity(k: int, quantum: int = CAPACITY_QUANTUM) -> int:
    """``k`` rounded up to a multiple of ``quantum`` (≥ 1)."""
    q = max(1, int(quantum))
    return -(-int(k) // q) * q


# --- neighbour values ------------------------------------------------------------------------------
# Pytrees like jax-md's ``NeighborList``: the class is the kind and the graph capacity a static
# field, so a compiled program specialises on both, and a larger capacity is a new value (and a
# new program), never a field changed under a program compiled for the old one.

class _Overflow:
    @property
    def did_buffer_overflow(self):
        """Since the allocation, the list went stale (or overflowed), an atom had more
        neighbours within the cutoff than the graph has slots, or the atoms more edges than the
        edge list holds: allocate again, larger."""
        over = self.stale | (self.peak > self.capacity) | (self.edge_peak > self.edge_capacity)
        if self.groups:
            over = over | jnp.any(self.group_peak > jnp.asarray(self.groups))
        return over


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["translations", "idx", "shifts", "mask", "reference", "ref_box", "stale", "peak",
                                "table_peak", "edge_peak", "group_peak"],
                   meta_fields=["capacity", "edge_capacity", "groups"])
@dataclasses.dataclass(frozen=True)
class ImageNeighbors(_Overflow):
    """Verlet table over every atom in every lattice translation within reach (small cells): the
    candidates within cutoff + skin among the N·S images, searched again inside the jitted step
    when an atom has moved more than skin/2. A search of all N·S candidates at every step cost
    more than the energy of the reference EAM and a sixth of the model's."""

    kind: ClassVar[str] = "images"
    translations: jnp.ndarray  # (S, 3) integer translations covering cutoff + skin
    idx: jnp.ndarray  # (N, M) candidates within cutoff + skin at the last search
    shifts: jnp.ndarray  # (N, M, 3) their lattice shifts (for the unwrapped positions of the search)
    mask: jnp.ndarray  # (N, M)
    reference: jnp.ndarray  # (N, 3) positions at the last search
    ref_box: jnp.ndarray  # (3, 3) box at the last search
    stale: jnp.ndarray  # () the cell deformed beyond what the translations cover, or the table overflowed
    peak: jnp.ndarray  # () largest neighbour count within the cutoff since the allocation
    table_peak: jnp.ndarray  # () largest candidate count within cutoff + skin at a search
    edge_peak: jnp.ndarray  # () largest number of edges within the cutoff since the allocation
    capacity: int  # graph slots per atom
    edge_capacity: int  # graph edges (the compact edge list)
    # (G,) largest count of each row group's fullest row since the allocation (set by ``allocate``)
    group_peak: jnp.ndarray | None = None
    groups: tuple[int, ...] = ()  # triplet-block capacity per row group; () one block

    @property
    def width(self) -> int:
        return self.idx.shape[1]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["idx", "shifts", "mask", "reference", "ref_box", "stale", "peak", "edge_peak",
                                "group_peak"],
                   meta_fields=["capacity", "edge_capacity", "groups"])
@dataclasses.dataclass(frozen=True)
class HostNeighbors(_Overflow):
    """Verlet table with explicit lattice shifts (any cell, including narrow ones)."""

    kind: ClassVar[str] = "host"
    idx: jnp.ndarray  # (N, M)
    shifts: jnp.ndarray  # (N, M, 3)
    mask: jnp.ndarray  # (N, M)
    reference: jnp.ndarray  # (N, 3) positions at the build
    ref_box: jnp.ndarray  # (3, 3) box at the build
    stale: jnp.ndarray  # () a pair may have crossed the skin since the build
    peak: jnp.ndarray
    edge_peak: jnp.ndarray
    capacity: int
    edge_capacity: int
    group_peak: jnp.ndarray | None = None
    groups: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        return self.idx.shape[1]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["nl", "reference", "ref_box", "stale", "peak", "edge_peak", "group_peak"],
                   meta_fields=["capacity", "edge_capacity", "groups"])
@dataclasses.dataclass(frozen=True)
class JaxMDNeighbors(_Overflow):
    """A jax-md neighbour list plus the build state used by the variable-box check."""

    kind: ClassVar[str] = "jax-md"
    nl: partition.NeighborList  # carries its own update function (static)
    reference: jnp.ndarray
    ref_box: jnp.ndarray
    stale: jnp.ndarray
    peak: jnp.ndarray
    edge_peak: jnp.ndarray
    capacity: int
    edge_capacity: int
    group_peak: jnp.ndarray | None = None
    groups: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        return self.nl.idx.shape[1]

    @property
    def did_buffer_overflow(self):
        return (self.nl.did_buffer_overflow != 0) | super().did_buffer_overflow


Neighbors = ImageNeighbors | HostNeighbors | JaxMDNeighbors


def uses_jaxmd(box, cutoff: float, skin: float) -> bool:
    """The minimum image is exact for every pair within cutoff + skin."""
    return bool(cutoff + skin < 0.5 * plane_spacings(box).min())


def _affine_displacement(positions, reference, ref_box, box):
    """Largest displacement since the build relative to the affine map of the cell and to the
    mean translation, and the deformation ‖h_ref⁻¹h − 1‖ (rows are lattice vectors: box = ref_box @ M)."""
    deform = jnp.linalg.solve(ref_box, box)
    moved = reference @ deform
    df = (positions - moved) @ jnp.linalg.inv(box)
    dr = (df - jnp.round(df)) @ box
    # a common translation moves no pair: measure displacements relative to the mean (a
    # small cell under Langevin dynamics drifts by Å within picoseconds)
    dr = dr - jnp.mean(dr, axis=0)
    strain = jnp.sqrt(jnp.sum((deform - jnp.eye(3, dtype=box.dtype)) ** 2))
    return jnp.sqrt(jnp.max(jnp.sum(dr**2, -1))), strain


# --- the description and its allocate / update pair -----------------------------------------------

@dataclasses.dataclass(frozen=True)
class NeighborGraph:
    """How one system's neighbour structures are built: static and hashable, never changed.

    As jax-md's ``neighbor_list``: ``allocate`` (host) makes a value for positions and a box,
    ``update`` (jittable) advances it, ``graph`` makes the model's ``Graph`` of it. Overflow is
    reported in the returned value (``did_buffer_overflow``, ``peak``); the caller allocates
    again with ``capacity=grown_capacity(nbrs)``: a new value, nothing here changes.
    """

    cutoff: float
    skin: float = 1.0
    margin: float = 1.25  # headroom of the candidate list
    extra: int = 4  # headroom of the graph capacity over the largest neighbour count seen
    # headroom of the edge capacity over the mean count, per atom: a mean over the atoms moves
    # less than their largest count. hcp Ti within 5 Å: 20 at its lattice sites, 23.8, 24.9 and
    # 25.7 with the thermal displacements of 300, 623 and 1023 K (the largest count 30–33); with
    # 4, the demo's 36-atom cells overflowed at 323 K and compiled their MD again
    edge_extra: int = 6
    quantum: int = CAPACITY_QUANTUM  # capacities are multiples of this (see round_capacity)
    # Triplet row groups (see above). 256 atoms of hcp Ti at 300 K: the fullest rows of eight
    # groups hold about 29, 26, 25, 24, 24, 23, 23, 22 neighbours, so the groups compute 1.3–1.5
    # triplet slots per real triplet where one 32 × 32 block computes 1.9, and the paper model's
    # MD ran 1.20x (NVT) and 1.11x (NPT) faster on 2 CPU cores (benchmarks/model_throughput.py).
    # Group capacities are multiples of ``group_quantum``: fewer distinct shapes, fewer compilations.
    row_groups: int = ROW_GROUPS
    group_rows: int = 32  # rows per group at least: smaller cells keep the one block
    group_extra: int = 2
    group_quantum: int = 2
    width_quantum: int = WIDTH_QUANTUM  # image and host table widths are multiples of this
    density_floor: bool = True  # start at no less than the mean count in the cutoff sphere
    max_images: int = 4096  # narrow cells use all images while N·S stays below this, else host tables
    variable_box: bool = False  # NPT: also go stale on cell deformation

    # --- host calls -------------------------------------------------------------------------
    def kind(self, n_atoms: int, box) -> str:
        """The kind of list for ``n_atoms`` in ``box``: "jax-md", "images" or "host"."""
        box = np.asarray(box, float)
        if uses_jaxmd(box, self.cutoff, self.skin):
            return "jax-md"
        n_images = len(image_shifts(box, self.cutoff + self.skin))
        return "images" if n_atoms * n_images <= self.max_images else "host"

    def n_groups(self, n_atoms: int) -> int:
        """Row groups of the triplet blocks for ``n_atoms`` atoms (1: one block)."""
        return max(1, min(self.row_groups, n_atoms // max(self.group_rows, 1)))

    def allocate(self, positions, box, capacity: int = 0, width: int = 0, edge_capacity: int = 0,
                 groups: tuple[int, ...] = ()) -> Neighbors:
        """A new value for ``positions`` in ``box`` with headroom (host call: not jittable).

        Graph capacity, host-table width, edge capacity and row-group capacities are at least
        ``capacity``, ``width``, ``edge_capacity`` and ``groups``: a caller that reallocates
        passes the old ones, so the compiled step keeps its shapes.
        """
        box_np = np.asarray(box, float)
        kind = self.kind(len(positions), box_np)
        box_j = jnp.asarray(box_np, positions.dtype)
        no, zero = jnp.asarray(False), jnp.asarray(0, jnp.int32)
        if kind == "images":
            radius = self.cutoff + self.skin
            # a variable box keeps a skin's worth of translations in reserve: it may shrink
            reach = radius + (self.skin if self.variable_box else 0.0)
            translations = jnp.asarray(image_shifts(box_np, reach), positions.dtype)
            count = int(_image_count(positions, box_j, translations, radius))
            # A width from the density, not only from this configuration's count: runs of one
            # system then share it (the width is a shape of the compiled step), where the count
            # of a liquid would differ from run to run.
            mean = len(positions) / abs(np.linalg.det(box_np)) * 4.0 / 3.0 * math.pi * radius**3
            need = max(count, 1.2 * mean if self.density_floor else 0.0)
            m = max(round_capacity(math.ceil(need * self.margin), self.width_quantum), int(width))
            idx, shf, msk, count = _image_table(positions, box_j, translations, radius, m)
            nbrs = ImageNeighbors(translations, idx, shf, msk, positions, box_j, no, zero, count, zero, 0, 0)
        elif kind == "host":
            nbr, shf, msk = neighbor_table(np.asarray(positions, float), box_np, self.cutoff + self.skin)
            m = max(round_capacity(math.ceil(nbr.shape[1] * self.margin), self.width_quantum), int(width))
            pad = ((0, 0), (0, m - nbr.shape[1]))
            nbrs = HostNeighbors(jnp.asarray(np.pad(nbr, pad)),
                                 jnp.asarray(np.pad(shf, pad + ((0, 0),)), positions.dtype),
                                 jnp.asarray(np.pad(msk, pad)), positions, box_j, no, zero, zero, 0, 0)
        else:
            # jax-md boxes are column matrices; the list is built for this box and rebuilt
            # with the box passed at each update
            disp, _ = jmd_space.periodic_general(box_j.T, fractional_coordinates=True)
            fn = partition.neighbor_list(
                disp, box_j.T, self.cutoff, dr_threshold=self.skin, capacity_multiplier=self.margin,
                fractional_coordinates=True, format=partition.NeighborListFormat.Dense,
                # jaxlib 0.10.2 on CPU miscompiles the cell-list distance kernel and pairs go
                # missing silently (jax-ml/jax#39103); the O(N²) build is exact
                disable_cell_list=True)
            nl = fn.allocate(_fractional(positions, box_j), box=box_j.T)
            if nl.cell_size is not None:  # an array in pytree metadata breaks jit cache lookups
                nl = dataclasses.replace(nl, cell_size=float(nl.cell_size))
            nbrs = JaxMDNeighbors(nl, positions, box_j, no, zero, zero, 0, 0)
        counts = np.asarray(self._counts(positions, box_j, nbrs))
        count, edges = int(counts.max(initial=0)), int(counts.sum())
        # Triplet work grows as capacity², so the headroom is additive, not a factor. A crystal
        # built at its lattice sites has its shells inside the cutoff and the next one just
        # outside; thermal motion brings the latter in within the first steps. Starting at the
        # mean number of atoms in the cutoff sphere spares that first reallocation (and a
        # second compilation of every program that takes the graph).
        in_sphere = len(positions) / abs(np.linalg.det(box_np)) * 4.0 / 3.0 * math.pi * self.cutoff**3
        floor = math.ceil(in_sphere) if self.density_floor else 0
        k = max(int(capacity), round_capacity(max(count + self.extra, floor), self.quantum))
        # No density floor for the edge capacity: a crystal's mean count grows by less than
        # ``edge_extra`` as it warms from its lattice sites (see there). A larger count later is
        # an overflow like any other.
        n = len(positions)
        e = min(n * k, max(int(edge_capacity), self.edge_list_size(n, edges)))
        starts = group_starts(n, self.n_groups(n))
        firsts = np.asarray(fullest_counts(counts, len(starts))) if n else np.zeros(1, int)
        caps = ()
        if len(starts) > 1:
            # A crystal at its lattice sites has every row at one count, and its groups fill up
            # as it warms (hcp Ti within 5 Å: 20 at the sites; group first rows 29 ... 22 at
            # 300 K); the density floor keeps that first warming from reallocating, and the MD
            # driver tightens the groups to the counts of its first chunk (``tight_groups``).
            # (a fresh allocation only: given groups are a run's own, grown or tightened)
            given = len(groups) == len(starts)
            group_floor = floor - self.group_extra if self.density_floor and not given else 0
            old = tuple(groups) if given else (0,) * len(starts)
            caps = (k, *(min(k, max(self.group_size(c), group_floor, int(o))) for c, o in zip(firsts[1:], old[1:])))
        return dataclasses.replace(nbrs, peak=jnp.asarray(count, jnp.int32), capacity=k,
                                   edge_peak=jnp.asarray(edges, jnp.int32), edge_capacity=e,
                                   group_peak=jnp.asarray(firsts if caps else firsts[:0], jnp.int32), groups=caps)

    def edge_list_size(self, n_atoms: int, n_edges: int) -> int:
        """Edge capacity for ``n_edges`` edges among ``n_atoms`` atoms: ``n_atoms`` times the mean
        count plus ``edge_extra``, rounded up to the quantum."""
        return n_atoms * round_capacity(math.ceil(n_edges / max(n_atoms, 1)) + self.edge_extra, self.quantum)

    def grown_width(self, nbrs: Neighbors) -> int:
        """The table width to allocate with after ``nbrs`` overflowed: an image table whose
        search found more candidates than it holds grows above that count (with the margin);
        other widths are set by their allocation (at least the old one)."""
        if isinstance(nbrs, ImageNeighbors) and int(nbrs.table_peak) > nbrs.width:
            return round_capacity(math.ceil(int(nbrs.table_peak) * self.margin), self.width_quantum)
        return nbrs.width

    def grown_edge_capacity(self, nbrs: Neighbors) -> int:
        """The edge capacity to allocate with after ``nbrs`` overflowed: above the largest number
        of edges it saw, never below its edge capacity."""
        if int(nbrs.edge_peak) <= nbrs.edge_capacity:
            return nbrs.edge_capacity
        return max(nbrs.edge_capacity, self.edge_list_size(nbrs.reference.shape[0], int(nbrs.edge_peak)))

    def group_size(self, count) -> int:
        """Capacity of a row group whose fullest row has ``count`` neighbours: ``group_extra``
        above it, rounded up to the group quantum."""
        return round_capacity(int(count) + self.group_extra, self.group_quantum)

    def grown_groups(self, nbrs: Neighbors) -> tuple[int, ...]:
        """The row-group capacities to allocate with after ``nbrs`` overflowed: above the largest
        count each group's fullest row reached, never below the old ones (the first group's
        follows the graph capacity in ``allocate``)."""
        peaks = np.asarray(nbrs.group_peak)
        return tuple(max(c, self.group_size(p)) if p > c else c for c, p in zip(nbrs.groups, peaks))

    def tight_groups(self, nbrs: Neighbors) -> tuple[int, ...]:
        """Row-group capacities that follow the counts ``nbrs`` saw: each group's fullest row's
        largest count plus ``group_extra`` (rounded to the group quantum), where that is below
        the group's capacity; () if no group would shrink. (A warmed crystal's groups sit below
        the density floor of a fresh allocation: hcp Ti at 300 K, 24–28 against 28.)"""
        if not nbrs.groups:
            return ()
        peaks = np.asarray(nbrs.group_peak)
        tight = (nbrs.groups[0], *(min(c, self.group_size(p)) for c, p in zip(nbrs.groups[1:], peaks[1:])))
        return tight if tight != nbrs.groups else ()

    def grown_capacity(self, nbrs: Neighbors) -> int:
        """The capacity to allocate with after ``nbrs`` overflowed: above the largest neighbour
        count it saw (``int(nbrs.peak)``), never below its capacity."""
        peak = int(nbrs.peak)
        if peak <= nbrs.capacity:  # the list overflowed, not the graph
            return nbrs.capacity
        return max(nbrs.capacity, round_capacity(peak + self.extra, self.quantum))

    # --- jittable -----------------------------------------------------------------------------
    def update(self, positions, box, nbrs: Neighbors) -> Neighbors:
        """``nbrs`` advanced to ``positions`` in ``box``; overflow is recorded in the value."""
        if isinstance(nbrs, ImageNeighbors):
            stale = nbrs.stale
            if self.variable_box:
                # translations up to n_k reach every image while (cutoff + skin)/d_k + 1/2 <= n_k
                recip = jnp.linalg.inv(box).T
                need = (self.cutoff + self.skin) * jnp.linalg.norm(recip, axis=1) + 0.5
                stale = stale | jnp.any(jnp.floor(need) > jnp.max(nbrs.translations, axis=0))

            def search(nb):
                idx, shf, msk, count = _image_table(positions, box, nb.translations, self.cutoff + self.skin,
                                                    nb.width)
                return dataclasses.replace(nb, idx=idx, shifts=shf, mask=msk, reference=positions, ref_box=box,
                                           table_peak=jnp.maximum(nb.table_peak, count))

            nbrs = jax.lax.cond(self._moved_too_far(positions, box, nbrs), search, lambda nb: nb, nbrs)
            nbrs = dataclasses.replace(nbrs, stale=stale | (nbrs.table_peak > nbrs.width))
        elif isinstance(nbrs, HostNeighbors):
            # fixed box: the strain term vanishes and this is the usual skin/2 criterion
            nbrs = dataclasses.replace(nbrs, stale=nbrs.stale | self._moved_too_far(positions, box, nbrs))
        else:
            nl = nbrs.nl.update(_fractional(positions, box), box=box.T)
            stale = nbrs.stale
            if self.variable_box:
                # the list rebuilds itself for moved atoms, not for a deformed cell
                stale = stale | self._moved_too_far(positions, box, nbrs)
            nbrs = dataclasses.replace(nbrs, nl=nl, stale=stale)
        counts = self._counts(positions, box, nbrs).astype(nbrs.peak.dtype)
        group_peak = nbrs.group_peak
        if nbrs.groups:
            group_peak = jnp.maximum(group_peak, fullest_counts(counts, len(nbrs.groups)))
        return dataclasses.replace(nbrs, peak=jnp.maximum(nbrs.peak, jnp.max(counts)),
                                   edge_peak=jnp.maximum(nbrs.edge_peak, jnp.sum(counts, dtype=nbrs.edge_peak.dtype)),
                                   group_peak=group_peak)

    def _moved_too_far(self, positions, box, nbrs):
        moved, strain = _affine_displacement(positions, nbrs.reference, nbrs.ref_box, box)
        return 2.0 * moved + strain * (self.cutoff + self.skin) > self.skin

    def _counts(self, positions, box, nbrs):
        """(N,) number of candidates of each atom within the cutoff."""
        cand, shifts, mask = _candidates(positions, box, nbrs)
        d = edge_displacements(positions, box, cand, shifts)
        return jnp.sum(mask & (jnp.sum(d**2, -1) < self.cutoff**2), axis=1)

    def graph(self, positions, box, nbrs: Neighbors) -> Graph:
        return build_graph(positions, box, *_candidates(positions, box, nbrs), self.cutoff, nbrs.capacity,
                           nbrs.edge_capacity, nbrs.groups)


def _fractional(positions, box):
    f = positions @ jnp.linalg.inv(box)
    return f - jnp.floor(f)


def _candidates(positions, box, nbrs: Neighbors):
    """(candidates (N, M), their lattice shifts (N, M, 3), mask (N, M)) of a neighbour value."""
    if isinstance(nbrs, (ImageNeighbors, HostNeighbors)):
        # shifts corrected for atoms that crossed the cell since the build:
        # r_true = r + w·box with w = round((r_ref·M − r)·box⁻¹)
        deform = jnp.linalg.solve(nbrs.ref_box, box)
        w = jnp.round((nbrs.reference @ deform - positions) @ jnp.linalg.inv(box))
        return nbrs.idx, nbrs.shifts + w[nbrs.idx] - w[:, None, :], nbrs.mask
    idx = nbrs.nl.idx
    mask = idx < positions.shape[0]
    cand = jnp.where(mask, idx, 0)
    return cand, minimum_image_shifts(positions, box, cand), mask


def _all_images(positions, box, translations):
    """(candidates (N, N·S), lattice shifts (N, N·S, 3), mask): every atom in every translation,
    the atom itself at zero translation excluded."""
    n, m = positions.shape[0], translations.shape[0]
    f = positions @ jnp.linalg.inv(box)
    wrap = jnp.round(f[None, :, :] - f[:, None, :])  # [i, j]: image of j nearest to i
    shifts = (translations[None, None, :, :] - wrap[:, :, None, :]).reshape(n, n * m, 3)
    cand = jnp.repeat(jnp.arange(n), m)[None, :].repeat(n, axis=0)
    zero = jnp.all(translations == 0, axis=1)
    self_image = (cand == jnp.arange(n)[:, None]) & jnp.tile(zero, n)[None, :]
    return cand, shifts, ~self_image


def _images_within(positions, box, translations, radius):
    cand, shifts, mask = _all_images(positions, box, translations)
    d = edge_displacements(positions, box, cand, shifts)
    return cand, shifts, mask & (jnp.sum(d**2, -1) < radius**2)


@functools.partial(jax.jit, static_argnums=(3,))
def _image_count(positions, box, translations, radius: float):
    """Largest number of images within ``radius`` of one atom (host allocation)."""
    return jnp.max(jnp.sum(_images_within(positions, box, translations, radius)[2], axis=1))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _image_table(positions, box, translations, radius: float, width: int):
    """(idx (N, width), shifts (N, width, 3), mask, largest count) of the images within ``radius``:
    the first ``width`` per atom (a larger count is overflow, reported by the count)."""
    cand, shifts, inside = _images_within(positions, box, translations, radius)
    count = jnp.sum(inside, axis=1)
    order = first_inside(inside, width)
    mask = jnp.arange(width)[None, :] < count[:, None]
    idx = jnp.where(mask, jnp.take_along_axis(cand, order, axis=1), 0)
    shf = jnp.where(mask[..., None], jnp.take_along_axis(shifts, order[..., None], axis=1), 0)
    return idx, shf.astype(positions.dtype), mask, jnp.max(count).astype(jnp.int32)


def frame_graphs(positions, boxes, cutoff: float, capacity: int | None = None, extra: int = 2,
                 min_capacity: int = 0):
    """Exact graphs of recorded frames (host tables; for observables and reweighting).

    ``positions`` (F, N, 3), ``boxes`` (F, 3, 3) or (3, 3). Returns a stacked ``Graph`` with one
    capacity for all frames: ``capacity`` if given, else the largest neighbour count + ``extra`` but
    at least ``min_capacity`` (callers pass their last capacity, so compiled consumers see one shape).
    """
    positions = np.asarray(positions, float)
    boxes = np.broadcast_to(np.asarray(boxes, float), (len(positions), 3, 3))
    tables = [neighbor_table(r, b, cutoff) for r, b in zip(positions, boxes)]
    need = max(t[0].shape[1] for t in tables)
    k = max(round_capacity(need + extra), min_capacity) if capacity is None else capacity
    if need > k:
        raise ValueError(f"frame graphs need {need} neighbours per atom, capacity is {k}")
    pad = [((0, 0), (0, k - t[0].shape[1])) for t in tables]
    nbr = np.stack([np.pad(t[0], p) for t, p in zip(tables, pad)])
    shf = np.stack([np.pad(t[1], p + ((0, 0),)) for t, p in zip(tables, pad)])
    msk = np.stack([np.pad(t[2], p) for t, p in zip(tables, pad)])
    return _frame_graph_builder(float(cutoff), int(k))(
        jnp.asarray(positions), jnp.asarray(boxes), jnp.asarray(nbr), jnp.asarray(shf), jnp.asarray(msk))


@functools.lru_cache(maxsize=None)
def _frame_graph_builder(cutoff: float, capacity: int):
    """One jitted builder per cutoff and capacity: a new ``jax.jit`` per call would trace and
    compile again at every call (a 0 K relaxation calls this hundreds of times)."""
    return jax.jit(jax.vmap(lambda r, b, n, s, m: build_graph(r, b, n, s, m, cutoff, capacity)))
