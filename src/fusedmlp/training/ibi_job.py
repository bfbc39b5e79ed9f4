"""The `train_ibi` job: the pre-trained model plus a pair correction fitted by Iterative Boltzmann
Inversion (``training.ibi``) to a target g(r) at one state point, a model file, the per-iteration
log, g(r) and correction tables, and a figure. The `validate_ibi` job measures what the
iterations cannot: the start model and the kept correction each sampled for ``ibi.validation_ps``
at the state point, their RDF errors with noise, and a figure.

A target is a reference level (its g(r) and zero-pressure density measured at the state point by
the `ibi_target` job, ``evaluation.jobs.ibi_reference_target``: a known answer) or a user table of
``r_A, g`` (a measurement; the state point's density is then configuration).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .. import units
from ..data import dataset as D
from ..io import InputError
from ..model.file import load_model, save_model
from ..model.pair_correction import PairCorrectionSettings
from ..model.params import with_pair_correction
from ..model.settings import dtype, model_settings
from ..tables import write_table
from .ibi import (IBISettings, UpdateSettings, correction_curve, fit_ibi, keeps_mean, kept_correction,
                  load_rdf_target, model_trainer)

log = logging.getLogger(__name__)


def is_reference_target(cfg: dict, name: str) -> bool:
    """Whether IBI model ``name`` targets a reference level (else a table file)."""
    return cfg["ibi"]["models"][name]["target"] in cfg["reference"]["levels"]


def state_point(cfg: dict, name: str) -> tuple[float, float | None]:
    """(temperature K, density g/cm³ or None: the reference target's own) of IBI model ``name``."""
    m, i = cfg["ibi"]["models"][name], cfg["ibi"]
    t = m["temperature"] if m["temperature"] is not None else i["temperature"]
    rho = m["density_g_cm3"] if m["density_g_cm3"] is not None else i["density_g_cm3"]
    return float(t), (None if rho is None else float(rho))


def correction_settings(cfg: dict) -> PairCorrectionSettings:
    c = cfg["ibi"]["correction"]
    n = int(round((c["cutoff"] - c["r_min"]) / c["spacing_A"])) + 1
    return PairCorrectionSettings(r_min=float(c["r_min"]), cutoff=float(c["cutoff"]), n_points=n)


def state_point_settings(cfg: dict, name: str, density_per_a3: float) -> IBISettings:
    """The state point, its liquid, trajectories and g(r) bins of model ``name`` (what IBI and
    DiffTRe on g(r) share; the IBI update keeps its defaults here, see ``ibi_settings``)."""
    i = cfg["ibi"]
    t, _ = state_point(cfg, name)
    smp = i["sampling"]
    return IBISettings(temperature=t, density_per_a3=density_per_a3, supercell=tuple(i["supercell"]),
                       melt_temperature=i["melt_temperature"], melt_ps=i["melt_ps"], timestep_fs=i["timestep_fs"],
                       friction_per_ps=i["friction_per_ps"], equilibration_ps=smp["equilibration_ps"],
                       production_ps=smp["production_ps"], record_every_fs=smp["record_every_fs"],
                       rdf_r_max=i["rdf_r_max"], rdf_bin_A=i["rdf_bin_A"], r_range=tuple(i["r_range"]),
                       seed=i["seed"])


def ibi_settings(cfg: dict, name: str, density_per_a3: float) -> IBISettings:
    """``state_point_settings`` with the IBI update, its iterations and tolerance."""
    i = cfg["ibi"]
    p = i["pressure_correction"]
    upd = UpdateSettings(alpha=i["alpha"], alpha_ramp=i["alpha_ramp"], g_floor=i["g_floor"],
                         smoothing_passes=i["smoothing_passes"], max_update_kT=i["max_update_kT"],
                         pressure_correction=p["enabled"], target_pressure_gpa=p["target_gpa"],
                         pressure_scale_per_gpa=p["scale_per_gpa"], pressure_max_kT=p["max_kT"])
    return dataclasses.replace(state_point_settings(cfg, name, density_per_a3), iterations=i["iterations"],
                               tolerance=i["tolerance"], average_last=i["average_last"], update=upd)


def density_per_a3(cfg: dict, name: str, target_state) -> float:
    """Atoms per Å³ of the NVT box: the configured density, else the reference target's own
    (``target_state``, the `ibi_target` job's summary)."""
    _, rho = state_point(cfg, name)
    mass = _mass(cfg)
    if rho is not None:
        return rho / (mass * units.AMU_PER_A3_TO_G_CM3)
    if target_state is None:
        raise InputError(f"config ibi.models.{name}", "density_g_cm3",
                         "a table target needs the state point's density (ibi.models.<name>.density_g_cm3 "
                         "or ibi.density_g_cm3)")
    return float(pd.read_csv(target_state)["density_per_A3"].iloc[0])


def _mass(cfg) -> float:
    from ase.data import atomic_masses, atomic_numbers
    return float(atomic_masses[atomic_numbers[cfg["species"][0]]])


def validation_runs(cfg: dict, s: IBISettings) -> int:
    """Trajectories of one iteration's length that cover ``ibi.validation_ps`` (0: no validation)."""
    return math.ceil(round(cfg["ibi"]["validation_ps"] / s.production_ps, 9))


def validate(trainer, models: dict, runs: int, float_dtype) -> tuple[pd.DataFrame, dict]:
    """Each of ``models`` (name: params; the first is the start model) sampled for ``runs``
    trajectories at the state point from the start model's melt (``IBITrainer.validate``): a
    table of RDF error, noise and the error beyond it per model, and g(r) with its standard error
    per model."""
    rows, gs = [], {}
    liquid = trainer.melt(next(iter(models.values())), trainer.init(float_dtype))
    for part, (label, params) in enumerate(models.items(), start=2):
        report, g, g_err = trainer.validate(params, liquid, runs, part)
        rows.append({"model": label, **report})
        gs[label] = (g, g_err)
    return pd.DataFrame(rows), gs


def train_ibi(cfg: dict, name: str, model_in, target_rdf, target_state, model_out, log_csv, rdf_csv,
              correction_csv, checkpoint_path, figure_path=None, max_epochs_this_run=None):
    t0 = time.time()
    settings, params, meta = load_model(model_in, expected=model_settings(cfg))
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype(cfg)), params)
    settings, params = with_pair_correction(settings, params, correction_settings(cfg))
    target = load_rdf_target(target_rdf)
    s = ibi_settings(cfg, name, density_per_a3(cfg, name, target_state))
    symbol = cfg["species"][0]
    trainer = model_trainer(settings, target, s, symbol, progress=log.info)
    log.info("IBI %s: target %s, %g K, %.5f atoms/Å³ (%.3f g/cm³), %d atoms, RDF to %.2f Å in %d bins, "
             "range used %.2f-%.2f Å, correction %.2f-%.2f Å on %d points", name, target.source, s.temperature,
             s.density_per_a3, s.density_per_a3 * _mass(cfg) * units.AMU_PER_A3_TO_G_CM3, len(trainer.masses),
             trainer.r_max, trainer.n_bins, *trainer.r_range, settings.pair_correction.r_min,
             settings.pair_correction.cutoff, settings.pair_correction.n_points)
    inputs = {"start_model_sha256": D.file_sha256(model_in), "target_sha256": D.file_sha256(target_rdf)}
    res = fit_ibi(trainer, params, checkpoint_path, log_csv=log_csv, inputs=inputs, progress=log.info,
                  max_epochs_this_run=max_epochs_this_run)
    n = len(res.rows)
    state = res.states["ibi"]
    kept, kept_is = kept_correction(params, res, s)
    averaged = keeps_mean(s, res.rows)  # a mean of tables, not one iteration's
    log.info("IBI %s: keeping %s", name, kept_is)
    save_model(model_out, settings, kept, metadata={
        "ibi": name, "started_from": str(model_in), "target": target.source, "temperature_K": s.temperature,
        "density_per_A3": s.density_per_a3, "kept": kept_is, "iterations_run": n,
        "rdf_rmse": [r["rdf_rmse"] for r in res.rows], "ibi_settings": dataclasses.asdict(s), "pretrained_metadata": meta})
    # g(r) of every iteration beside the target, and the correction each sampled with
    g = np.asarray(state.rdf)[:n]
    write_table(pd.DataFrame({"r_A": trainer.r_bins, "g_target": trainer.g_target,
                              **{f"g_iter{k + 1}": g[k] for k in range(n)}}), csv_path=rdf_csv)
    grid = settings.pair_correction.grid
    tables = np.asarray(state.tables)[:n + 1]
    curves = {f"v_iter{k + 1}_eV": correction_curve(settings, {"pair": {"u": jnp.asarray(tables[k])}}, grid)
              for k in range(n)}
    curves["v_after_last_update_eV"] = correction_curve(settings, {"pair": {"u": jnp.asarray(tables[n])}}, grid)
    curves["v_selected_eV"] = correction_curve(settings, kept, grid)
    write_table(pd.DataFrame({"r_A": grid, **curves}), csv_path=correction_csv)
    Path(checkpoint_path).unlink(missing_ok=True)  # done: a later run of this job starts afresh
    if figure_path is not None:
        from ..plots import ibi_figure
        ibi_figure(trainer.r_bins, trainer.g_target, g, grid, curves, res.rows,
                   None if averaged else res.best_epoch, figure_path,
                   title=f"{name}: IBI toward {Path(target.source).name} at {s.temperature:g} K")
    log.info("IBI %s: RDF error %s; kept %s; wrote %s (%.1f min)", name,
             " → ".join(f"{r['rdf_rmse']:.4f}" for r in res.rows), kept_is, model_out, (time.time() - t0) / 60)
    return res


def validate_ibi(cfg: dict, name: str, model_path, target_rdf, target_state, validation_csv, rdf_csv,
                 figure_path=None) -> pd.DataFrame:
    """The `validate_ibi` job: IBI model ``name`` (``model_path``, written by `train_ibi`) and the
    model it started from (the same file with a zero correction: the network is untouched) each
    sampled for ``ibi.validation_ps`` at the state point from the start model's melt
    (``validate``). Writes their RDF errors against the target with noise (``validation_csv``),
    their g(r) with standard errors beside the target's (``rdf_csv``) and a figure."""
    t0 = time.time()
    settings, kept, meta = load_model(model_path, expected=model_settings(cfg))
    if settings.pair_correction is None:
        raise InputError(model_path, "pair_correction", "the model file of an IBI model (a pair correction)")
    kept = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype(cfg)), kept)
    start = {**kept, "pair": {"u": jnp.zeros_like(kept["pair"]["u"])}}
    target = load_rdf_target(target_rdf)
    s = state_point_settings(cfg, name, density_per_a3(cfg, name, target_state))
    for key, want in (("temperature_K", s.temperature), ("density_per_A3", s.density_per_a3)):
        if key in meta and not math.isclose(float(meta[key]), want, rel_tol=1e-6):
            raise InputError(model_path, key, f"the state point of ibi.models.{name} ({want:g}); the model was "
                                              f"fitted at {float(meta[key]):g}: rerun train_ibi")
    runs = validation_runs(cfg, s)
    if runs < 1:
        raise InputError("config ibi", "validation_ps", "a positive time (ps) to validate an IBI model")
    trainer = model_trainer(settings, target, s, cfg["species"][0], progress=log.info)
    table, gs = validate(trainer, {"start": start, "kept": kept}, runs, dtype(cfg))
    v = table.set_index("model")
    ratio = v.loc["start", "rdf_rmse"] / v.loc["kept", "rdf_rmse"]
    log.info("IBI %s validation (%g ps each): RDF error %.4f (noise %.4f) with the start model, %.4f "
             "(noise %.4f) with the kept correction, %.1fx lower; beyond noise %.4f -> %.4f; kept %s", name,
             v.loc["start", "production_ps"], v.loc["start", "rdf_rmse"], v.loc["start", "rdf_noise"],
             v.loc["kept", "rdf_rmse"], v.loc["kept", "rdf_noise"], ratio, v.loc["start", "rdf_excess"],
             v.loc["kept", "rdf_excess"], meta.get("kept", "?"))
    write_table(table, csv_path=validation_csv)
    write_table(pd.DataFrame({"r_A": trainer.r_bins, "g_target": trainer.g_target, "g_target_err": trainer.g_target_err,
                              **{f"g_{k}": g for k, (g, _) in gs.items()},
                              **{f"g_{k}_err": e for k, (_, e) in gs.items()}}), csv_path=rdf_csv)
    if figure_path is not None:
        from ..plots import ibi_validation_figure
        ibi_validation_figure(trainer.r_bins, trainer.g_target, trainer.g_target_err, gs, table.to_dict("records"),
                              trainer.r_range, figure_path,
                              title=f"{name}: validation toward {Path(target.source).name} at {s.temperature:g} K")
    log.info("IBI %s: validated in %.1f min", name, (time.time() - t0) / 60)
    return table
