"""Bottom-up trainer: learning, checkpoints and resumption after a kill."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_configs
from fusedmlp.data.dataset import from_configs
from fusedmlp.data.splits import SplitSettings, split_indices
from fusedmlp.model.batch import prepare
from fusedmlp.model.params import EnergyScale, init_params
from fusedmlp.model.settings import ModelSettings
from fusedmlp.training.dft import DFTTrainerSettings
from fusedmlp.training.bottom_up import fit_dft
from fusedmlp.training.loop import TrainingInterrupted

TINY = dict(embed_size=8, out_embed_size=8, type_embed_size=4, int_embed_size=4, basis_embed_size=3,
            n_blocks=1, aggregation_scale=20.0)


@pytest.fixture(scope="module")
def setup(ti_calc):
    ds = from_configs(make_configs(ti_calc, n=12, seed=3))
    split = split_indices(len(ds), SplitSettings(fractions=(0.5, 0.25, 0.25)))
    s = ModelSettings.create(["Ti"], **TINY)
    mu = np.mean(ds.energy / ds.n_atoms)
    params = init_params(s, jax.random.PRNGKey(0), EnergyScale(np.array([0.5]), np.array([[mu]])),
                         dtype=jnp.float64)
    return s, params, prepare(ds, s), split


TS = DFTTrainerSettings(epochs=3, batch_size=2, lr_start=3e-3, lr_end=1e-3, energy_weight=10.0,
                        forces_weight=1.0, virial_weight=1.0, patience=10, seed=1)


def test_training_lowers_the_loss(setup, tmp_path):
    from fusedmlp.training.dft import dft_trainer

    s, params, data, split = setup
    ts = dataclasses.replace(TS, epochs=8, lr_start=1e-2, lr_end=3e-3)
    res = fit_dft(s, params, data, split, ts, tmp_path / "ck.npz", log_csv=tmp_path / "log.csv",
                  dtype=jnp.float64)
    trainer = dft_trainer(s, data, split["train"], ts, jnp.float64)
    before = trainer.evaluate(params, split["train"])
    after = trainer.evaluate(res.best_params, split["train"])
    assert after["loss"] < 0.7 * before["loss"], (before["loss"], after["loss"])
    assert after["forces_rmse"] < before["forces_rmse"]
    assert (tmp_path / "log.csv").read_text().count("\n") == 9


def test_killed_run_resumes_to_the_same_parameters(setup, tmp_path):
    s, params, data, split = setup
    straight = fit_dft(s, params, data, split, TS, tmp_path / "a.npz", dtype=jnp.float64)
    with pytest.raises(TrainingInterrupted):
        fit_dft(s, params, data, split, TS, tmp_path / "b.npz", dtype=jnp.float64, max_epochs_this_run=1)
    resumed = fit_dft(s, params, data, split, TS, tmp_path / "b.npz", dtype=jnp.float64)
    assert [r["epoch"] for r in resumed.rows] == [1, 2, 3]
    assert resumed.best_epoch == straight.best_epoch
    for a, b in zip(jax.tree_util.tree_leaves(straight.best_params), jax.tree_util.tree_leaves(resumed.best_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a finished run started again returns at once with the same result
    again = fit_dft(s, params, data, split, TS, tmp_path / "b.npz", dtype=jnp.float64)
    assert len(again.rows) == 3


@pytest.mark.slow  # ~55 s; resuming is checked by test_killed_run_resumes_to_the_same_parameters
def test_checkpoint_of_other_settings_or_inputs_is_set_aside(setup, tmp_path):
    """A checkpoint resumes only the run that wrote it: after an edited setting or new data the
    retrained job starts from epoch 1 (a forced retraining once resumed a finished run)."""
    s, params, data, split = setup
    with pytest.raises(TrainingInterrupted):
        fit_dft(s, params, data, split, TS, tmp_path / "c.npz", dtype=jnp.float64, max_epochs_this_run=1,
                inputs={"dataset_sha256": "a"})
    messages = []
    with pytest.raises(TrainingInterrupted):  # new data: epoch 1 again, not epoch 2
        fit_dft(s, params, data, split, TS, tmp_path / "c.npz", dtype=jnp.float64, max_epochs_this_run=1,
                inputs={"dataset_sha256": "b"}, progress=messages.append)
    assert "starting afresh" in messages[0] and "epoch 1/3" in messages[1]
    other = fit_dft(s, params, data, split, dataclasses.replace(TS, epochs=2), tmp_path / "c.npz",
                    dtype=jnp.float64, inputs={"dataset_sha256": "b"})
    assert [r["epoch"] for r in other.rows] == [1, 2]


def test_validation_loss_is_the_training_loss_on_those_configurations(setup):
    """Model selection scores with the loss training minimises: the weighted mean squared errors,
    recomputed here by hand from the trainer's predictions."""
    from fusedmlp.training.dft import dft_trainer

    s, params, data, split = setup
    trainer = dft_trainer(s, data, split["train"], TS, jnp.float64)
    idx = np.r_[split["val"], split["test"]]
    u, f, w = trainer.predict(params, idx)
    n = data.n_atoms[idx]
    le = np.mean(((u - data.energy[idx]) / n)[data.energy_mask[idx]] ** 2)
    lf = np.mean(np.concatenate([(fk - data.forces[i, :len(fk)]).ravel() for fk, i in zip(f, idx)]) ** 2)
    lw = np.mean(((w - data.virial[idx]) / n[:, None, None])[data.virial_mask[idx]] ** 2)
    want = TS.energy_weight * le + TS.forces_weight * lf + TS.virial_weight * lw
    assert trainer.evaluate(params, idx)["loss"] == pytest.approx(want, rel=1e-10)


def test_energy_offset_splits_the_rmse(setup):
    """RMSE² = offset² + RMSE² about the mean error; a uniform shift per atom is all offset."""
    from fusedmlp.model.batch import error_metrics
    data = setup[2]
    idx = np.arange(len(data))
    n = data.n_atoms[idx]
    f = [data.forces[i, :n[k]] for k, i in enumerate(idx)]
    shifted = error_metrics(data, idx, data.energy[idx] + 0.02 * n, f, data.virial[idx])
    assert shifted["energy_offset"] == pytest.approx(0.02, rel=1e-6)
    assert shifted["energy_rmse_no_offset"] == pytest.approx(0.0, abs=1e-9)
    noise = np.random.default_rng(0).normal(0.0, 0.01, len(idx)) + 0.005
    m = error_metrics(data, idx, data.energy[idx] + noise * n, f, data.virial[idx])
    assert m["energy_offset"] == pytest.approx(np.mean(noise))
    assert m["energy_rmse"] ** 2 == pytest.approx(m["energy_offset"] ** 2 + m["energy_rmse_no_offset"] ** 2)
    assert m["forces_rmse"] == 0.0


def test_errors_by_type_recover_a_shift_per_phase_and_partition_the_totals(setup):
    """Energies shifted by a different amount per configuration type: each type's offset is its
    shift, and the types' rows recombine (weighted by their labels) into the totals."""
    from fusedmlp.evaluation.errors import errors_by_type
    from fusedmlp.model.batch import error_metrics
    data = setup[2]
    idx = np.arange(len(data))
    n = data.n_atoms[idx]
    types = np.array(["hcp/md", "bcc/strained", "liquid/md"])[idx % 3]
    shift = {"hcp/md": -0.004, "bcc/strained": 0.025, "liquid/md": 0.010}
    rng = np.random.default_rng(1)
    u = data.energy[idx] + np.array([shift[t] for t in types]) * n
    f = [data.forces[i, :n[k]] + rng.normal(0.0, 0.05 * (1 + k % 3), (n[k], 3)) for k, i in enumerate(idx)]
    rows = {r["config_type"]: r for r in errors_by_type(data, types, idx, u, f, data.virial[idx], "m")}
    assert sorted(rows) == sorted(shift)
    for t, d in shift.items():
        assert rows[t]["energy_offset_meV_atom"] == pytest.approx(1e3 * d)
        assert rows[t]["energy_rmse_meV_atom"] == pytest.approx(1e3 * abs(d))
        assert rows[t]["configurations"] == int(np.sum(types == t))
    total = error_metrics(data, idx, u, f, data.virial[idx])
    counts = {t: (np.sum(types == t), 3 * np.sum(n[types == t])) for t in shift}
    mean = sum(c * rows[t]["energy_offset_meV_atom"] for t, (c, _) in counts.items()) / len(idx)
    assert mean == pytest.approx(1e3 * total["energy_offset"])
    msf = sum(k * rows[t]["forces_rmse_meV_A"] ** 2 for t, (_, k) in counts.items()) / sum(k for _, k in counts.values())
    assert np.sqrt(msf) == pytest.approx(1e3 * total["forces_rmse"])


def test_learning_rate_decays_over_the_steps_per_epoch_the_caller_takes(setup):
    """A scheme that takes twice a data pass's batches per epoch (``steps_per_epoch``) decays the
    rate over twice the steps: with the decay ratio squared it follows the default trainer's
    schedule step for step (a trainer that ignored ``steps_per_epoch`` would decay faster)."""
    from fusedmlp.training.dft import dft_trainer

    s, params, data, split = setup
    default = dft_trainer(s, data, split["train"], TS, jnp.float64)
    ts = dataclasses.replace(TS, lr_end=TS.lr_start * (TS.lr_end / TS.lr_start) ** 2)
    double = dft_trainer(s, data, split["train"], ts, jnp.float64, steps_per_epoch=2 * default.n_batches)

    def run(trainer, steps=4):
        st = trainer.init(params)
        for b in range(steps):
            st, _ = trainer.step(st, 0, b)
        return jax.tree_util.tree_leaves(st.params)

    ref = run(default)
    moved = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(ref, jax.tree_util.tree_leaves(params)))
    diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(ref, run(double)))
    assert moved > 1e-3 and diff < 1e-9 * moved, (moved, diff)
