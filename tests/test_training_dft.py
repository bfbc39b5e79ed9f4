"""Bottom-up trainer: learning, checkpoints and resumption after a kill."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_configs
from fusedmlp.data.dataset import from_configs
from fusedmlp.data.splits import SplitSettings, split_indices
from fusedmlp.model.potential import EnergyScale, ModelSettings, init_params
from fusedmlp.training.dft import DFTTrainerSettings, prepare
from fusedmlp.training.pretrain import TrainingInterrupted, fit_dft

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
    import dataclasses

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


def test_checkpoint_from_other_settings_is_refused(setup, tmp_path):
    s, params, data, split = setup
    with pytest.raises(TrainingInterrupted):
        fit_dft(s, params, data, split, TS, tmp_path / "c.npz", dtype=jnp.float64, max_epochs_this_run=1)
    import dataclasses
    with pytest.raises(ValueError, match="other trainer settings"):
        fit_dft(s, params, data, split, dataclasses.replace(TS, lr_start=1e-2), tmp_path / "c.npz",
                dtype=jnp.float64)
