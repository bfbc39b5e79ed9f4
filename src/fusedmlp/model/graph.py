"""Periodic neighbour graphs in a per-atom layout with a fixed capacity.

Row i of the graph lists the neighbours j of atom i (the senders of the messages into i):

    d[i, s] = r_j + n_s · box − r_i,     j = neighbors[i, s],  n_s an integer lattice shift,

so cells narrower than twice the cutoff, where an atom sees several images of a neighbour or of
itself, are exact. Every row has K slots; a directed edge is a slot, and the triplets k → j → i
of DimeNet are pairs of slots of the same row j: the edges into j and the edge from j to i
(the reverse of a slot of row j). Triplets therefore need no index lists: they are dense
(N, K, K) blocks, and the edge and triplet capacities are N·K and N·K². An atom with more than K
neighbours within the cutoff sets ``overflow``; the caller reallocates and recomputes, nothing is
truncated silently.

The per-edge layers of the network need not run over empty slots. A graph built with an edge
capacity E < N·K also lists its edges compactly: ``edges`` (E,) are the flat slot indices i·K + s
of the occupied slots in row order (so receivers are sorted), then padding, and ``slot_edge``
(N, K) is each slot's position in that list (E for an empty slot). ``to_edges`` and
``to_slots`` move per-edge arrays between the two layouts. A crystal at 300 K fills about 24 of
the 32–36 slots its MD graph carries; more edges than E also set ``overflow``. With E = N·K
(the default) both layouts are the same and the moves are reshapes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import space


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["neighbors", "shifts", "mask", "reverse", "max_neighbors",
                                "reverse_ok", "edges", "slot_edge", "n_edges", "rows", "group_counts"],
                   meta_fields=["groups"])
@dataclasses.dataclass(frozen=True)
class Graph:
    neighbors: jnp.ndarray  # (N, K) sender of each slot
    shifts: jnp.ndarray  # (N, K, 3) lattice shift of the sender image
    mask: jnp.ndarray  # (N, K) slot holds a neighbour within the cutoff
    reverse: jnp.ndarray  # (N, K) slot of row neighbors[i, s] that holds i (with the opposite shift)
    max_neighbors: jnp.ndarray  # () largest neighbour count within the cutoff
    reverse_ok: jnp.ndarray  # () every edge has its reverse edge in the table
    edges: jnp.ndarray  # (E,) flat slot index of each listed edge, occupied slots first
    slot_edge: jnp.ndarray  # (N, K) position of each slot in ``edges``; E for an empty slot
    n_edges: jnp.ndarray  # () occupied slots
    rows: jnp.ndarray  # (N,) the rows in triplet-block order (by count, largest first, with groups)
    group_counts: jnp.ndarray  # (G,) neighbour count of each group's first row; (0,) without groups
    groups: tuple[int, ...] = ()  # triplet-block capacity of each row group (the first is K); () one block

    @property
    def capacity(self) -> int:
        return self.neighbors.shape[1]

    @property
    def edge_capacity(self) -> int:
        return self.edges.shape[-1]

    @property
    def compact(self) -> bool:
        """Edges are listed compactly (E < N·K), not slot by slot."""
        return self.edge_capacity < self.mask.shape[-2] * self.capacity

    @property
    def edge_mask(self):
        """(E,) the entry of ``edges`` is an occupied slot."""
        if self.compact:
            return jnp.arange(self.edge_capacity) < self.n_edges[..., None]
        return self.mask.reshape(*self.mask.shape[:-2], -1)

    @property
    def overflow(self):
        over = (self.max_neighbors > self.capacity) | ~self.reverse_ok | (self.n_edges > self.edge_capacity)
        if self.groups:
            over = over | jnp.any(self.group_counts > jnp.asarray(self.groups), axis=-1)
        return over


def group_starts(n_atoms: int, n_groups: int) -> list[int]:
    """First rank of each of ``n_groups`` row groups of ⌈N/G⌉ rows (the last may be shorter)."""
    size = -(-n_atoms // max(n_groups, 1))
    return list(range(0, n_atoms, size)) if n_atoms else [0]


def fullest_counts(counts, n_groups: int):
    """(G,) the neighbour count of each row group's first row, ``counts`` (N,) sorted largest first."""
    return -jnp.sort(-jnp.asarray(counts))[jnp.asarray(group_starts(counts.shape[0], n_groups))]


def triplet_blocks(graph: Graph):
    """[(rows, c)]: the triplet blocks, each the rows ``rows`` (an index array; None for all rows in
    order) and their first ``c`` slots."""
    if not graph.groups:
        return [(None, graph.capacity)]
    n = graph.mask.shape[-2]
    starts = group_starts(n, len(graph.groups))
    return [(graph.rows[a:b], c) for a, b, c in zip(starts, starts[1:] + [n], graph.groups)]


def triplet_sources(graph: Graph):
    """(E,) where each edge j → i_a finds its triplet sum among the stacked blocks of
    ``from_triplet_blocks``: flat index rank(j)·K + a, with j = ``neighbors[i, s]``, a =
    ``reverse[i, s]`` and rank(j) the row's place in ``rows`` (j itself without groups). The same
    for every interaction block: computed once per evaluation."""
    row = graph.neighbors
    if graph.groups:
        n = graph.rows.shape[0]
        row = jnp.zeros_like(graph.rows).at[graph.rows].set(jnp.arange(n, dtype=graph.rows.dtype))[row]
    return to_edges(graph, row * graph.capacity + graph.reverse)


def from_triplet_blocks(graph: Graph, blocks, sources):
    """Per-row results of the triplet blocks, ``blocks[g]`` (rows of group g, c_g, F) at (row j,
    slot a), moved to the edge list entry of the edge j → i_a: (E, F); ``sources`` is
    ``triplet_sources(graph)``."""
    k = graph.capacity
    stacked = jnp.concatenate([jnp.pad(b, ((0, 0), (0, k - b.shape[1]), (0, 0))) for b in blocks])
    return stacked.reshape(-1, stacked.shape[-1])[sources]


def triplet_slots(n_atoms: int, capacity: int, groups=()) -> int:
    """Triplet slots the blocks compute: N·K² in one block, Σ_g rows_g·c_g² in row groups."""
    if not groups:
        return n_atoms * capacity**2
    starts = group_starts(n_atoms, len(groups))
    return sum((b - a) * c * c for a, b, c in zip(starts, starts[1:] + [n_atoms], groups))


def to_edges(graph: Graph, a):
    """Per-slot ``a`` (N, K, ...) as per-edge (E, ...)."""
    flat = a.reshape(-1, *a.shape[2:])
    return flat[graph.edges] if graph.compact else flat


def to_slots(graph: Graph, e):
    """Per-edge ``e`` (E, ...) as per-slot (N, K, ...), zero in empty slots."""
    n, k = graph.mask.shape
    if not graph.compact:
        return e.reshape(n, k, *e.shape[1:]) * graph.mask.reshape(n, k, *([1] * (e.ndim - 1)))
    padded = jnp.concatenate([e, jnp.zeros((1, *e.shape[1:]), e.dtype)])
    return padded[graph.slot_edge]


def edge_receivers(graph: Graph):
    """(E,) receiving atom of each listed edge (sorted)."""
    return to_edges(graph, jnp.broadcast_to(jnp.arange(graph.mask.shape[0])[:, None], graph.mask.shape))


def sum_into_atoms(graph: Graph, e):
    """Σ over the occupied edges into each atom of per-edge ``e`` (E, F) → (N, F)."""
    n, k = graph.mask.shape
    if not graph.compact:
        return jnp.sum(e.reshape(n, k, -1) * graph.mask[..., None], axis=1)
    return jax.ops.segment_sum(e * graph.edge_mask[:, None], edge_receivers(graph), n, indices_are_sorted=True)


def edge_vectors(positions, box, graph: Graph):
    """d[i, s] = r_j + n·box − r_i, differentiable in positions and box."""
    return space.edge_displacements(positions, box, graph.neighbors, graph.shifts)


def build_graph(positions, box, candidates, candidate_shifts, candidate_mask, cutoff: float,
                capacity: int, edge_capacity: int = 0, groups: tuple[int, ...] = ()) -> Graph:
    """Keep the candidates within ``cutoff``, at most ``capacity`` per atom (jittable), list
    the edges compactly when ``edge_capacity`` (E) is below N·``capacity`` (0: slot by slot), and
    give the triplets row ``groups`` (capacities, the first equal to ``capacity``; see the module
    docstring) when they are given.

    ``candidates`` (N, M): neighbour indices per atom from a neighbour list with a skin (MD) or
    an exact host enumeration (training cells), with their lattice shifts (N, M, 3).
    """
    n, m = candidates.shape
    d = space.edge_displacements(positions, box, candidates, candidate_shifts)
    inside = candidate_mask & (jnp.sum(d**2, -1) < cutoff**2)
    count = jnp.sum(inside, axis=1)
    k = min(capacity, m)
    order = first_inside(inside, k)
    nbr = jnp.take_along_axis(candidates, order, axis=1)
    shf = jnp.take_along_axis(candidate_shifts, order[..., None], axis=1)
    mask = jnp.arange(k)[None, :] < count[:, None]
    if k < capacity:  # pad to the requested capacity
        pad = capacity - k
        nbr = jnp.pad(nbr, ((0, 0), (0, pad)))
        shf = jnp.pad(shf, ((0, 0), (0, pad), (0, 0)))
        mask = jnp.pad(mask, ((0, 0), (0, pad)))
    nbr = jnp.where(mask, nbr, 0)
    shf = jnp.where(mask[..., None], shf, 0)
    reverse, reverse_ok = _reverse_slots(nbr, shf, mask)
    edges, slot_edge = _edge_list(mask, edge_capacity)
    groups = tuple(int(c) for c in groups)
    if groups:
        if groups[0] != capacity or max(groups) > capacity or min(groups) < 1:
            raise ValueError(f"row groups {groups}: the first must be the capacity {capacity}, none above it")
        if len(group_starts(n, len(groups))) != len(groups):
            raise ValueError(f"{len(groups)} row groups of ⌈N/G⌉ rows for {n} atoms: some would be empty")
        rows = jnp.argsort(-count, stable=True).astype(jnp.int32)
        # ``fullest_counts`` without a second sort: the rows are in that order already
        group_counts = count[rows][jnp.asarray(group_starts(n, len(groups)))].astype(jnp.int32)
    else:
        rows, group_counts = jnp.arange(n, dtype=jnp.int32), jnp.zeros(0, jnp.int32)
    return Graph(neighbors=nbr, shifts=shf, mask=mask, reverse=reverse,
                 max_neighbors=jnp.max(count) if n else jnp.int32(0), reverse_ok=reverse_ok,
                 edges=edges, slot_edge=slot_edge, n_edges=jnp.sum(mask, dtype=jnp.int32),
                 rows=rows, group_counts=group_counts, groups=groups)


def _edge_list(mask, edge_capacity: int):
    """``edges`` and ``slot_edge`` of a graph (see the module docstring). Padding entries point
    at the last slot, so that receivers stay sorted; edges beyond E are dropped (and the graph
    reports overflow through ``n_edges``)."""
    n, k = mask.shape
    size = n * k
    e = size if edge_capacity <= 0 else min(int(edge_capacity), size)
    if e == size:
        index = jnp.arange(size, dtype=jnp.int32)
        return index, index.reshape(n, k)
    flat = mask.reshape(-1)
    pos = jnp.cumsum(flat, dtype=jnp.int32) - 1
    pos = jnp.where(flat & (pos < e), pos, e)  # position e collects empty slots and the dropped
    edges = jnp.full(e + 1, size - 1, jnp.int32).at[pos].set(jnp.arange(size, dtype=jnp.int32))
    return edges[:e], pos.reshape(n, k)


def first_inside(inside, k: int):
    """Per row, the indices of the first ``k`` true entries of ``inside`` in order (rows with
    fewer fill up with 0). A scatter at each entry's running count: a stable argsort does the
    same but costs ten times more, and it was most of an MD step on the N·S image candidates."""
    n, m = inside.shape
    slot = jnp.cumsum(inside, axis=1) - 1
    slot = jnp.where(inside & (slot < k), slot, k)  # slot k collects what is dropped
    index = jnp.broadcast_to(jnp.arange(m), (n, m))
    out = jnp.zeros((n, k + 1), index.dtype).at[jnp.arange(n)[:, None], slot].set(index)
    return out[:, :k]


def _reverse_slots(nbr, shf, mask):
    """For slot (i, s) with neighbour j, the slot t of row j with neighbour i and shift −n_s."""
    n = nbr.shape[0]
    row_nbr = nbr[nbr]  # (N, K, K): neighbours of the neighbour
    row_shf = shf[nbr]
    row_mask = mask[nbr]
    match = (row_mask & (row_nbr == jnp.arange(n)[:, None, None])
             & jnp.all(row_shf == -shf[:, :, None, :], axis=-1))
    found = jnp.any(match, axis=-1)
    return jnp.argmax(match, axis=-1), jnp.all(found | ~mask)


# --- candidate neighbours ---------------------------------------------------------------------------

def enumerate_pairs(positions, box, cutoff: float):
    """All directed pairs (sender, receiver, shift) closer than ``cutoff`` (host, numpy).

    Exact for any cell, including cells narrower than twice the cutoff. Sorted by receiver.
    """
    positions = np.asarray(positions, np.float64)
    box = np.asarray(box, np.float64)
    n = len(positions)
    shifts = space.image_shifts(box, cutoff)
    frac = positions @ np.linalg.inv(box)
    dfrac = frac[None, :, :] - frac[:, None, :]  # [i, j] = f_j − f_i
    wrap = np.round(dfrac)
    d = (dfrac - wrap)[None] @ box + (shifts @ box)[:, None, None, :]  # (M, i, j, 3)
    inside = np.sum(d**2, axis=-1) < cutoff**2
    zero = np.all(shifts == 0, axis=1)
    inside[zero] &= ~np.eye(n, dtype=bool)
    mm, i, j = np.nonzero(inside)
    total_shift = shifts[mm] - wrap[i, j]  # so that d = r_j + n·box − r_i
    order = np.lexsort((j, i))
    return j[order].astype(np.int32), i[order].astype(np.int32), total_shift[order]


def neighbor_table(positions, box, cutoff: float, capacity: int | None = None):
    """Exact candidate table (neighbors (N, M), shifts (N, M, 3), mask (N, M)) of one cell."""
    snd, rcv, shf = enumerate_pairs(positions, box, cutoff)
    n = len(positions)
    counts = np.bincount(rcv, minlength=n)
    m = int(counts.max()) if n else 0
    m = m if capacity is None else capacity
    if counts.max(initial=0) > m:
        raise ValueError(f"neighbour table capacity {m} < {counts.max()} neighbours")
    slot = np.arange(len(rcv)) - np.r_[0, np.cumsum(counts)][rcv]
    nbr = np.zeros((n, m), np.int32)
    shifts = np.zeros((n, m, 3), np.float64)
    mask = np.zeros((n, m), bool)
    nbr[rcv, slot], shifts[rcv, slot], mask[rcv, slot] = snd, shf, True
    return nbr, shifts, mask


def minimum_image_shifts(positions, box, neighbors):
    """Shifts of the nearest image (neighbour lists of boxes wider than twice the cutoff)."""
    frac = space.to_fractional(positions, box)
    return -jnp.round(frac[neighbors] - frac[:, None, :])
