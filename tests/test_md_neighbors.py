"""MD neighbour structures: the graphs of jax-md lists are exact, deformed cells make lists stale,
overflow is reported in the returned value, and a run reallocates and recomputes without changing
the trajectory."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from fusedmlp.md.ensembles import Thermostat
from fusedmlp.md.neighbors import NeighborGraph, uses_jaxmd
from fusedmlp.md.simulate import MDSettings, run
from fusedmlp.model.graph import enumerate_pairs
from fusedmlp.reference.eam import graph_energy_fn, zhou2004
from fusedmlp.structures import crystal

TI = 47.867
CUTOFF = 5.0  # the DimeNet++ cutoff
# NeighborGraph settings that give a kind of list in the cells used here (the jax-md kind in any
# box wide enough; host tables in a narrow cell once the image budget is exceeded)
KIND = {"jax-md": {}, "host": {"max_images": 0}, "images": {}}


def hcp(supercell, rattle=0.05, seed=1):
    """Hexagonal hcp Ti cell (a along x, c along z): a triclinic box for jax-md."""
    at = crystal("Ti", "hcp", 2.95, 1.6, supercell)
    at.rattle(rattle, seed=seed)
    return at


def unwrapped(at, seed=0):
    """Positions of ``at`` with some atoms just outside the box and some whole lattice vectors
    away, as MD leaves them (positions are never wrapped)."""
    rng = np.random.default_rng(seed)
    box = np.asarray(at.cell)
    frac = at.get_scaled_positions()
    frac[:6] = [[-0.01, 0.3, 0.5], [1.005, 0.7, 0.2], [0.4, -0.004, 0.9], [0.6, 1.01, 0.1],
                [0.2, 0.8, -0.02], [0.9, 0.1, 1.003]]
    jump = rng.integers(-2, 3, size=(len(frac), 3)) * (rng.random(len(frac)) < 0.2)[:, None]
    return (frac + jump) @ box


def pairs_from_graph(graph, positions, box):
    """{(receiver, sender, n1, n2, n3): distance} of the graph's slots within the cutoff."""
    nbr, shf, msk = (np.asarray(x) for x in (graph.neighbors, graph.shifts, graph.mask))
    i, s = np.nonzero(msk)
    j, n = nbr[i, s], shf[i, s]
    d = np.linalg.norm(positions[j] + n @ box - positions[i], axis=-1)
    out = {(int(a), int(b), *np.round(c).astype(int)): float(x) for a, b, c, x in zip(i, j, n, d)}
    assert len(out) == len(i), "a directed pair appears twice in the graph"
    return out


def exact_pairs(positions, box, cutoff):
    snd, rcv, shf = enumerate_pairs(positions, box, cutoff)
    d = np.linalg.norm(positions[snd] + shf @ box - positions[rcv], axis=-1)
    return {(int(a), int(b), *np.round(c).astype(int)): float(x) for a, b, c, x in zip(rcv, snd, shf, d)}


def assert_exact(ng, nbrs, positions, box):
    g = ng.graph(jnp.asarray(positions), jnp.asarray(box), nbrs)
    got, want = pairs_from_graph(g, positions, box), exact_pairs(positions, box, ng.cutoff)
    assert set(got) == set(want), (f"{len(set(want) - set(got))} of {len(want)} pairs missing, "
                                   f"{len(set(got) - set(want))} spurious")
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=0, atol=1e-10)
    assert int(g.max_neighbors) <= g.capacity and bool(g.reverse_ok)
    return len(want)


# --- exact graphs from jax-md lists -------------------------------------------------------------

def orthorhombic_hcp(reps):
    at = bulk("Ti", "hcp", a=2.95, c=4.72, orthorhombic=True).repeat(reps)
    at.rattle(0.05, seed=2)
    return at


@pytest.mark.parametrize("cell, cutoff, skin", [
    ("hexagonal", CUTOFF, 1.0),  # the MD setting
    ("hexagonal", 3.0, 0.15),  # many cells per side (jax-md would use a cell list)
    pytest.param("orthorhombic", CUTOFF, 1.0, marks=pytest.mark.slow),
    ("orthorhombic", 3.0, 0.15),
])
def test_jaxmd_graph_equals_exact_enumeration(cell, cutoff, skin):
    """Within the cutoff, the graph of a jax-md list holds exactly the directed pairs (with
    lattice shifts) and distances of the exact host enumeration, for unwrapped positions,
    after small moves (no rebuild) and after moves that make the list rebuild itself."""
    at = hcp((5, 5, 3), rattle=0.1) if cell == "hexagonal" else orthorhombic_hcp((5, 3, 3))
    box = np.asarray(at.cell)
    pos = unwrapped(at)
    ng = NeighborGraph(cutoff, skin=skin)
    nbrs = ng.allocate(jnp.asarray(pos), jnp.asarray(box), capacity=64,  # capacities are not tested here
                       edge_capacity=64 * len(pos), groups=(64,) * ng.n_groups(len(pos)))
    assert nbrs.kind == "jax-md"
    # jax-md's cell list is off: jaxlib 0.10.2 on CPU drops pairs from it (jax-ml/jax#39103)
    assert nbrs.nl.cell_list_fn is None
    assert assert_exact(ng, nbrs, pos, box) > 0
    # NPT: a cell compressed by 2 % with affine positions, too little for a pair to cross the skin
    # (not stale); the list is not rebuilt, its graph measures distances in the new cell
    squeezed = dataclasses.replace(ng, variable_box=True).update(jnp.asarray(pos / 1.02),
                                                                 jnp.asarray(box / 1.02), nbrs)
    assert not bool(squeezed.did_buffer_overflow)
    assert_exact(ng, squeezed, pos / 1.02, box / 1.02)
    rng = np.random.default_rng(3)
    for step, rebuild in ((0.3 * skin, False), (1.5 * skin, True)):  # largest move vs skin/2
        move = rng.normal(size=pos.shape)
        move *= step / np.linalg.norm(move, axis=1).max()
        pos = pos + move
        before = np.asarray(nbrs.nl.reference_position)
        nbrs = ng.update(jnp.asarray(pos), jnp.asarray(box), nbrs)
        assert (not np.array_equal(before, np.asarray(nbrs.nl.reference_position))) == rebuild
        assert not bool(nbrs.did_buffer_overflow)
        assert_exact(ng, nbrs, pos, box)


def test_image_table_graph_equals_exact_enumeration():
    """A small cell's image table (cutoff + skin beyond half the box: several images of one atom
    are neighbours) gives exactly the pairs of the host enumeration for unwrapped positions,
    after moves below skin/2 (no new search) and above (the table searches again inside
    ``update``), and in a compressed cell (NPT: the deformation also makes it search)."""
    at = hcp((2, 2, 2), rattle=0.1)
    box = np.asarray(at.cell)
    pos = unwrapped(at)
    ng = NeighborGraph(CUTOFF, skin=1.0, variable_box=True)
    # headroom for the large moves below, in slots per atom and in edges
    nbrs = ng.allocate(jnp.asarray(pos), jnp.asarray(box), capacity=80, edge_capacity=80 * len(pos))
    assert nbrs.kind == "images" and int(nbrs.table_peak) <= nbrs.width < len(pos) * len(nbrs.translations)
    assert assert_exact(ng, nbrs, pos, box) > 0
    update = jax.jit(ng.update)
    rng = np.random.default_rng(3)
    for step, search in ((0.3, False), (1.5, True), (0.3, False)):  # largest move against skin/2
        move = rng.normal(size=pos.shape)
        move *= step / np.linalg.norm(move, axis=1).max()
        pos = pos + move
        before = np.asarray(nbrs.reference)
        nbrs = update(jnp.asarray(pos), jnp.asarray(box), nbrs)
        assert (not np.array_equal(before, np.asarray(nbrs.reference))) == search
        assert not bool(nbrs.did_buffer_overflow)
        assert_exact(ng, nbrs, pos, box)
    squeezed = update(jnp.asarray(pos / 1.05), jnp.asarray(box / 1.05), nbrs)
    assert not np.array_equal(np.asarray(squeezed.ref_box), np.asarray(nbrs.ref_box))
    assert not bool(squeezed.did_buffer_overflow)
    assert_exact(ng, squeezed, pos / 1.05, box / 1.05)


def test_kind_selection():
    small, large = hcp((2, 2, 2)), hcp((5, 5, 3))
    assert not uses_jaxmd(np.asarray(small.cell), CUTOFF, 1.0)
    assert uses_jaxmd(np.asarray(large.cell), CUTOFF, 1.0)
    assert not uses_jaxmd(np.asarray(large.cell), CUTOFF, 1.5)  # 6.5 Å > half of 12.77 Å
    ng = NeighborGraph(CUTOFF)
    assert ng.kind(len(large), large.cell) == "jax-md"
    assert ng.kind(len(small), small.cell) == "images"
    # a narrow cell with more atoms × images than the budget: host tables
    assert dataclasses.replace(ng, max_images=0).kind(len(small), small.cell) == "host"
    assert ng.kind(len(large), large.cell[:] * [1, 1, 0.5]) == "images"


def test_overflow_is_in_the_returned_value_and_a_larger_allocation_fixes_it():
    """jax-md's contract: ``update`` reports overflow in the value it returns (jitted too), the
    caller allocates again with a larger capacity; description and values are immutable."""
    at = hcp((2, 2, 2))
    pos, box = jnp.asarray(at.positions), jnp.asarray(np.asarray(at.cell))
    ng = NeighborGraph(CUTOFF, extra=0, edge_extra=0, quantum=1, width_quantum=1, density_floor=False)  # no headroom
    nbrs = ng.allocate(pos, box)
    assert nbrs.kind == "images" and not bool(nbrs.did_buffer_overflow)
    assert int(nbrs.peak) == nbrs.capacity
    # a 3 % smaller cell brings the shell at √3·a = 5.11 Å within the 5 Å cutoff
    over = jax.jit(ng.update)(pos / 1.03, box / 1.03, nbrs)
    assert bool(over.did_buffer_overflow) and int(over.peak) > over.capacity == nbrs.capacity
    grown, grown_edges = ng.grown_capacity(over), ng.grown_edge_capacity(over)
    assert grown >= int(over.peak) and grown_edges >= int(over.edge_peak) > nbrs.edge_capacity
    fixed = ng.allocate(pos, box, capacity=grown, edge_capacity=grown_edges)
    assert fixed.capacity == grown > nbrs.capacity and fixed.edge_capacity == grown_edges
    after = jax.jit(ng.update)(pos / 1.03, box / 1.03, fixed)
    assert not bool(after.did_buffer_overflow)
    assert_exact(ng, after, np.asarray(pos / 1.03), np.asarray(box / 1.03))
    # the capacity is static: the graph has that many slots, and a compiled program sees it
    assert ng.graph(pos, box, fixed).capacity == grown
    assert jax.tree_util.tree_structure(fixed) != jax.tree_util.tree_structure(nbrs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ng.skin = 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        nbrs.capacity = 64
    assert hash(ng) == hash(NeighborGraph(CUTOFF, extra=0, edge_extra=0, quantum=1, width_quantum=1,
                                          density_floor=False))
    # slots to spare but not edges: the edge list alone overflows, and only it grows
    roomy = ng.allocate(pos, box, capacity=grown)
    over = jax.jit(ng.update)(pos / 1.03, box / 1.03, roomy)
    assert bool(over.did_buffer_overflow) and int(over.peak) <= over.capacity
    assert ng.grown_capacity(over) == roomy.capacity and ng.grown_edge_capacity(over) >= int(over.edge_peak)
    assert ng.graph(pos / 1.03, box / 1.03, roomy).compact and bool(ng.graph(pos / 1.03, box / 1.03, roomy).overflow)


# --- variable box -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, supercell", [
    ("host", (2, 2, 2)),
    pytest.param("jax-md", (5, 5, 3), marks=pytest.mark.slow),  # the same criterion, a larger cell
])
def test_deformed_cell_makes_the_list_stale(kind, supercell):
    """NPT: a list goes stale once the cell has deformed enough (affine positions) for a pair to
    cross the skin — with a 0.2 Å skin a 5 % compression may bring pairs from 5.2 Å to 4.95 Å —
    but not for a 0.1 % deformation, nor for 5 % with a 1 Å skin (5/6 would be needed)."""
    at = hcp(supercell)
    pos, box = at.positions, np.asarray(at.cell)
    for skin, cases in ((0.2, ((1.001, False), (1 / 1.001, False), (1.05, True), (1 / 1.05, True))),
                        (1.0, ((1 / 1.05, False),))):
        ng = NeighborGraph(CUTOFF, skin=skin, variable_box=True, **KIND[kind])
        # graph capacities that a compressed cell cannot overflow: staleness is tested
        nbrs = ng.allocate(jnp.asarray(pos), jnp.asarray(box), capacity=64, edge_capacity=64 * len(pos),
                           groups=(64,) * ng.n_groups(len(pos)))
        assert nbrs.kind == kind
        for scale, stale in cases:
            new = ng.update(jnp.asarray(pos * scale), jnp.asarray(box * scale), nbrs)
            assert bool(new.did_buffer_overflow) == stale, (skin, scale)


# --- overflow: detected, reallocated, recomputed ------------------------------------------------

def test_host_table_goes_stale_when_an_atom_moves_half_the_skin():
    """Relative to the mean translation; an atom that crossed the cell keeps its pairs."""
    at = hcp((2, 2, 2))
    pos, box = at.positions, np.asarray(at.cell)
    ng = NeighborGraph(CUTOFF, skin=0.4, **KIND["host"])
    nbrs = ng.allocate(jnp.asarray(pos), jnp.asarray(box), capacity=40, edge_capacity=40 * len(pos))
    assert nbrs.kind == "host"

    def stale(new):
        return bool(ng.update(jnp.asarray(new), jnp.asarray(box), nbrs).did_buffer_overflow)

    one = np.zeros_like(pos)
    one[3] = [0.0, 0.0, 1.0]
    assert not stale(pos + 0.15 * one)  # 0.15·15/16 Å from the mean < skin/2
    assert stale(pos + 0.25 * one)
    assert not stale(pos + [1.5, -2.0, 3.0])  # a common translation moves no pair
    jumped = pos + 0.1 * one
    jumped[5] += box[0] - box[2]  # a whole lattice vector: the same atom, other image
    assert not stale(jumped)
    assert_exact(ng, ng.update(jnp.asarray(jumped), jnp.asarray(box), nbrs), jumped, box)


@pytest.fixture(scope="module")
def energy():
    """The reference EAM with its switch moved to 4–5 Å: a graph energy with the model's cutoff
    that compiles in seconds (the machinery under test does not depend on the energy)."""
    return graph_energy_fn(dataclasses.replace(zhou2004("Ti"), r_on=4.0, r_off=CUTOFF))


def simulate(energy, at, ng, steps, capacity=0):
    s = MDSettings(thermostat=Thermostat("langevin", temperature=600.0), timestep_fs=1.0,
                   steps=steps, chunk=10, record_every=2, seed=3)
    return run(energy, jnp.asarray(at.positions), np.asarray(at.cell), np.full(len(at), TI), s, ng,
               progress=lambda m: None, capacity=capacity)


@pytest.mark.parametrize("kind, supercell, skin, steps", [
    # graph capacity: an atom gains a neighbour within the cutoff
    ("host", (2, 2, 2), 1.0, 10),
    # and an image table with no spare width that searches again every few steps
    ("images", (2, 2, 2), 0.1, 20),
    # and a thin skin: the list, with no spare slots, rebuilds itself in the loop
    pytest.param("jax-md", (5, 5, 3), 0.3, 20, marks=pytest.mark.slow),
])
def test_overflow_is_reallocated_and_recomputed(energy, kind, supercell, skin, steps):
    at = hcp(supercell)
    ref = simulate(energy, at, NeighborGraph(CUTOFF, skin=1.0, **KIND[kind]), steps, capacity=40)
    assert ref.stats["reallocations"] == 0 and ref.stats["capacity"] == 40
    # no headroom: no spare candidate slots, no spare graph slots
    tight = NeighborGraph(CUTOFF, skin=skin, margin=1.0, extra=0, edge_extra=0, quantum=1, width_quantum=1,
                          density_floor=False, **KIND[kind])
    got = simulate(energy, at, tight, steps)
    assert got.stats["neighbor_backend"] == ref.stats["neighbor_backend"] == kind
    # the run had to reallocate, and the recomputed trajectory is the same trajectory; the grown
    # capacity is in the stats, for the caller to start its next run from
    assert got.stats["reallocations"] >= 1
    first = tight.allocate(jnp.asarray(at.positions), np.asarray(at.cell))
    assert got.stats["capacity"] > first.capacity
    if kind == "images":  # the table grew too
        assert got.stats["width"] > first.width
    assert len(got.positions) == len(ref.positions) == steps // 2
    np.testing.assert_allclose(got.positions, ref.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.momenta, ref.momenta, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.energies, ref.energies, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.final["positions"], ref.final["positions"], rtol=0, atol=1e-9)
    assert np.all(np.isfinite(got.temperatures)) and 200 < np.mean(got.temperatures) < 1500


def test_a_row_group_overflow_is_reallocated_and_recomputed(energy):
    """Row groups sized at the rattled lattice sites with no headroom: as the crystal warms, a
    group's fullest row outgrows its capacity while the graph capacity holds; the run reallocates
    with the groups grown above the counts seen and gives the trajectory of a run without groups."""
    at = hcp((2, 2, 2))
    ref = simulate(energy, at, NeighborGraph(CUTOFF, skin=1.0, row_groups=1), 20, capacity=40)
    assert ref.stats["reallocations"] == 0 and ref.stats["groups"] == []
    tight = NeighborGraph(CUTOFF, skin=1.0, group_rows=4, group_extra=0, group_quantum=1, density_floor=False)
    first = tight.allocate(jnp.asarray(at.positions), np.asarray(at.cell), capacity=40)
    assert len(first.groups) == 4 and first.groups[0] == 40
    assert first.groups[1:] == tuple(int(c) for c in first.group_peak[1:])  # the fullest rows' counts
    got = simulate(energy, at, tight, 20, capacity=40)
    assert got.stats["reallocations"] >= 1 and got.stats["capacity"] == 40
    assert got.stats["groups"][0] == 40 and all(a >= b for a, b in zip(got.stats["groups"], first.groups))
    assert got.stats["groups"][1:] != list(first.groups[1:])
    np.testing.assert_allclose(got.positions, ref.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.energies, ref.energies, rtol=0, atol=1e-9)


def test_row_groups_follow_the_counts_of_the_first_chunk(energy):
    """A fresh allocation lifts the row groups to the density floor (the mean count in the cutoff
    sphere − ``group_extra``), above what a crystal near its lattice sites fills; after its first
    chunk the run tightens them to the counts it saw + ``group_extra`` and goes on with the
    trajectory of a run without groups."""
    at = hcp((2, 2, 2))
    ref = simulate(energy, at, NeighborGraph(CUTOFF, skin=1.0, row_groups=1), 20, capacity=40)
    ng = NeighborGraph(CUTOFF, skin=1.0, group_rows=4)
    first = ng.allocate(jnp.asarray(at.positions), np.asarray(at.cell), capacity=40)
    in_sphere = len(at) / abs(np.linalg.det(np.asarray(at.cell))) * 4 / 3 * np.pi * CUTOFF**3
    assert first.groups[1:] == (int(np.ceil(in_sphere)) - ng.group_extra,) * 3
    got = simulate(energy, at, ng, 20, capacity=40)
    assert got.stats["reallocations"] == 0 and got.stats["groups"][0] == 40
    assert all(a < b for a, b in zip(got.stats["groups"][1:], first.groups[1:]))
    np.testing.assert_allclose(got.positions, ref.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.energies, ref.energies, rtol=0, atol=1e-9)


def _chunk_reuse_system(energy):
    """The 2×2×2 hcp cell of the chunk-reuse tests, its neighbour description, and a factory of
    fresh Langevin simulators for it (each with its own compiled chunks)."""
    from fusedmlp.md.simulate import Simulator

    at = hcp((2, 2, 2))
    s = MDSettings(thermostat=Thermostat("langevin", temperature=600.0), timestep_fs=1.0,
                   steps=10, chunk=10, record_every=2, seed=3)
    ng = NeighborGraph(CUTOFF, skin=1.0)
    return at, ng, lambda: Simulator(lambda p, r, b, g: energy(r, b, g), np.full(len(at), TI), s, ng)


def test_a_compiled_chunk_serves_a_run_whose_table_needs_less_width(energy):
    """An image table's width follows the density it is built at; a run in an expanded cell (as
    NPT leaves one) reuses the chunk compiled for a wider table instead of compiling again, and
    its trajectory is the one a fresh simulator gives."""
    at, ng, simulator = _chunk_reuse_system(energy)
    sim = simulator()
    box = np.asarray(at.cell)
    dense = sim.run(jnp.asarray(at.positions), box, progress=lambda m: None, capacity=40)
    expanded = (jnp.asarray(at.positions) * 1.1, box * 1.1)
    assert ng.allocate(*expanded, capacity=40).width < dense.stats["width"]  # it would need less
    got = sim.run(*expanded, progress=lambda m: None, capacity=40)
    assert got.stats["width"] == dense.stats["width"] and len(sim._cache) == 1
    fresh = simulator().run(*expanded, progress=lambda m: None, capacity=40)
    np.testing.assert_allclose(got.positions, fresh.positions, rtol=0, atol=1e-9)


def test_a_compiled_chunk_serves_a_run_that_needs_up_to_one_quantum_less_capacity(energy):
    """Graph capacity follows the configuration too: a run that needs one quantum less than a
    compiled chunk holds runs on that chunk (padding slots change nothing), and gives the
    trajectory a fresh simulator at its own capacity gives; a run that needs less than that
    compiles its own chunk rather than carry the padding."""
    at, ng, simulator = _chunk_reuse_system(energy)

    def cell(f):
        return jnp.asarray(at.positions) * f, np.asarray(at.cell) * f

    sim = simulator()
    first = sim.run(*cell(1.0), progress=lambda m: None)
    near, far = ng.allocate(*cell(1.03)), ng.allocate(*cell(1.1))
    assert near.capacity == first.stats["capacity"] - ng.quantum and near.width <= first.stats["width"]
    assert far.capacity < near.capacity
    got = sim.run(*cell(1.03), progress=lambda m: None)
    assert got.stats["capacity"] == first.stats["capacity"] and len(sim._cache) == 1
    fresh = simulator().run(*cell(1.03), progress=lambda m: None)
    assert fresh.stats["capacity"] == near.capacity
    np.testing.assert_allclose(got.positions, fresh.positions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.energies, fresh.energies, rtol=1e-6, atol=1e-6)
    assert sim.run(*cell(1.1), progress=lambda m: None).stats["capacity"] == far.capacity
    assert len(sim._cache) == 2


def test_a_run_from_a_warm_configuration_reuses_the_chunk_of_its_lattice_site_start(energy):
    """A crystal's edge capacity is sized at its lattice sites with room to warm up; a run from
    the warm configuration (a production after its equilibration) would size a larger one, yet
    runs on the compiled chunk while that holds half a quantum per atom over its edges, with the
    trajectory a fresh simulator at its own edge capacity gives."""
    at, ng, simulator = _chunk_reuse_system(energy)
    sim = simulator()
    first = sim.run(jnp.asarray(at.positions), np.asarray(at.cell), steps=200, progress=lambda m: None)
    warm, box = jnp.asarray(first.final["positions"]), np.asarray(at.cell)
    own = ng.allocate(warm, box)
    assert own.edge_capacity > first.stats["edge_capacity"] >= int(own.edge_peak) + len(at) * ng.quantum // 2
    got = sim.run(warm, box, momenta=first.final["momenta"], progress=lambda m: None)
    assert got.stats["edge_capacity"] == first.stats["edge_capacity"] and len(sim._cache) == 1
    assert got.stats["reallocations"] == 0
    fresh = simulator().run(warm, box, momenta=first.final["momenta"], progress=lambda m: None)
    assert fresh.stats["edge_capacity"] == own.edge_capacity
    np.testing.assert_allclose(got.positions, fresh.positions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.energies, fresh.energies, rtol=1e-6, atol=1e-6)
