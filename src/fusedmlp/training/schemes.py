"""The `train_sequential` and `train_fused` jobs: state points from the experimental tables, the
pre-trained model as the start, the top-down trainer, a model file, a log and a figure."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses, atomic_numbers

from .. import experiment
from ..elastic import HEXAGONAL_CONSTANTS
from ..data import dataset as D
from ..data.splits import load_split
from ..model.batch import prepare
from ..model.dimenet import species_index
from ..model.file import load_model, save_model
from ..model.settings import ModelSettings, dtype, model_settings
from ..structures import crystal
from .dft import dft_trainer
from .difftre import PRESSURE_TARGETS, SLOPE_TARGETS, StatePoint
from .settings import dft_trainer_settings
from .top_down import ExpTrainerSettings, SchemeSettings, fit_top_down

log = logging.getLogger(__name__)

def exp_trainer_settings(cfg: dict) -> ExpTrainerSettings:
    d = cfg["difftre"]
    return ExpTrainerSettings(**{f.name: d[f.name] for f in dataclasses.fields(ExpTrainerSettings)})


def fused_dft_settings(cfg: dict, epochs: int):
    """The DFT trainer inside a top-down scheme: the pre-training's loss, with the weights the
    ``fused`` section overrides (where experiment measures the stress, a scheme may trust the
    DFT virials less than pre-training did), at the ``fused`` learning rates."""
    f = cfg["fused"]
    weights = {k: f[k] for k in ("energy_weight", "forces_weight", "virial_weight") if f.get(k) is not None}
    return dataclasses.replace(dft_trainer_settings(cfg), lr_start=f["dft_lr_start"], lr_end=f["dft_lr_end"],
                               epochs=epochs, **weights)


def state_point_record(sp: StatePoint) -> dict:
    """What of a state point decides its updates (a checkpoint's key)."""
    return dict(name=sp.name, box=np.asarray(sp.box).tolist(), targets=sp.targets, weights=sp.weights,
                elastic_constants=sp.elastic_constants, born_directions=sp.born_directions,
                **({} if sp.expansion is None else {"expansion": np.asarray(sp.expansion).tolist()}))


def state_points(cfg: dict, settings: ModelSettings) -> list[StatePoint]:
    """hcp boxes at the experimental lattice constants of each temperature, with the
    experimental elastic constants, zero pressure and zero pressure slopes along the measured
    expansion as targets."""
    d = cfg["difftre"]
    symbol = cfg["species"][0]
    lat_path, el_path = cfg["experiment"]["lattice_constants"], cfg["experiment"]["elastic_constants"]
    lat, el = experiment.lattice_constants(lat_path), experiment.elastic_constants(el_path)
    n_el = sum(t in HEXAGONAL_CONSTANTS for t in d["targets"])
    out = []
    for t in d["temperatures"]:
        a, c = (experiment.at_temperature(lat, lat_path, col, t, "difftre.temperatures") for col in ("a_A", "c_A"))
        expansion = (experiment.hcp_expansion_at(lat, lat_path, t, "difftre.temperatures")
                     if any(name in SLOPE_TARGETS for name in d["targets"]) else None)
        atoms = crystal(symbol, d["structure"], a, c / a, d["supercell"])
        targets, weights = {}, {}
        for name in d["targets"]:
            if name in PRESSURE_TARGETS:
                targets[name], weights[name] = 0.0, d["pressure_weight"]
            elif name in SLOPE_TARGETS:
                targets[name], weights[name] = 0.0, d["pressure_slope_weight"]
            else:
                targets[name] = experiment.at_temperature(el, el_path, f"{name}_GPa", t, "difftre.temperatures")
                weights[name] = d["elastic_weight"] / n_el  # the mean over the constants
        out.append(StatePoint(name=f"{t:g}K", temperature=float(t), positions=atoms.positions,
                              box=np.asarray(atoms.cell), species=species_index(atoms.numbers, settings.species),
                              masses=np.full(len(atoms), atomic_masses[atomic_numbers[symbol]]),
                              targets=targets, weights=weights, symmetry="hexagonal",
                              elastic_constants=d["elastic_constants"], born_directions=d["born_directions"],
                              expansion=expansion))
    return out


def train_scheme(cfg: dict, scheme: str, model_in, dataset_path, split_path, model_out, log_csv,
                 checkpoint_path, figure_path=None, max_epochs_this_run=None):
    t0 = time.time()
    settings, params, meta = load_model(model_in, expected=model_settings(cfg))
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype(cfg)), params)
    sps = state_points(cfg, settings)
    ts = exp_trainer_settings(cfg)
    f, sc = cfg["fused"], cfg["schemes"][scheme]
    sch = SchemeSettings(steps=tuple(sc["steps"]), switching=f["switching"],
                         dft_batches_per_update=f["dft_batches_per_update"], dft_weight=f["dft_weight"],
                         dft_selection_weight=sc["selection_dft_weight"])
    for sp in sps:
        log.info("state point %s: %d atoms, box lengths %s Å, targets %s", sp.name, len(sp.positions),
                 np.round(np.linalg.norm(sp.box, axis=1), 4).tolist(),
                 {k: round(v, 2) for k, v in sp.targets.items()})
    ds = D.load(dataset_path, allowed_species=cfg["species"])
    split = load_split(split_path, len(ds))
    data = prepare(ds, settings, progress=log.info)
    dts = fused_dft_settings(cfg, ts.epochs)
    # the DFT learning rate reaches dft_lr_end after the DFT steps the scheme takes
    trainer = dft_trainer(settings, data, split["train"], dts, dtype(cfg),
                          steps_per_epoch=sch.dft_batches_per_epoch(len(sps)))
    inputs = {"start_model_sha256": D.file_sha256(model_in), "dataset_sha256": D.file_sha256(dataset_path),
              "split_sha256": D.file_sha256(split_path), "dft_trainer": dataclasses.asdict(dts),
              "state_points": [state_point_record(sp) for sp in sps]}
    result = fit_top_down(settings, params, sps, ts, sch, checkpoint_path,
                          dft=(trainer, split["train"], split["val"]), log_csv=log_csv, inputs=inputs,
                          progress=log.info, max_epochs_this_run=max_epochs_this_run)
    save_model(model_out, settings, result.best_params, metadata={
        "scheme": scheme, "started_from": str(model_in), "trained_on_dft": str(dataset_path),
        "state_points": [dict(name=sp.name, temperature=sp.temperature, targets=sp.targets) for sp in sps],
        "best_epoch": result.best_epoch, "epochs_run": len(result.rows),
        "stopped_early": result.stopped_early, "exp_trainer": dataclasses.asdict(ts),
        "scheme_settings": dataclasses.asdict(sch),
        "pretrained_metadata": meta})
    Path(checkpoint_path).unlink(missing_ok=True)  # done: a later run of this job starts afresh
    if figure_path is not None:
        from ..plots import top_down_curve
        top_down_curve(result.rows, sps, figure_path, title=f"{scheme} training (DiffTRe)")
    log.info("selected the parameters after %d epochs of %d; wrote %s (%.1f min)", result.best_epoch,
             len(result.rows), model_out, (time.time() - t0) / 60)
    return result

