"""The `pretrain` job: from a dataset and its split to a model file, a log and a figure."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..data import dataset as D
from ..data.splits import load_split
from ..model.batch import prepare
from ..model.dimenet import species_index
from ..model.file import save_model
from ..model.params import EnergyScale, fit_energy_scale, init_params
from ..model.repulsion import approach_profile, closest_pair, hole_depth
from ..model.settings import dtype, model_settings
from . import loop
from .dft import dft_trainer
from .steps import dft_epoch_step, dft_state, validation_selection
from .settings import dft_trainer_settings

log = logging.getLogger(__name__)


def pretrain(cfg: dict, dataset_path, split_path, model_path, log_csv, checkpoint_path,
             figure_path=None, max_epochs_this_run=None):
    t0 = time.time()
    ds = D.load(dataset_path, allowed_species=cfg["species"])
    split = load_split(split_path, len(ds))
    settings = model_settings(cfg)
    log.info("dataset %s: %d configurations (%d train, %d val, %d test)", dataset_path, len(ds),
             len(split["train"]), len(split["val"]), len(split["test"]))
    data = prepare(ds, settings, progress=log.info)
    train = split["train"]
    # mean number of neighbours within the cutoff: the aggregation normalisation of the network
    settings, pair = data_derived(settings, data, train)
    if settings.repulsion is not None:
        log.info("short-range repulsion below %.2f Å (shortest training distance %.3f Å), "
                 "%.1f eV at half that", settings.repulsion.r_inner, pair.distance, settings.repulsion.energy)
    sub = ds.subset(train)
    counts = np.stack([np.bincount(species_index(sub.species[sub.atoms_slice(i)], settings.species),
                                   minlength=len(settings.species)) for i in range(len(sub))])
    per_atom_forces = np.repeat(sub.forces_mask, sub.n_atoms)
    force_rms = float(np.sqrt(np.mean(sub.forces[per_atom_forces] ** 2))) if per_atom_forces.any() else 1.0
    scale, mu = fit_energy_scale(counts[sub.energy_mask], sub.energy[sub.energy_mask], force_rms)
    log.info("model: %s; neighbour capacity %d, mean neighbours %.2f; energy scale %.3f eV, "
             "reference energies %s eV/atom", settings.dimenet, data.capacity,
             settings.dimenet.aggregation_scale, scale, np.round(mu, 4).tolist())
    params = init_params(settings, jax.random.PRNGKey(cfg["model"]["seed"]),
                         EnergyScale(np.array([scale]), mu[None, :]), dtype=dtype(cfg))
    ts = dft_trainer_settings(cfg)
    inputs = {"dataset_sha256": D.file_sha256(dataset_path), "split_sha256": D.file_sha256(split_path),
              "model": settings.to_dict(), "model_seed": cfg["model"]["seed"]}
    result = fit_dft(settings, params, data, split, ts, checkpoint_path, log_csv=log_csv, dtype=dtype(cfg),
                     inputs=inputs, progress=log.info, max_epochs_this_run=max_epochs_this_run)
    save_model(model_path, settings, result.best_params, metadata={
        "trained_on": str(dataset_path), "dataset_sha256": D.file_sha256(dataset_path),
        "split_sha256": inputs["split_sha256"],
        "scheme": "pretrained (bottom-up)", "best_epoch": result.best_epoch,
        "epochs_run": len(result.rows), "stopped_early": result.stopped_early,
        "trainer": dataclasses.asdict(ts),
        "pair_approach": pair_approach(settings, result.best_params, ds, train, pair)})
    Path(checkpoint_path).unlink(missing_ok=True)  # done: a later run of this job starts afresh
    if figure_path is not None:
        from ..plots import training_curve
        training_curve(result.rows, figure_path, title="Bottom-up pre-training")
    log.info("best epoch %d of %d; wrote %s (%.1f min)", result.best_epoch, len(result.rows),
             model_path, (time.time() - t0) / 60)
    return result


def data_derived(settings, data, train):
    """``settings`` with what the training configurations ``train`` decide: the mean number of
    neighbours within the cutoff (the network's aggregation normalisation) and, with a repulsion
    prior, its reach (the shortest training distance, rounded down: the prior acts only below the
    data). Returns (settings, the closest training pair: ``ClosestPair``, index into ``train``)."""
    nbrs = data.neighbor_mask[train].sum(-1)[data.atom_mask[train]]
    settings = dataclasses.replace(settings, dimenet=dataclasses.replace(
        settings.dimenet, aggregation_scale=round(float(nbrs.mean()), 2)))
    pair = closest_pair(data.positions[train], data.box[train], data.neighbors[train],
                        data.shifts[train], data.neighbor_mask[train])
    if settings.repulsion is None:
        return settings, pair
    return dataclasses.replace(settings, repulsion=dataclasses.replace(
        settings.repulsion, r_inner=math.floor(100 * pair.distance) / 100)), pair


def pair_approach(settings, params, ds, train, pair, step_A: float = 0.02, warn_ev: float = 0.025) -> dict:
    """The trained model's energy as the closest pair of the training data is pushed together,
    from its distance to half of it, every other atom fixed: the region below the data where only
    the network's extrapolation and the prior act. A fall on the way in is a hole that MD can
    fall into (the demo's network with a weak prior held a pair at 1.8 Å in every 2000 K melt);
    one deeper than ``warn_ev`` (k_BT at 290 K) is logged as a warning. ``pair`` is the closest
    pair of ``data_derived`` (its index counts within ``train``). Returns the profile for the
    model file's metadata."""
    from ..model.api import Potential

    index = int(train[pair.index])
    atoms = ds.atoms_slice(index)
    pot = Potential(settings, params)
    r = np.arange(pair.distance, 0.5 * pair.distance, -step_A)
    e = approach_profile(lambda x: pot(x, ds.box[index], ds.species[atoms])[0], ds.positions[atoms], pair, r)
    e = e - e[0]
    depth, at = hole_depth(r, e)
    prior = (f"the repulsion prior (model.repulsion_ev {settings.repulsion.energy:g} eV)"
             if settings.repulsion is not None else "no repulsion prior (model.repulsion_ev 0)")
    if depth > warn_ev:
        log.warning("pair approach (training configuration %d, atom %d): the energy falls by %.3f eV on the way "
                    "in, to %.2f Å, below the data's shortest distance %.2f Å: a hole that hot MD can fall into, "
                    "with %s; a stronger prior closes it", index, pair.i, depth, at, pair.distance, prior)
    else:
        log.info("pair approach (training configuration %d, atom %d): the energy rises by %.2f eV from %.2f to "
                 "%.2f Å with no fall on the way in (deepest %.3f eV), with %s", index, pair.i, e[-1],
                 r[0], r[-1], depth, prior)
    return {"configuration": index, "atom": pair.i, "r_A": np.round(r, 4).tolist(),
            "energy_eV": np.round(e, 5).tolist(), "hole_eV": depth, "hole_at_A": at}


def fit_dft(settings, params, data, split: dict, ts, checkpoint_path, log_csv=None, dtype=jnp.float32,
            inputs: dict | None = None, progress=log.info, max_epochs_this_run=None) -> loop.FitResult:
    """Bottom-up training: one DFT epoch per epoch, the parameters with the lowest validation
    loss kept (the training loss selects when there is no validation split). ``inputs`` (checksums
    of the data, the model) join the settings in the checkpoint's key."""
    trainer = dft_trainer(settings, data, split["train"], ts, dtype)
    select_on = split["val"] if len(split["val"]) else split["train"]

    def describe(row):
        return (f"train {row['train_loss']:.4g}  val {row['val_loss']:.4g}  | E {row['val_energy_rmse_meV_atom']:.2f} "
                f"meV/atom  F {row['val_forces_rmse_meV_A']:.1f} meV/Å  W {row['val_virial_rmse_meV_atom']:.1f} meV/atom")

    step = dft_epoch_step(trainer, report="train_loss")
    return loop.fit(params, {"dft": dft_state(trainer, params)}, lambda epoch: [step],
                    validation_selection(trainer, select_on), loop.LoopSettings(ts.epochs, ts.patience),
                    checkpoint_path, {"trainer": dataclasses.asdict(ts), "inputs": inputs or {}},
                    log_csv=log_csv, describe=describe,
                    progress=progress, max_epochs_this_run=max_epochs_this_run)
