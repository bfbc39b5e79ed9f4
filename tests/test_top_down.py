"""The top-down trainer: a killed run resumes and ends where an uninterrupted run ends; the
fused scheme runs DFT updates between EXP updates; bad state points are rejected."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusedmlp.model.batch import prepare
from fusedmlp.model.params import init_params
from fusedmlp.model.settings import ModelSettings
from fusedmlp.structures import crystal
from fusedmlp.training import loop
from fusedmlp.training.dft import DFTTrainerSettings, dft_trainer
from fusedmlp.training.difftre import StatePoint
from fusedmlp.training.loop import TrainingInterrupted
from fusedmlp.training.top_down import ExpTrainerSettings, SchemeSettings, fit_top_down, scheme_steps

TINY = dict(embed_size=4, out_embed_size=4, type_embed_size=2, int_embed_size=2, basis_embed_size=2,
            n_blocks=1, n_output_layers=1, aggregation_scale=20.0)


@pytest.fixture(scope="module")
def setup(small_dataset):
    settings = ModelSettings.create(["Ti"], **TINY)
    params = init_params(settings, jax.random.PRNGKey(0), dtype=jnp.float64)
    # init_params zeroes the output layers (a flat energy): small random ones give the first
    # trajectory stresses and stiffnesses to fit the control variates' slopes on
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.05 * rng.normal(size=x.shape) if "lin_out" in jax.tree_util.keystr(path) else x, params)
    at = crystal("Ti", "hcp", 2.95, 1.59, (2, 2, 1))
    sp = StatePoint("323K", 323.0, at.positions, np.asarray(at.cell), np.zeros(len(at), int),
                    np.full(len(at), 47.867), {"C44": 50.0, "pressure": 0.0}, {"C44": 1.0, "pressure": 10.0},
                    born_directions=1)  # C44 reads two entries: two strain directions, one per frame
    ts = ExpTrainerSettings(epochs=2, timestep_fs=2.0, trajectory_ps=0.08, equilibration_ps=0.0,
                            record_every_fs=10.0, batch_frames=4, lr_start=1e-2, lr_end=1e-3)
    data = prepare(small_dataset, settings)
    dts = DFTTrainerSettings(epochs=2, batch_size=2, lr_start=1e-3, lr_end=1e-4)
    trainer = dft_trainer(settings, data, np.arange(4), dts, jnp.float64)
    return settings, params, [sp], ts, (trainer, np.arange(4), np.array([4]))


@pytest.mark.slow  # ~6 min on 2 cores: three short trainings, each compiling third-order derivatives
def test_killed_fused_run_resumes_and_completes(setup, tmp_path):
    settings, params, sps, ts, dft = setup
    scheme = SchemeSettings(("exp", "dft"), "batch", dft_batches_per_update=1)
    whole = fit_top_down(settings, params, sps, ts, scheme, tmp_path / "a.npz", dft=dft,
                         progress=lambda m: None)
    assert len(whole.rows) == 2 and np.isfinite(whole.rows[-1]["323K_C44"])
    assert np.isfinite(whole.rows[-1]["dft_train_loss"])  # DFT batches ran between EXP updates
    with pytest.raises(TrainingInterrupted):
        fit_top_down(settings, params, sps, ts, scheme, tmp_path / "b.npz", dft=dft,
                     progress=lambda m: None, max_epochs_this_run=1)
    resumed = fit_top_down(settings, params, sps, ts, scheme, tmp_path / "b.npz", dft=dft,
                           progress=lambda m: None)
    assert len(resumed.rows) == len(whole.rows)
    # the second epoch ran after the restart, from the checkpointed state, momenta and graph
    # capacities: everything but the timings is identical to the uninterrupted run
    def physics(row):
        return {k: v for k, v in row.items() if k != "seconds" and not k.endswith("steps_per_s")}

    assert [physics(r) for r in resumed.rows] == [physics(r) for r in whole.rows]
    for a, b in zip(jax.tree_util.tree_leaves(resumed.best_params), jax.tree_util.tree_leaves(whole.best_params)):
        np.testing.assert_array_equal(a, b)


def test_state_point_rejects_unknown_targets():
    with pytest.raises(ValueError, match="323K.*unknown targets"):
        StatePoint("323K", 323.0, np.zeros((2, 3)), np.eye(3), np.zeros(2, int), np.ones(2),
                   {"C66": 1.0}, {"C66": 1.0}, symmetry="hexagonal")
    with pytest.raises(ValueError, match="no loss weight"):
        StatePoint("323K", 323.0, np.zeros((2, 3)), np.eye(3), np.zeros(2, int), np.ones(2),
                   {"C44": 1.0}, {}, symmetry="hexagonal")


def test_trajectory_reuse_and_selection_of_end_parameters(setup, tmp_path):
    """With reuse_ess below the frames' effective sample size, the second epoch's update reuses
    the first trajectory (no MD) and says so; the selection scores the parameters each epoch
    ends with, by the EXP loss reweighted to them."""
    import dataclasses

    settings, params, sps, ts, dft = setup
    ts = dataclasses.replace(ts, reuse_ess=0.01, selection_window=2)
    res = fit_top_down(settings, params, sps, ts, SchemeSettings(("exp",), dft_selection_weight=0.0),
                       tmp_path / "r.npz", dft=dft, progress=lambda m: None)
    first, second = res.rows
    assert first["323K_trajectory_updates"] == 1 and np.isfinite(first["323K_md_steps_per_s"])
    assert second["323K_trajectory_updates"] == 2 and "323K_md_steps_per_s" not in second
    # a trajectory's own frames never fit the slopes that correct them, reused or not
    assert [r["323K_born_fit_frames"] for r in res.rows] == [0, 0]
    assert 0.01 <= second["323K_ess_before"] <= 1.0
    # the score is the end-of-epoch loss relative to the first epoch's loss during it
    assert second["exp_loss_rel"] == pytest.approx(second["exp_loss_end"] / first["exp_loss"])
    # without a DFT term the score is its logarithm (a fraction of the EXP loss is worth the same
    # wherever training is), averaged over the selection window
    assert second["score"] == pytest.approx(np.log(second["exp_loss_rel"]))
    assert second["score_mean"] == pytest.approx(np.mean([first["score"], second["score"]]))
    best = min((r["score_mean"], r["epoch"]) for r in res.rows)[1]
    assert res.best_epoch == best
    # the observables of the parameters the first epoch ends with, reweighted from its frames, are
    # what the second epoch's update sees before it steps (same parameters, same reused frames)
    for name in ("C44", "pressure"):
        assert first[f"323K_{name}_end"] == pytest.approx(second[f"323K_{name}"], rel=1e-5)
    assert first["323K_pressure_end"] != pytest.approx(first["323K_pressure"], rel=1e-5)  # the update moved it
    # a fresh trajectory for every update at reuse_ess = 1 (the default): the second epoch runs MD
    fresh = fit_top_down(settings, params, sps, dataclasses.replace(ts, reuse_ess=1.0),
                         SchemeSettings(("exp",)), tmp_path / "f.npz", dft=dft, progress=lambda m: None)
    assert [r["323K_trajectory_updates"] for r in fresh.rows] == [1, 1]
    # the second trajectory's frames are corrected with slopes fitted on the first's (8 frames, 4
    # for each of the two directions C44 reads; 4 are needed)
    assert [r["323K_born_fit_frames"] for r in fresh.rows] == [0, 8]
    assert [r["323K_born_slopes"] for r in fresh.rows] == [False, True]
    assert all(np.isfinite(r["323K_md_steps_per_s"]) for r in fresh.rows)


def test_epoch_runs_the_steps_in_the_order_the_scheme_lists():
    """The parameters an epoch ends with are scored and kept: ``steps`` decides whether the DFT
    step or the EXP updates come last, with epoch and with batch switching."""

    class Exp:  # the two state points' update steps and the score step, by name only
        sps = (None, None)

        def step(self, k, progress):
            return loop.Step(f"exp {k}", "exp", None)

        def score_step(self):
            return loop.Step("exp score", "exp", None)

    def names(*args, **kw):
        return [s.name for s in scheme_steps(Exp(), SchemeSettings(*args, **kw), None, None)(0)]

    assert names(("exp", "dft")) == ["exp 0", "exp 1", "dft epoch", "exp score"]
    assert names(("dft", "exp")) == ["dft epoch", "exp 0", "exp 1", "exp score"]
    assert names(("exp", "dft"), "batch", dft_batches_per_update=2) == [
        "exp 0", "dft batches 0-1", "exp 1", "dft batches 2-3", "exp score"]
    assert names(("dft", "exp"), "batch", dft_batches_per_update=2) == [
        "dft batches 0-1", "exp 0", "dft batches 2-3", "exp 1", "exp score"]
    assert names(("exp",)) == ["exp 0", "exp 1", "exp score"]


def test_dft_penalty_gradient_is_the_derivative_of_its_weighted_batch_loss(setup):
    """A term of the joint scheme's DFT penalty: weight × one batch's loss / the reference, with
    a gradient that matches a central finite difference along a random direction."""
    from fusedmlp.model.params import trainable, with_trainable
    from fusedmlp.training.steps import dft_penalty

    settings, params, sps, ts, (trainer, _, _) = setup
    weight, reference = 3.0, 0.5
    penalty = dft_penalty(trainer, 1, 2, weight, reference, report="dft")
    assert penalty.substeps == 2
    grads, value = penalty.gradient(params, 0, 1)  # term 1: batch 2 of the order, i.e. batch 0
    assert value == pytest.approx(trainer.gradient(params, 0, 0)[0])
    net = trainable(params)
    leaves, tree = jax.tree_util.tree_flatten(net)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    direction = jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])

    def term(h):
        p = with_trainable(params, jax.tree_util.tree_map(lambda x, d: x + h * d, net, direction))
        return weight * trainer.gradient(p, 0, 0)[0] / reference

    h = 1e-5
    fd = (term(h) - term(-h)) / (2 * h)
    ad = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction)))
    assert ad == pytest.approx(fd, rel=1e-5)


def test_joint_switching_descends_the_weighted_sum(setup, small_dataset, tmp_path):
    """Joint switching, steps small enough for first order: at weight 0 an update descends the
    EXP loss alone (reweighted to the parameters it ends with); at a weight that dwarfs the EXP
    loss, it descends the DFT loss."""
    import dataclasses

    settings, params, sps, ts, _ = setup
    trainer = dft_trainer(settings, prepare(small_dataset, settings), np.arange(4),
                          DFTTrainerSettings(epochs=1, batch_size=2, lr_start=1e-4, lr_end=1e-4), jnp.float64)
    dft = (trainer, np.arange(4), np.array([4]))
    ts = dataclasses.replace(ts, epochs=1)

    def run(name, weight):
        scheme = SchemeSettings(("exp", "dft"), "joint", dft_batches_per_update=2, dft_weight=weight,
                                dft_selection_weight=0.0)
        return fit_top_down(settings, params, sps, ts, scheme, tmp_path / f"{name}.npz", dft=dft,
                            progress=lambda m: None)

    zero, heavy = run("z", 0.0), run("h", 1e6)
    assert zero.rows[0]["323K_loss_end"] < zero.rows[0]["323K_loss"]
    assert np.isfinite(zero.rows[0]["dft_train_loss"])
    start = trainer.evaluate(params, dft[1])["loss"]
    heavy_loss = trainer.evaluate(heavy.best_params, dft[1])["loss"]
    assert heavy_loss < start and heavy_loss < trainer.evaluate(zero.best_params, dft[1])["loss"]
