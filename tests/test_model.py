"""DimeNet++ potential: derivatives, invariances, periodic images, padding, capacities, files."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusedmlp.data.dataset import from_configs
from fusedmlp.io import InputError
from fusedmlp.model import graph as G
from fusedmlp.model.api import Potential
from fusedmlp.model.batch import batch_predictor, prepare, take
from fusedmlp.model.energy import energy_fn
from fusedmlp.model.file import load_model, save_model
from fusedmlp.model.params import init_params
from fusedmlp.model.settings import ModelSettings
from fusedmlp.structures import crystal

SMALL = dict(embed_size=8, out_embed_size=8, type_embed_size=4, int_embed_size=4, basis_embed_size=3,
             n_blocks=2, aggregation_scale=20.0)


def random_params(settings, seed=0):
    """Initial parameters with non-zero output layers, so that energies depend on everything."""
    p = init_params(settings, jax.random.PRNGKey(seed), dtype=jnp.float64)
    net = {k: ({"w": 0.3 * jax.random.normal(jax.random.PRNGKey(hash(k) % 1000), v["w"].shape)}
               if k.endswith("lin_out") else v) for k, v in p["net"].items()}
    return {**p, "net": net}


@pytest.fixture(scope="module")
def model():
    s = ModelSettings.create(["Ti", "Zr"], **SMALL)
    return s, random_params(s)


@pytest.fixture(scope="module")
def pot(model):
    return Potential(*model)


def triclinic_cell(seed=0, supercell=(2, 1, 1)):
    rng = np.random.default_rng(seed)
    at = crystal("Ti", "hcp", 2.95, 1.6, supercell)
    d = np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))
    numbers = at.numbers.copy()
    numbers[0] = 40  # one Zr: two species
    return at.positions @ d.T + rng.normal(scale=0.1, size=at.positions.shape), np.asarray(at.cell) @ d.T, numbers


def test_cell_is_narrower_than_twice_the_cutoff():
    from fusedmlp.space import plane_spacings
    _, box, _ = triclinic_cell()
    assert plane_spacings(box).min() < 2 * 5.0


def test_forces_are_minus_gradient(pot):
    pos, box, z = triclinic_cell()
    u, f, _ = pot(pos, box, z)
    h = 1e-5
    for i, a in [(0, 0), (1, 2), (3, 1)]:
        p, m = pos.copy(), pos.copy()
        p[i, a] += h
        m[i, a] -= h
        fd = -(pot(p, box, z)[0] - pot(m, box, z)[0]) / (2 * h)
        assert abs(f[i, a] - fd) < 1e-6 * max(1.0, abs(fd)), (i, a, f[i, a], fd)
    assert np.abs(f).max() > 1e-3


def test_virial_is_strain_derivative(pot):
    pos, box, z = triclinic_cell(seed=1)
    _, _, w = pot(pos, box, z)
    h = 1e-5
    for a, b in [(0, 0), (2, 2), (0, 1), (1, 2)]:
        e = np.zeros((3, 3))
        e[a, b] = h
        up = pot(pos @ (np.eye(3) + e).T, box @ (np.eye(3) + e).T, z)[0]
        dn = pot(pos @ (np.eye(3) - e).T, box @ (np.eye(3) - e).T, z)[0]
        assert abs(w[a, b] + (up - dn) / (2 * h)) < 1e-6, (a, b)
    np.testing.assert_allclose(w, w.T, atol=1e-8)


def test_invariances(pot):
    pos, box, z = triclinic_cell(seed=2)
    u0, f0, _ = pot(pos, box, z)
    th = 0.9
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    rot = rot @ np.array([[np.cos(0.4), 0, np.sin(0.4)], [0, 1, 0], [-np.sin(0.4), 0, np.cos(0.4)]])
    u1, f1, _ = pot(pos @ rot.T, box @ rot.T, z)
    assert abs(u1 - u0) < 1e-9
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-9)  # forces rotate with the system
    perm = np.random.default_rng(0).permutation(len(pos))
    u2, f2, _ = pot(pos[perm], box, z[perm])
    assert abs(u2 - u0) < 1e-9
    np.testing.assert_allclose(f2, f0[perm], atol=1e-9)
    moved = pos.copy()
    moved[2] += 2 * box[1] - box[2]  # a periodic image of the same atom
    assert abs(pot(moved, box, z)[0] - u0) < 1e-9


def test_periodic_images_are_exact(pot):
    # a 2-atom cell (an atom interacts with many images of itself) and its 3×3×2 supercell
    small = crystal("Ti", "hcp", 2.95, 1.6, (1, 1, 1))
    big = crystal("Ti", "hcp", 2.95, 1.6, (3, 3, 2))
    u1 = pot(small.positions, np.asarray(small.cell), small.numbers)[0]
    u2 = pot(big.positions, np.asarray(big.cell), big.numbers)[0]
    assert abs(u1 / len(small) - u2 / len(big)) < 1e-10


def test_padded_batch_equals_single_configurations(model, pot):
    s, p = model
    cfgs = []
    for k, sc in enumerate([(2, 1, 1), (1, 1, 1), (2, 2, 1)]):
        pos, box, z = triclinic_cell(seed=k, supercell=sc)
        cfgs.append(dict(positions=pos, box=box, species=z))
    ds = from_configs(cfgs)
    data = prepare(ds, s)
    pred = jax.jit(batch_predictor(s, data.capacity))
    u, f, w, overflow = pred(p, take(data, [0, 1, 2], jnp.float64))
    assert not np.any(overflow)
    for k, c in enumerate(cfgs):
        u1, f1, w1 = pot(c["positions"], c["box"], c["species"])
        n = len(c["positions"])
        assert abs(float(u[k]) - u1) < 1e-9
        np.testing.assert_allclose(np.asarray(f[k, :n]), f1, atol=1e-9)
        np.testing.assert_allclose(np.asarray(f[k, n:]), 0.0)
        np.testing.assert_allclose(np.asarray(w[k]), w1, atol=1e-9)


@pytest.mark.slow  # ~40 s; the lists' graphs equal exact enumeration in test_md_neighbors
def test_neighbour_list_candidates_with_skin_give_the_same_energy(model):
    """MD path: jax-md neighbour list (with skin, minimum image) vs exact host enumeration."""
    from jax_md import partition, space as jspace

    s, p = model
    at = crystal("Ti", "hcp", 2.95, 1.6, (4, 4, 3))
    rng = np.random.default_rng(0)
    pos = at.positions + rng.normal(scale=0.1, size=at.positions.shape)
    box = np.asarray(at.cell)
    z = np.full(len(pos), 0, np.int32)
    energy = energy_fn(s)
    # exact table
    nbr, shf, msk = G.neighbor_table(pos, box, 5.0)
    g_exact = G.build_graph(jnp.asarray(pos), jnp.asarray(box), jnp.asarray(nbr), jnp.asarray(shf),
                            jnp.asarray(msk), 5.0, nbr.shape[1])
    u_exact = energy(p, jnp.asarray(pos), jnp.asarray(box), z, g_exact)
    # jax-md dense neighbour list with a 1 Å skin, fractional coordinates, triclinic box
    disp, _ = jspace.periodic_general(jnp.asarray(box.T), fractional_coordinates=True)
    frac = jnp.asarray(pos @ np.linalg.inv(box))
    nl = partition.neighbor_list(disp, jnp.asarray(box.T), 6.0, fractional_coordinates=True,
                                 format=partition.NeighborListFormat.Dense).allocate(frac)
    idx = nl.idx
    cand_mask = idx < len(pos)
    cand = jnp.where(cand_mask, idx, 0)
    shifts = G.minimum_image_shifts(jnp.asarray(pos), jnp.asarray(box), cand)
    g_md = G.build_graph(jnp.asarray(pos), jnp.asarray(box), cand, shifts, cand_mask, 5.0, nbr.shape[1] + 4)
    assert int(g_md.max_neighbors) == nbr.shape[1] and not bool(g_md.overflow)
    u_md = energy(p, jnp.asarray(pos), jnp.asarray(box), z, g_md)
    assert abs(float(u_md) - float(u_exact)) < 1e-9
    # too small a capacity is reported, not silently truncated
    g_small = G.build_graph(jnp.asarray(pos), jnp.asarray(box), cand, shifts, cand_mask, 5.0, nbr.shape[1] - 2)
    assert bool(g_small.overflow)



def test_compact_edge_list_gives_the_slot_layouts_energy_forces_and_virial(model):
    """A graph with padded rows (capacity 8 above the largest count) listing its edges compactly
    (E a few above the occupied slots) against the same graph slot by slot, float64; an edge
    capacity below the occupied slots is reported, not silently truncated."""
    from fusedmlp.quantity import energy_forces_virial

    s, p = model
    at = crystal("Ti", "hcp", 2.95, 1.6, (3, 3, 2))
    rng = np.random.default_rng(1)
    pos = jnp.asarray(at.positions + rng.normal(scale=0.1, size=at.positions.shape))
    box = jnp.asarray(np.asarray(at.cell))
    z = jnp.asarray(np.arange(len(pos)) % 2, jnp.int32)  # both species: the embeddings follow the edges
    nbr, shf, msk = (jnp.asarray(a) for a in G.neighbor_table(np.asarray(pos), np.asarray(box), 5.0))
    k = nbr.shape[1] + 8
    n_edges = int(msk.sum())

    @jax.jit
    def energy_forces_virial_of(g):  # jitted: op by op, the float64 model took 25 s here
        return energy_forces_virial(lambda r, b: energy_fn(s)(p, r, b, z, g))(pos, box)

    def efv(edge_capacity):
        g = G.build_graph(pos, box, nbr, shf, msk, 5.0, k, edge_capacity)
        return g, energy_forces_virial_of(g)

    g_slots, ref = efv(0)
    g_compact, got = efv(n_edges + 5)
    assert not g_slots.compact and g_compact.compact and g_compact.edge_capacity == n_edges + 5
    assert not bool(g_compact.overflow) and int(g_compact.n_edges) == n_edges
    for a, b in zip(got, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    # the edge list holds the occupied slots in row order, each slot finds its entry
    flat = np.flatnonzero(np.asarray(g_compact.mask).ravel())
    np.testing.assert_array_equal(np.asarray(g_compact.edges)[:n_edges], flat)
    np.testing.assert_array_equal(np.asarray(g_compact.slot_edge).ravel()[flat], np.arange(n_edges))
    assert np.all(np.asarray(g_compact.slot_edge).ravel()[~np.asarray(g_compact.mask).ravel()] == n_edges + 5)
    g_short = G.build_graph(pos, box, nbr, shf, msk, 5.0, k, n_edges - 1)
    assert bool(g_short.overflow) and not bool(g_compact.overflow)

def test_row_groups_give_the_one_block_energy_forces_and_virial(model):
    """Triplet blocks per row group (rows sorted by neighbour count, each group's block as wide
    as its fullest row + 1) against the one K × K block, on a compact edge list, float64; a group
    capacity below its fullest row's count is reported, not silently truncated."""
    from fusedmlp.quantity import energy_forces_virial

    s, p = model
    at = crystal("Ti", "hcp", 2.95, 1.6, (3, 3, 2))
    rng = np.random.default_rng(2)
    pos = jnp.asarray(at.positions + rng.normal(scale=0.15, size=at.positions.shape))
    box = jnp.asarray(np.asarray(at.cell))
    z = jnp.asarray(np.arange(len(pos)) % 2, jnp.int32)
    nbr, shf, msk = (jnp.asarray(a) for a in G.neighbor_table(np.asarray(pos), np.asarray(box), 5.0))
    counts = np.sort(np.asarray(msk).sum(1))[::-1]
    k, n_edges = nbr.shape[1] + 4, int(msk.sum())
    starts = G.group_starts(len(pos), 4)
    assert starts == [0, 9, 18, 27] and counts[0] > counts[27] + 2  # the groups differ in width
    groups = (k, *(int(counts[a]) + 1 for a in starts[1:]))

    @jax.jit
    def energy_forces_virial_of(g):
        return energy_forces_virial(lambda r, b: energy_fn(s)(p, r, b, z, g))(pos, box)

    one = G.build_graph(pos, box, nbr, shf, msk, 5.0, k, n_edges + 3)
    grouped = G.build_graph(pos, box, nbr, shf, msk, 5.0, k, n_edges + 3, groups)
    assert [c for _, c in G.triplet_blocks(grouped)] == list(groups) and len(G.triplet_blocks(one)) == 1
    assert not bool(grouped.overflow)
    np.testing.assert_array_equal(np.asarray(msk).sum(1)[np.asarray(grouped.rows)], counts)
    for a, b in zip(energy_forces_virial_of(grouped), energy_forces_virial_of(one)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    # the last group one slot short of its fullest row: overflow, as for the capacity
    short = G.build_graph(pos, box, nbr, shf, msk, 5.0, k, n_edges + 3, (*groups[:-1], int(counts[27]) - 1))
    assert bool(short.overflow)
    with pytest.raises(ValueError, match="first must be the capacity"):
        G.build_graph(pos, box, nbr, shf, msk, 5.0, k, 0, (k - 1, *groups[1:]))


def test_model_file_round_trip_and_mismatch(tmp_path, model, pot):
    s, p = model
    save_model(tmp_path / "m.npz", s, p, metadata={"note": "test"})
    s2, p2, meta = load_model(tmp_path / "m.npz", expected=s)
    assert s2 == s and meta["note"] == "test"
    # provenance: the versions that computed the model, as installed
    from importlib import metadata
    assert meta["versions"]["jax"] == metadata.version("jax") and meta["versions"]["jax-md"] == metadata.version("jax-md")
    pos, box, z = triclinic_cell()
    assert Potential(s2, p2)(pos, box, z)[0] == pot(pos, box, z)[0]
    other = dataclasses.replace(s, dimenet=dataclasses.replace(s.dimenet, n_blocks=3))
    with pytest.raises(InputError, match="different model configuration.*n_blocks"):
        load_model(tmp_path / "m.npz", expected=other)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "none.npz")


def test_unknown_species_is_a_clear_error(model, pot):
    s, _ = model
    pos, box, z = triclinic_cell()
    z[1] = 72  # Hf
    with pytest.raises(ValueError, match=r"species \['Hf'\] are unknown to the model"):
        pot(pos, box, z)
    with pytest.raises(ValueError, match="unknown to the model"):
        prepare(from_configs([dict(positions=pos, box=box, species=z)]), s)


def test_ase_calculator_stress_is_minus_virial_over_volume(pot):
    from ase import Atoms

    pos, box, z = triclinic_cell(seed=3)
    atoms = Atoms(numbers=z, positions=pos, cell=box, pbc=True)
    atoms.calc = pot.calculator()
    u, f, w = pot(pos, box, z)
    assert atoms.get_potential_energy() == u
    s = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(s, -w / atoms.get_volume(), atol=1e-12)
    # and the stress is the strain derivative of the energy per volume, through ASE itself
    eps = 1e-5
    a2 = atoms.copy()
    a2.calc = pot.calculator()
    a2.set_cell(box @ (np.eye(3) + np.diag([eps, 0, 0])).T, scale_atoms=True)
    de = (a2.get_potential_energy() - u) / eps / atoms.get_volume()
    assert abs(de - s[0, 0]) < 1e-4


def test_repulsion_is_smooth_at_its_reach_and_one_term_per_pair():
    """φ vanishes with its first two derivatives at r_in (finite differences), equals ε at r_in/2,
    and a dimer in a large cell gets φ(r) once, not once per directed edge."""
    from fusedmlp.model.repulsion import RepulsionSettings, pair_repulsion, repulsion_energy

    s = RepulsionSettings(energy=10.0, r_inner=2.0)  # float64: conftest enables x64
    phi = lambda r: pair_repulsion(s, jnp.asarray(r, jnp.float64))  # noqa: E731
    np.testing.assert_allclose(float(phi(1.0)), 10.0)
    h = 1e-4
    for r0 in (2.0 - h, 2.0, 2.0 + h, 2.5):
        assert abs(float(phi(r0))) < 1e-10
    d1 = (float(phi(2.0 - h)) - float(phi(2.0 - 3 * h))) / (2 * h)
    d2 = (float(phi(2.0 - h)) - 2 * float(phi(2.0 - 2 * h)) + float(phi(2.0 - 3 * h))) / h**2
    assert abs(d1) < 1e-6 and abs(d2) < 1e-2  # both → 0 as r → r_in (φ ∝ (r_in − r)³)
    assert float(jax.grad(phi)(1.5)) < 0 and float(jax.grad(phi)(0.0 + 2.5)) == 0.0
    pos = np.array([[0.0, 0.0, 0.0], [1.3, 0.0, 0.0]])
    box = np.eye(3) * 12.0
    nbr, shf, msk = G.neighbor_table(pos, box, 5.0)
    g = G.build_graph(jnp.asarray(pos), jnp.asarray(box), jnp.asarray(nbr), jnp.asarray(shf, float),
                      jnp.asarray(msk), 5.0, nbr.shape[1])
    np.testing.assert_allclose(float(repulsion_energy(s, jnp.asarray(pos), jnp.asarray(box), g)),
                               float(phi(1.3)), rtol=1e-12)


def test_pair_approach_follows_the_closest_periodic_image_and_finds_a_hole():
    """The closest pair is found across the cell boundary, and pushing it together along that
    edge gives a dimer energy φ(r) exactly; ``hole_depth`` is zero for a profile that only rises
    and the depth of the well for one that dips on the way in."""
    from fusedmlp.model.repulsion import approach_profile, closest_pair, hole_depth

    box = np.diag([9.0, 10.0, 11.0])
    pos = np.array([[0.3, 5.0, 5.0], [8.1, 5.4, 5.0], [4.5, 1.0, 9.0]])  # 0-1: 1.2 + 0.4 across x
    nbr, shf, msk = G.neighbor_table(pos, box, 4.0)
    pair = closest_pair(pos[None], box[None], nbr[None], shf[None], msk[None])
    d01 = np.array([8.1 - 9.0 - 0.3, 0.4, 0.0])
    assert pair.index == 0 and pair.i in (0, 1)
    np.testing.assert_allclose(pair.distance, np.linalg.norm(d01))
    np.testing.assert_allclose(np.abs(pair.d), np.abs(d01))

    def mic(x):  # the pair's minimum-image distance, computed independently of the graph
        dx = x[1] - x[0]
        dx -= np.round(dx / np.diag(box)) * np.diag(box)
        return np.linalg.norm(dx)

    phi = lambda r: 4 * ((1.15 / r) ** 12 - (1.15 / r) ** 6)  # noqa: E731  Lennard-Jones, σ = 1.15 Å
    r = np.linspace(pair.distance, 0.6 * pair.distance, 9)
    e = approach_profile(lambda x: phi(mic(x)), pos, pair, r)
    np.testing.assert_allclose(e, phi(r), rtol=1e-12)
    assert hole_depth(r, e) == (0.0, float(r[0]))  # inside its minimum (1.29 Å) LJ only rises
    well = np.array([0.0, 1.0, 2.0, 1.5, 1.2, 3.0])  # on the way in: rises, dips by 0.8, rises
    depth, at = hole_depth(np.linspace(2.0, 1.0, 6)[::-1], well[::-1])  # order of the grid is free
    np.testing.assert_allclose((depth, at), (0.8, 1.2))


def test_repulsion_enters_the_one_energy_and_its_forces(model):
    """With the prior, energy_fn adds exactly Σ φ, and forces stay −∇U (finite differences)."""
    from fusedmlp.model.repulsion import RepulsionSettings

    settings, params = model
    with_rep = dataclasses.replace(settings, repulsion=RepulsionSettings(energy=10.0, r_inner=2.2))
    pos, box, numbers = triclinic_cell(seed=3)
    pos = pos.copy()
    pos[1] = pos[0] + np.array([1.6, 0.3, 0.0])  # one pair well inside r_in
    sp = jnp.asarray(np.where(numbers == 22, 0, 1))
    nbr, shf, msk = G.neighbor_table(pos, box, settings.dimenet.cutoff)
    graph = G.build_graph(jnp.asarray(pos), jnp.asarray(box), jnp.asarray(nbr), jnp.asarray(shf, float),
                          jnp.asarray(msk), settings.dimenet.cutoff, nbr.shape[1])
    u0 = jax.jit(lambda r: energy_fn(settings)(params, r, jnp.asarray(box), sp, graph))
    u1 = jax.jit(lambda r: energy_fn(with_rep)(params, r, jnp.asarray(box), sp, graph))
    r = jnp.asarray(pos)
    d = np.linalg.norm((pos[None] - pos[:, None]), axis=-1)  # no pair crosses the cell here
    close = d[np.triu_indices(len(pos), 1)]
    close = close[close < 2.2]
    assert len(close) >= 1
    np.testing.assert_allclose(float(u1(r) - u0(r)), float(np.sum(10.0 * (2.2 / close - 1) ** 3)), rtol=1e-9)
    f = -np.asarray(jax.grad(u1)(r))
    h = 1e-5
    e = np.zeros_like(pos)
    e[1, 0] = h
    fd = -(float(u1(r + e)) - float(u1(r - e))) / (2 * h)
    np.testing.assert_allclose(f[1, 0], fd, rtol=1e-6, atol=1e-8)


def test_old_model_files_without_repulsion_load(tmp_path, model):
    settings, params = model
    d = settings.to_dict()
    d.pop("repulsion")
    assert ModelSettings.from_dict(d).repulsion is None


def test_model_files_of_the_first_layout_load_and_foreign_files_are_named(tmp_path, model, pot):
    """Version-1 files (fixed keys scale/shift/net/<module>/<name>; haiku module names hold '/')
    load to the same parameters as today's generic layout; a file that is not a model says so."""
    import json

    from fusedmlp.io import InputError
    from fusedmlp.model.params import flatten

    s, p = model
    arrays = {"param:" + ("/".join(k) if k[0] == "net" else k[0]): np.asarray(v) for k, v in flatten(p).items()}
    assert any(k.count("/") > 2 for k in arrays)  # module names with '/' are what makes v1 ambiguous
    header = {"format_version": 1, "settings": s.to_dict(), "metadata": {}}
    np.savez(tmp_path / "v1.npz", header=np.array(json.dumps(header)), **arrays)
    save_model(tmp_path / "v2.npz", s, p)
    pos, box, z = triclinic_cell()
    for name in ("v1.npz", "v2.npz"):
        s2, p2, _ = load_model(tmp_path / name, expected=s)
        assert Potential(s2, p2)(pos, box, z)[0] == pot(pos, box, z)[0]
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.npz: not a model file"):
        load_model(tmp_path / "junk.npz")


def test_radial_basis_is_the_normalised_spherical_bessel_functions():
    """sbf_radial against SciPy's j_l at the roots z_ln: u(x) √2/|j_(l+1)(z_ln)| j_l(z_ln x), in
    float64 to round-off and in float32 (the model's) to 1e-5 of the largest value."""
    from scipy import special

    from fusedmlp.model import basis

    n_l, n_r, p = 7, 6, 6
    x = np.random.default_rng(0).uniform(0.3, 0.999, 500)
    z = basis.spherical_bessel_roots(n_l, n_r)
    for l in range(n_l):  # roots: j_l(z_ln) = 0, ascending
        assert np.all(np.abs(special.spherical_jn(l, z[l])) < 1e-10) and np.all(np.diff(z[l]) > 0)
    ref = np.stack([np.sqrt(2.0) / np.abs(special.spherical_jn(l + 1, z[l])) * special.spherical_jn(l, np.outer(x, z[l]))
                    for l in range(n_l)], axis=1) * np.asarray(basis.envelope(x, p))[:, None, None]
    got = np.asarray(basis.sbf_radial(jnp.asarray(x), n_l, n_r, p))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    got32 = np.asarray(basis.sbf_radial(jnp.asarray(x, jnp.float32), n_l, n_r, p), float)
    np.testing.assert_allclose(got32, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def _compiled_dense_uses_ynnpack(env_flags: str | None, import_package: bool) -> bool:
    """In a fresh process: does XLA:CPU compile a 32-wide dense layer into a YNNPACK fusion?"""
    import os
    import subprocess
    import sys

    code = ("import jax, jax.numpy as jnp\n"
            + ("import fusedmlp\n" if import_package else "")
            + "f = jax.jit(lambda a, b: jax.nn.silu(a @ b))\n"
              "print('__ynn_fusion' in f.lower(jnp.ones((4096, 32)), jnp.ones((32, 32))).compile().as_text())\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if env_flags is not None:
        env["XLA_FLAGS"] = env_flags
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU setting")
def test_importing_the_package_turns_off_ynnpack_dense_fusions_unless_the_user_names_the_flag():
    assert _compiled_dense_uses_ynnpack(None, import_package=False)  # the default this changes
    assert not _compiled_dense_uses_ynnpack(None, import_package=True)
    # a user's own choice of the flag is kept (``dot``: YNNPACK fusions of dots)
    assert _compiled_dense_uses_ynnpack("--xla_cpu_experimental_ynn_fusion_type=dot", import_package=True)
