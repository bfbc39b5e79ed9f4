"""Multi-fidelity training (Messerly et al. 2025): heads, per-head E0, masks, model files at a
head, splits by structure across levels, the trainer on the one loop."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_configs
from fusedmlp.config import validate_config
from fusedmlp.data import dataset as D
from fusedmlp.data.dataset import from_configs
from fusedmlp.data.levels import combine_levels
from fusedmlp.data.splits import SplitSettings, split_by_structure, split_indices, structure_keys
from fusedmlp.io import InputError
from fusedmlp.model.api import Potential
from fusedmlp.model.batch import batch_predictor, prepare, take
from fusedmlp.model.energy import energy_fn
from fusedmlp.model.file import load_head, save_model
from fusedmlp.model.params import EnergyScale, correction_norm2, fit_head_shifts, init_params
from fusedmlp.model.settings import ModelSettings, UnknownHead
from fusedmlp.reference import ReferenceCalculator, scaled, zhou2004
from fusedmlp.structures import crystal
from fusedmlp.training.loop import TrainingInterrupted
from fusedmlp.training.multifidelity import (LevelSettings, MultiFidelitySettings, fit_multifidelity,
                                             multifidelity_trainer, training_sets, used_labels)

TINY = dict(embed_size=8, out_embed_size=8, type_embed_size=4, int_embed_size=4, basis_embed_size=3,
            n_blocks=1, aggregation_scale=20.0)
HEADS = ("ref", "ref_hard")


def random_params(settings, seed=0, shift=(-4.7, -4.8)):
    """Parameters with non-zero output layers (every head's energy depends on every parameter)
    and a different reference energy per head."""
    p = init_params(settings, jax.random.PRNGKey(seed),
                    EnergyScale(np.full(len(settings.heads), 0.8), np.array(shift[:len(settings.heads)])[:, None]),
                    dtype=jnp.float64)
    net = {k: ({"w": 0.3 * jax.random.normal(jax.random.PRNGKey(hash(k) % 1000), v["w"].shape)}
               if k.endswith("lin_out") else v) for k, v in p["net"].items()}
    return {**p, "net": net}


@pytest.fixture(scope="module")
def levels(ti_calc):
    """Eight structures labelled at two levels of the reference potential, the second level
    without virials."""
    hard = ReferenceCalculator(scaled(zhou2004("Ti"), 1.05, 1 / 1.05, 0.995))
    low = from_configs(make_configs(ti_calc, n=8, seed=5))
    high = from_configs([{**c, "fidelity": "ref_hard", "virial": None} for c in make_configs(hard, n=8, seed=5)])
    return combine_levels([low, high], ["low.npz", "high.npz"])


@pytest.fixture(scope="module")
def model():
    s = ModelSettings.create(["Ti"], heads=HEADS, **TINY)
    return s, random_params(s)


MFS = MultiFidelitySettings(levels=(LevelSettings("ref", None, 3, 10.0, 1.0, 1.0),
                                    LevelSettings("ref_hard", 3, 2, 10.0, 0.0, 0.0)),
                            epochs=3, steps_per_epoch=2, lr_start=3e-3, lr_end=1e-3, patience=10, seed=1)


def level_of(ds, mfs=MFS):
    return np.array([mfs.heads.index(f) for f in ds.fidelity])


# --- the model's heads ------------------------------------------------------------------------------------

def test_heads_share_every_backbone_parameter(model):
    """Each head's energy depends on every network parameter but the other heads' output columns:
    the backbone is shared, a head is its column of the output layers (and its E0)."""
    s, p = model
    at = crystal("Ti", "hcp", 2.95, 1.6, (2, 1, 1))
    pos = at.positions + np.random.default_rng(0).normal(scale=0.1, size=at.positions.shape)
    data = prepare(from_configs([dict(positions=pos, box=np.asarray(at.cell), species=at.numbers, fidelity="ref")]), s)
    b = take(data, [0], jnp.float64)
    grads = []
    for h in range(len(HEADS)):
        predict = batch_predictor(s, data.capacity, h)
        grads.append(jax.jit(jax.grad(lambda net: predict({**p, "net": net}, b)[0][0]))(p["net"]))
    leaves = [jax.tree_util.tree_leaves_with_path(g) for g in grads]
    n_out = 0
    for (path, g0), (_, g1) in zip(*leaves):
        name = jax.tree_util.keystr(path)
        if "lin_out" in name:  # (features, heads): head h reaches its own column only
            n_out += 1
            assert np.all(np.asarray(g0)[:, 1] == 0) and np.any(np.asarray(g0)[:, 0] != 0), name
            assert np.all(np.asarray(g1)[:, 0] == 0) and np.any(np.asarray(g1)[:, 1] != 0), name
        else:
            assert np.any(np.asarray(g0) != 0) and np.any(np.asarray(g1) != 0), f"{name} is not shared"
    assert n_out == 2  # one output block per stage, each with a column per head


def test_correction_heads_are_the_first_head_plus_their_own_column(tmp_path):
    """head_form "correction": with its own output column at zero (as initialised) a head's energy
    is the first head's up to the reference energies; the form survives the model file."""
    s = ModelSettings.create(["Ti"], heads=HEADS, head_form="correction", **TINY)
    p = random_params(s)
    zero = {**p, "net": {k: ({"w": v["w"].at[:, 1].set(0.0)} if k.endswith("lin_out") else v)
                         for k, v in p["net"].items()}}
    at = crystal("Ti", "hcp", 2.95, 1.6, (2, 1, 1))
    pos = at.positions + np.random.default_rng(2).normal(scale=0.1, size=at.positions.shape)
    u = {h: Potential(s, zero, head=h)(pos, np.asarray(at.cell), at.numbers) for h in HEADS}
    assert abs(u["ref_hard"][0] - u["ref"][0] - len(at) * (-4.8 + 4.7)) < 1e-9
    np.testing.assert_allclose(u["ref_hard"][1], u["ref"][1], atol=1e-12)  # the same forces
    assert abs(Potential(s, p, head="ref_hard")(pos, np.asarray(at.cell), at.numbers)[0] - u["ref_hard"][0]) > 1e-3
    save_model(tmp_path / "c.npz", s, p)
    assert load_head(tmp_path / "c.npz", "ref_hard")[0].head_form == "correction"


def test_padded_batch_evaluates_each_configuration_at_its_own_head(levels, model):
    s, p = model
    data = prepare(levels, s)
    assert data.head.tolist() == [0] * 8 + [1] * 8
    u, f, _, _ = jax.jit(batch_predictor(s, data.capacity))(p, take(data, [0, 9, 3], jnp.float64))
    for k, (i, h) in enumerate(((0, "ref"), (9, "ref_hard"), (3, "ref"))):
        c = levels.config(i)
        u1, f1, _ = Potential(s, p, head=h)(c["positions"], c["box"], c["species"])
        assert abs(float(u[k]) - u1) < 1e-9
        np.testing.assert_allclose(np.asarray(f[k, :len(f1)]), f1, atol=1e-9)
    # a level the model has no head for is an error naming its heads
    other = from_configs([{**levels.config(0), "fidelity": "ccsd"}])
    with pytest.raises(ValueError, match=r"levels \['ccsd'\] have no head.*\['ref', 'ref_hard'\]"):
        prepare(other, s)


def test_per_head_reference_energies_are_fitted_on_each_heads_own_energies():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 30, size=(12, 2))  # two species
    mu = {0: np.array([-4.7, -6.1]), 1: np.array([-5.9, -3.2])}
    head = np.array([0, 1] * 6)
    energies = np.array([counts[i] @ mu[head[i]] for i in range(12)])
    shifts = fit_head_shifts(counts, energies, head, HEADS)
    np.testing.assert_allclose(shifts, np.stack([mu[0], mu[1]]), atol=1e-10)
    # each head from its own energies: the other head's do not enter
    energies2 = np.where(head == 1, energies + 100.0, energies)
    np.testing.assert_allclose(fit_head_shifts(counts, energies2, head, HEADS)[0], mu[0], atol=1e-10)
    with pytest.raises(ValueError, match="head 'ref_hard' has no training energies"):
        fit_head_shifts(counts, energies, np.zeros(12, int), HEADS)


# --- model files at a head --------------------------------------------------------------------------------

def test_multi_head_model_file_round_trips_and_loads_at_each_head(tmp_path, model):
    s, p = model
    save_model(tmp_path / "mf.npz", s, p)
    at = crystal("Ti", "hcp", 2.95, 1.6, (2, 2, 1))
    pos, box = at.positions + 0.05, np.asarray(at.cell)
    energies = {}
    for h, name in enumerate(HEADS):
        s2, p2, _, index = load_head(tmp_path / "mf.npz", name)
        assert s2 == s and index == h
        for a, b in zip(jax.tree_util.tree_leaves(p2), jax.tree_util.tree_leaves(p)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        pot = Potential.load(tmp_path / "mf.npz", head=name)
        graph_u = pot(pos, box, at.numbers)[0]
        energies[name] = graph_u
        assert graph_u == Potential(s, p, head=h)(pos, box, at.numbers)[0]
        at.calc = pot.calculator()  # the ASE calculator at that head
        at.positions = pos
        assert at.get_potential_energy() == graph_u
    assert abs(energies["ref"] - energies["ref_hard"]) > 0.1  # two heads, two energies


def test_unknown_head_is_an_error_naming_the_files_heads(tmp_path, model):
    s, p = model
    save_model(tmp_path / "mf.npz", s, p)
    with pytest.raises(InputError, match=r"mf.npz \[heads\]: unknown head 'ccsd'; the model has heads \['ref', 'ref_hard'\]"):
        Potential.load(tmp_path / "mf.npz", head="ccsd")
    # a file with several heads is never used at a silently chosen one
    with pytest.raises(InputError, match=r"mf.npz \[heads\]: the model has heads \['ref', 'ref_hard'\]; name one"):
        Potential.load(tmp_path / "mf.npz")
    with pytest.raises(UnknownHead, match="name one"):
        energy_fn(s)(p, None, None, None, None)
    # the evaluation rules' `<model>@<head>`
    from fusedmlp.evaluation.potentials import load_potential

    cfg = validate_config({"model": {**{k: TINY[k] for k in TINY if k != "aggregation_scale"}, "repulsion_ev": 0.0}})
    with pytest.raises(InputError, match=r"unknown head 'ccsd'; the model has heads \['ref', 'ref_hard'\]"):
        load_potential(cfg, "multifidelity@ccsd", tmp_path / "mf.npz")
    assert load_potential(cfg, "multifidelity@ref_hard", tmp_path / "mf.npz").name == "multifidelity@ref_hard"


# --- data: one dataset of the levels, splits by structure -------------------------------------------------

def test_combined_dataset_keeps_levels_and_masks_and_refuses_a_level_twice(levels, tmp_path):
    assert levels.fidelity.tolist() == ["ref"] * 8 + ["ref_hard"] * 8
    assert not levels.virial_mask[8:].any() and levels.forces_mask.all()
    D.save(tmp_path / "mf.npz", levels)
    assert D.load(tmp_path / "mf.npz").fidelity.tolist() == levels.fidelity.tolist()
    low = levels.subset(range(8))
    with pytest.raises(InputError, match=r"b.npz \[fidelity\]: level 'ref' is also the level of a.npz"):
        combine_levels([low, low], ["a.npz", "b.npz"])


def test_split_is_by_structure_across_levels(levels):
    # the second level in another order: a structure's copies are found by geometry, not position
    order = np.r_[np.arange(8), 8 + np.random.default_rng(0).permutation(8)]
    ds = levels.subset(order)
    keys = structure_keys(ds)
    assert len(set(keys)) == 8 and len(set(keys[:8])) == 8
    for shuffle in (False, True):
        split = split_by_structure(ds, SplitSettings((0.5, 0.25, 0.25), shuffle=shuffle, seed=3))
        assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(16))
        subset_of = {}
        for name, idx in split.items():
            for i in idx:
                assert subset_of.setdefault(keys[i], name) == name, "one structure in two subsets"
        assert [len(split[k]) for k in ("train", "val", "test")] == [8, 4, 4]  # 4/2/2 structures, 2 levels
    # without repeated structures the split is the configuration split, as before
    low = levels.subset(range(8))
    for k, v in split_indices(8, SplitSettings((0.5, 0.25, 0.25))).items():
        assert split_by_structure(low, SplitSettings((0.5, 0.25, 0.25)))[k].tolist() == v.tolist()


# --- the trainer ------------------------------------------------------------------------------------------

def test_a_level_without_forces_contributes_exactly_zero_force_gradient(levels, model):
    """High-level forces with weight 0 or masked in the data never reach the loss: replacing them
    with garbage leaves the loss and its gradient bit for bit the same. With a force weight they
    do change it (so the test can fail)."""
    s, p = model
    lv = level_of(levels)
    garbage = dataclasses.replace(levels, forces=np.where((levels.fidelity == "ref_hard")[np.repeat(np.arange(16), levels.n_atoms), None],
                                                          np.random.default_rng(1).normal(size=levels.forces.shape) * 50,
                                                          levels.forces))
    masked = dataclasses.replace(levels, forces_mask=levels.fidelity == "ref")  # a level with no forces in the file
    with_forces = dataclasses.replace(MFS, levels=(MFS.levels[0], dataclasses.replace(MFS.levels[1], forces_weight=1.0)))
    batch = np.array([0, 1, 2, 8, 9, 10])

    def trainer(ds, mfs):
        data = prepare(ds, s)
        return multifidelity_trainer(s, data, lv, training_sets(lv, used_labels(data, lv, mfs), np.arange(16), mfs),
                                     mfs, jnp.float64)

    def loss_and_grad(mfs):
        """The loss of a batch and its gradient, one compiled function per set of weights."""
        tr = trainer(levels, mfs)
        slices = tr.loss_batch(batch)[1]
        f = jax.jit(jax.value_and_grad(lambda net, b: tr.loss({**p, "net": net}, b, slices)[0]))
        return lambda ds: (lambda v, g: (float(v), jax.tree_util.tree_leaves(g)))(
            *f(p["net"], trainer(ds, mfs).loss_batch(batch)[0]))

    weight_0, weight_1 = loss_and_grad(MFS), loss_and_grad(with_forces)
    ref = weight_0(levels)
    for value, grad in (weight_0(garbage), weight_1(masked)):
        assert value == ref[0]
        for a, b in zip(grad, ref[1]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert weight_1(garbage)[0] > ref[0] + 1.0


@pytest.mark.slow  # ~65 s: three trainings
def test_correction_ridge_adds_lambda_sum_of_squares_on_the_correction_columns_only(levels):
    """correction_l2 = λ adds λ Σ d² to the training loss, d the correction head's output columns:
    the loss rises by exactly that (computed here from the raw parameters), its gradient by 2λd on
    those columns and by nothing anywhere else (the backbone, the first head's columns)."""
    s = ModelSettings.create(["Ti"], heads=HEADS, head_form="correction", **TINY)
    p = random_params(s)
    lv, lam, batch = level_of(levels), 0.7, np.array([0, 1, 8, 9])
    data = prepare(levels, s)

    def loss_and_grad(mfs):
        tr = multifidelity_trainer(s, data, lv, training_sets(lv, used_labels(data, lv, mfs), np.arange(16), mfs),
                                   mfs, jnp.float64)
        b, slices = tr.loss_batch(batch)
        return jax.value_and_grad(lambda net: tr.loss({**p, "net": net}, b, slices)[0])(p["net"])

    (v0, g0), (v1, g1) = loss_and_grad(MFS), loss_and_grad(dataclasses.replace(MFS, correction_l2=lam))
    d = {k: np.asarray(v["w"])[:, 1] for k, v in p["net"].items() if k.endswith("lin_out")}
    assert len(d) == TINY["n_blocks"] + 1
    np.testing.assert_allclose(v1 - v0, lam * sum(np.sum(x ** 2) for x in d.values()), rtol=1e-10)
    for module, params in g1.items():
        for name, g in params.items():
            expected = np.asarray(g0[module][name])
            if module in d:
                expected = expected.copy()
                expected[:, 1] += 2 * lam * d[module]
            np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-9, atol=1e-12)
    # an independent-heads model has no correction columns: the same λ changes nothing
    ind = ModelSettings.create(["Ti"], heads=HEADS, **TINY)
    assert correction_norm2(ind, p["net"]) == 0.0


def test_batches_take_each_levels_batch_size_from_its_training_subset(levels, model):
    s, _ = model
    data = prepare(levels, s)
    lv = level_of(levels)
    train = training_sets(lv, used_labels(data, lv, MFS), np.r_[0:6, 8:14], MFS)
    assert len(train["ref"]) == 6 and len(train["ref_hard"]) == 3 and set(train["ref_hard"]) <= set(range(8, 14))
    # smaller training sets are subsets of larger ones (a learning curve's nested points)
    big = dataclasses.replace(MFS, levels=(MFS.levels[0], dataclasses.replace(MFS.levels[1], train_size=5)))
    assert set(train["ref_hard"]) <= set(training_sets(lv, used_labels(data, lv, big), np.r_[0:6, 8:14], big)["ref_hard"])
    tr = multifidelity_trainer(s, data, lv, train, MFS, jnp.float64)
    seen = set()
    for step in range(3):
        b = tr.batch(0, step)
        assert set(b[:3]) <= set(train["ref"]) and set(b[3:]) <= set(train["ref_hard"]) and len(b) == 5
        seen |= set(b[3:])
        assert np.array_equal(b, tr.batch(0, step))  # a function of (seed, epoch, step)
    assert seen == set(train["ref_hard"])  # each level cycles through its own subset


@pytest.mark.slow  # three short trainings of a tiny model, ~1 min
def test_multifidelity_training_lowers_the_loss_and_resumes_to_the_same_parameters(levels, model, tmp_path):
    s, p = model
    p = {**p, "net": init_params(s, jax.random.PRNGKey(3), dtype=jnp.float64)["net"]}
    data, lv = prepare(levels, s), level_of(levels)
    split = {"train": np.r_[0:6, 8:14], "val": np.r_[6:8, 14:16], "test": np.zeros(0, int)}
    mfs = dataclasses.replace(MFS, steps_per_epoch=4, lr_start=1e-2, lr_end=3e-3)
    straight = fit_multifidelity(s, p, data, lv, split, mfs, tmp_path / "a.npz", log_csv=tmp_path / "log.csv",
                                 dtype=jnp.float64, progress=lambda m: None)
    assert straight.rows[-1]["train_loss"] < 0.5 * straight.rows[0]["train_loss"]
    assert "val_ref_hard_forces_rmse_meV_A" in straight.rows[0]  # measured, though not trained on
    with pytest.raises(TrainingInterrupted):
        fit_multifidelity(s, p, data, lv, split, mfs, tmp_path / "b.npz", dtype=jnp.float64,
                          progress=lambda m: None, max_epochs_this_run=1)
    resumed = fit_multifidelity(s, p, data, lv, split, mfs, tmp_path / "b.npz", dtype=jnp.float64,
                                progress=lambda m: None)
    assert [r["epoch"] for r in resumed.rows] == [1, 2, 3]
    for a, b in zip(jax.tree_util.tree_leaves(resumed.best_params), jax.tree_util.tree_leaves(straight.best_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
