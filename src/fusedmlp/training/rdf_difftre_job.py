"""The `train_rdf_difftre` job: the alternative to IBI for the same target (``ibi.models.<name>``
with ``method: difftre``): the whole network trained by DiffTRe on g(r) at the IBI's state point,
with the IBI's sampling, so the two methods are compared on one footing.

IBI adds a pair term and leaves the network alone; DiffTRe changes every parameter of the
network through the reweighted g(r) (Thaler & Zavadlav 2021's RDF target), so what it does to
the crystal and to the reference errors is the comparison's question. EXP-only: no DFT step.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses, atomic_numbers

from ..data import dataset as D
from ..model.dimenet import species_index
from ..model.energy import energy_fn
from ..model.file import load_model, save_model
from ..model.settings import dtype, model_settings
from .difftre import StatePoint
from .ibi import load_rdf_target, melt_liquid, target_on_bins
from .ibi_job import density_per_a3, state_point_settings
from .top_down import ExpTrainerSettings, SchemeSettings, fit_top_down

log = logging.getLogger(__name__)


def rdf_trainer_settings(cfg: dict, s) -> ExpTrainerSettings:
    """The DiffTRe settings at the state point ``s``: epochs and rates from ``ibi.difftre``, the
    IBI's trajectories (``ibi.sampling``, time step, friction, seed), the optimiser's moments,
    trajectory reuse and selection from ``difftre``."""
    d, r = cfg["difftre"], cfg["ibi"]["difftre"]
    ts = ExpTrainerSettings(epochs=r["epochs"], lr_start=r["lr_start"], lr_end=r["lr_end"], b1=d["b1"], b2=d["b2"],
                            patience=d["patience"], timestep_fs=s.timestep_fs, friction_per_ps=s.friction_per_ps,
                            trajectory_ps=s.equilibration_ps + s.production_ps, equilibration_ps=s.equilibration_ps,
                            record_every_fs=s.record_every_fs, seed=s.seed, reuse_ess=d["reuse_ess"],
                            selection_window=d["selection_window"])
    return dataclasses.replace(ts, batch_frames=ts.frames_kept)  # energies only: one batch


def train_rdf_difftre(cfg: dict, name: str, model_in, target_rdf, target_state, model_out, log_csv,
                      checkpoint_path, figure_path=None, max_epochs_this_run=None):
    t0 = time.time()
    settings, params, meta = load_model(model_in, expected=model_settings(cfg))
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype(cfg)), params)
    target = load_rdf_target(target_rdf)
    s = state_point_settings(cfg, name, density_per_a3(cfg, name, target_state))
    symbol = cfg["species"][0]
    positions, momenta, box, numbers = melt_liquid(energy_fn(settings), settings.dimenet.cutoff, settings.species,
                                                   s, symbol, params, progress=log.info)
    _, _, r_bins = s.rdf_bins(box)
    g_target, r_range = target_on_bins(target, r_bins, s.r_range)
    sp = StatePoint(name=f"{s.temperature:g}K", temperature=s.temperature, positions=positions, box=box,
                    species=species_index(numbers, settings.species),
                    masses=np.full(len(numbers), atomic_masses[atomic_numbers[symbol]]),
                    targets={"rdf": (r_bins, g_target)}, weights={"rdf": 1.0}, momenta=momenta)
    ts = rdf_trainer_settings(cfg, s)
    log.info("DiffTRe on g(r) %s: target %s, %g K, %.5f atoms/Å³, %d atoms, %d bins to %.2f Å (range used "
             "%.2f-%.2f Å), %d frames per trajectory", name, target.source, s.temperature, s.density_per_a3,
             len(numbers), len(r_bins), r_bins[-1] + 0.5 * (r_bins[1] - r_bins[0]), *r_range, ts.frames_kept)
    inputs = {"start_model_sha256": D.file_sha256(model_in), "target_sha256": D.file_sha256(target_rdf),
              "state_point": dataclasses.asdict(s)}
    scheme = SchemeSettings(steps=("exp",), dft_selection_weight=0.0)
    result = fit_top_down(settings, params, [sp], ts, scheme, checkpoint_path, log_csv=log_csv, inputs=inputs,
                          progress=log.info, max_epochs_this_run=max_epochs_this_run)
    # the loss is the mean square of g − g_target over the bins used (weight 1): its root is the
    # RDF error of the IBI's log, here reweighted from each epoch's frames
    rmse = [float(np.sqrt(r[f"{sp.name}_loss"])) for r in result.rows]
    save_model(model_out, settings, result.best_params, metadata={
        "rdf_difftre": name, "started_from": str(model_in), "target": target.source,
        "temperature_K": s.temperature, "density_per_A3": s.density_per_a3, "best_epoch": result.best_epoch,
        "epochs_run": len(result.rows), "rdf_rmse": rmse, "exp_trainer": dataclasses.asdict(ts),
        "pretrained_metadata": meta})
    Path(checkpoint_path).unlink(missing_ok=True)  # done: a later run of this job starts afresh
    if figure_path is not None:
        from ..plots import rdf_difftre_curve
        rdf_difftre_curve(result.rows, sp.name, figure_path,
                          title=f"{name}: DiffTRe toward {Path(target.source).name} at {s.temperature:g} K")
    log.info("DiffTRe on g(r) %s: RDF error %s; kept the parameters after %d epochs; wrote %s (%.1f min)", name,
             " → ".join(f"{e:.4f}" for e in rmse), result.best_epoch, model_out, (time.time() - t0) / 60)
    return result
