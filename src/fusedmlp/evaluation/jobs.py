"""One function per evaluation rule: read the configuration, measure one property of one
potential, write its tables (atomically). The rules' scripts only call these."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import experiment
from ..io import atomic_path
from ..md.settings import Dynamics
from ..observables.phonons import PhononSettings, write_band_csv, write_dos_csv
from ..tables import write_table
from .elasticity import CubicElasticSettings, ElasticSettings, cubic_elastic, hcp_elastic_vs_temperature
from .lattice import lattice_vs_pressure, lattice_vs_temperature
from .liquid import LiquidSettings, StructureSettings, TransportSettings, diffusion_at, liquid_structure
from .phonon_bands import crystal_phonons
from .potentials import Potential, load_potential, reference_potential
from .sampling import Sampling, ScanStopped, scan

log = logging.getLogger(__name__)


def run_settings(cfg: dict) -> Dynamics:
    """Integrator, thermostat, barostat and seed of every evaluation run (``evaluation.md``)."""
    return Dynamics.from_config(cfg["evaluation"]["md"])


def sampling(d: dict) -> Sampling:
    return Sampling(d["equilibration_ps"], d["production_ps"], d["record_every_fs"])


def temperatures(cfg: dict, section: str) -> list[float]:
    """The section's temperatures; ``all``: every temperature of the experimental elastic table."""
    t = cfg["evaluation"][section]["temperatures"]
    if t == "all":
        return experiment.elastic_constants(cfg["experiment"]["elastic_constants"])["T_K"].tolist()
    return [float(x) for x in t]


def experimental_lattice(cfg: dict, section: str):
    """(a, c) at T (Å), interpolated in the experimental table; outside it, an error."""
    path = cfg["experiment"]["lattice_constants"]
    lat = experiment.lattice_constants(path)
    return lambda t: tuple(experiment.at_temperature(lat, path, col, t, f"evaluation.{section}.temperatures")
                           for col in ("a_A", "c_A"))


def experimental_expansion(cfg: dict, section: str):
    """The experimental hcp lattice's linear strain rates at T (Voigt: d ln a/dT twice, d ln c/dT;
    1/K); None (and a log line) for a table of one row, which has no derivative."""
    path = cfg["experiment"]["lattice_constants"]
    lat = experiment.lattice_constants(path)
    if len(lat) < 2:
        log.info("%s has one row: no thermal expansion, so no pressure slopes in the table", path)
        return None

    return lambda t: experiment.hcp_expansion_at(lat, path, t, f"evaluation.{section}.temperatures")


def _potential(cfg, model, model_path) -> Potential:
    pot = load_potential(cfg, model, model_path)
    log.info("evaluating %s (cutoff %.2f Å)", model, pot.cutoff)
    return pot


def _symbol(cfg) -> str:
    return cfg["species"][0]


def _done(what: str, t0: float) -> None:
    log.info("%s done in %.1f min", what, (time.time() - t0) / 60)


def _write_rows(rows: list[dict], model: str, table, what: str, t0: float) -> list[dict]:
    """Label the rows with the model, write them, log the time taken."""
    for r in rows:
        r["model"] = model
    write_table(rows, csv_path=table)
    _done(f"{model} {what}", t0)
    return rows


def elastic_hcp(cfg, model, model_path, table) -> list[dict]:
    t0, e = time.time(), cfg["evaluation"]["elastic_hcp"]
    pot = _potential(cfg, model, model_path)
    rows = hcp_elastic_vs_temperature(pot, _symbol(cfg), experimental_lattice(cfg, "elastic_hcp"),
                                      temperatures(cfg, "elastic_hcp"), e["supercell"], run_settings(cfg),
                                      ElasticSettings(sampling(e["sampling"]), n_blocks=e["n_blocks"],
                                                      control_variates=e["control_variates"]),
                                      expansion=experimental_expansion(cfg, "elastic_hcp"))
    return _write_rows(rows, model, table, "hcp elastic constants", t0)


def _hcp_start(cfg, section: str) -> tuple[float, float]:
    """(a, c/a) where the section's NPT runs or 0 K relaxation start: ``evaluation.<section>.start``,
    and for what it leaves null, the experimental lattice table's coldest row."""
    start = cfg["evaluation"][section]["start"]
    if start["a"] is not None and start["covera"] is not None:
        return float(start["a"]), float(start["covera"])
    lat = experiment.lattice_constants(cfg["experiment"]["lattice_constants"]).sort_values("T_K")
    a, c = float(lat["a_A"].iloc[0]), float(lat["c_A"].iloc[0])
    return (float(start["a"]) if start["a"] is not None else a,
            float(start["covera"]) if start["covera"] is not None else c / a)


def lattice_temperature(cfg, model, model_path, table) -> list[dict]:
    t0, e = time.time(), cfg["evaluation"]["lattice_temperature"]
    pot = _potential(cfg, model, model_path)
    a0, covera0 = _hcp_start(cfg, "lattice_temperature")
    rows = lattice_vs_temperature(pot, _symbol(cfg), a0, covera0, e["supercell"], temperatures(cfg, "lattice_temperature"),
                                  run_settings(cfg), sampling(e["sampling"]))
    return _write_rows(rows, model, table, "lattice vs temperature", t0)


def lattice_pressure(cfg, model, model_path, table) -> list[dict]:
    t0, e = time.time(), cfg["evaluation"]["lattice_pressure"]
    pot = _potential(cfg, model, model_path)
    a0, covera0 = _hcp_start(cfg, "lattice_pressure")
    rows = lattice_vs_pressure(pot, _symbol(cfg), a0, covera0, e["supercell"], e["temperature"], e["pressures_gpa"],
                               run_settings(cfg), sampling(e["sampling"]))
    return _write_rows(rows, model, table, "lattice vs pressure", t0)


def phonons(cfg, model, model_path, bands, dos, summary) -> dict:
    t0, e = time.time(), cfg["evaluation"]["phonons"]
    pot = _potential(cfg, model, model_path)
    a0, covera0 = _hcp_start(cfg, "phonons") if e["structure"] == "hcp" else (e["start"]["a"], None)
    ps = PhononSettings(supercell=tuple(e["supercell"]), displacement=e["displacement"],
                        band_points=e["band_points"], dos_mesh=tuple(e["dos_mesh"]))
    res, lat = crystal_phonons(pot, _symbol(cfg), e["structure"], a0, covera0, ps)
    write_band_csv(res, bands)
    write_dos_csv(res, dos)
    rows = []
    for (start, end), q, f in zip(res.segment_labels, res.qpoints, res.frequencies):
        for label, freqs in ((start, f[0]), (end, f[-1])):
            if not any(r["label"] == label for r in rows):
                rows.append({"label": label} | {f"band{j}_THz": float(x) for j, x in enumerate(np.sort(freqs))})
    table = pd.DataFrame(rows)
    table.insert(0, "model", model)
    table["structure"] = e["structure"]
    table["a_A"], table["covera"] = lat.a, lat.covera if lat.covera else np.nan
    write_table(table, csv_path=summary)
    _done(f"{model} phonons", t0)
    return {"gamma": res.gamma_frequencies}


def liquid(cfg, model, model_path, rdf, adf, summary) -> dict:
    t0, e = time.time(), cfg["evaluation"]["liquid"]
    pot = _potential(cfg, model, model_path)
    res = liquid_structure(pot, _symbol(cfg), e["temperature"], liquid_settings(e, e["supercell"], e["sampling"]),
                           StructureSettings(e["rdf_r_max"], e["rdf_bins"], e["adf_cutoff"], e["adf_bins"]),
                           run_settings(cfg))
    for path, table in ((rdf, res["rdf"]), (adf, res["adf"])):
        with atomic_path(path) as tmp:
            pd.DataFrame(table).to_csv(tmp, index=False)
    write_table([res["summary"] | {"model": model}], csv_path=summary)
    _done(f"{model} liquid structure", t0)
    return res


def liquid_settings(e: dict, supercell, samp: dict) -> LiquidSettings:
    return LiquidSettings(structure=e["structure"], a0=e["a0"], supercell=tuple(supercell),
                          melt_temperature=e["melt_temperature"], melt_ps=e["melt_ps"], npt_ps=e["npt_ps"],
                          sampling=sampling(samp))


def diffusion(cfg, model, model_path, table) -> list[dict]:
    t0, e, liq = time.time(), cfg["evaluation"]["diffusion"], cfg["evaluation"]["liquid"]
    pot = _potential(cfg, model, model_path)
    rs = dataclasses.replace(run_settings(cfg), thermostat_kind=e["thermostat"])
    log.info("diffusion runs thermostat with %s", e["thermostat"])
    ls = liquid_settings(liq, e["supercell"], e["sampling"])
    ts = TransportSettings(max_lag_ps=e["max_lag_ps"], n_blocks=e["n_blocks"])
    rows = scan(e["temperatures"], lambda k, t: diffusion_at(pot, _symbol(cfg), t, ls, ts, rs, seed=k),
                "T_K", f"{model} diffusion")
    return _write_rows(rows, model, table, "diffusion", t0)


def elastic_bcc(cfg, model, model_path, table) -> dict:
    t0, e = time.time(), cfg["evaluation"]["elastic_bcc"]
    pot = _potential(cfg, model, model_path)
    cs = CubicElasticSettings("bcc", e["a0"], tuple(e["supercell"]), e["temperature"], e["npt_ps"],
                              ElasticSettings(sampling(e["sampling"]), n_blocks=e["n_blocks"]))
    row = cubic_elastic(pot, _symbol(cfg), cs, run_settings(cfg)) | {"model": model}
    write_table([row], csv_path=table)
    _done(f"{model} bcc elastic constants", t0)
    return row


def ibi_reference_target(cfg, name, rdf, state) -> dict:
    """The known-answer target of IBI model ``name`` (``ibi.models.<name>.target``, a reference
    level): the level's liquid at the IBI state point's temperature, prepared as
    ``evaluation.liquid`` (melted, zero-pressure NPT) in the IBI's supercell and sampled for
    ``ibi.target_sampling``; its g(r) on the IBI's bins (``rdf``, an ``r_A, g`` table with a
    header naming it) and its density and pressure (``state``): the density is the IBI's NVT
    density. (The level's diffusion, the off-target check's reference, is an evaluation like any
    other: ``results/reference@<level>/diffusion.csv``; measured here, every edit of the diffusion
    settings would retrain the IBI model.)"""
    t0, i, liq = time.time(), cfg["ibi"], cfg["evaluation"]["liquid"]
    m = i["models"][name]
    level = m["target"]
    if level not in cfg["reference"]["levels"]:
        raise ValueError(f"ibi.models.{name}.target {level!r} is not a reference level {sorted(cfg['reference']['levels'])}")
    temperature = float(m["temperature"] if m["temperature"] is not None else i["temperature"])
    pot = reference_potential(cfg, level, name=f"reference {level}")
    ls = liquid_settings(liq, i["supercell"], i["target_sampling"])
    n_bins = max(10, int(round(i["rdf_r_max"] / i["rdf_bin_A"])))
    res = liquid_structure(pot, _symbol(cfg), temperature, ls,
                           StructureSettings(i["rdf_r_max"], n_bins, liq["adf_cutoff"], liq["adf_bins"]), run_settings(cfg))
    summary = res["summary"] | {"level": level}
    header = (f"# g(r) of the reference potential at level {level} (reference.levels.{level}) in its liquid at "
              f"{temperature:g} K and zero pressure ({summary['n_atoms']} atoms, {summary['frames']} frames, density "
              f"{summary['mass_density_g_cm3']:.4f} g/cm3): the known-answer target of IBI model {name}.\n"
              "# Units: r in Angstrom, g dimensionless; g_err the standard error of g from blocks of frames.\n")
    with atomic_path(rdf) as tmp:
        Path(tmp).write_text(header + pd.DataFrame(res["rdf"]).to_csv(index=False))
    write_table([summary], csv_path=state)
    _done(f"IBI target {name} ({level})", t0)
    return summary


JOBS = {"elastic_hcp": elastic_hcp, "lattice_temperature": lattice_temperature,
        "lattice_pressure": lattice_pressure, "phonons": phonons, "liquid": liquid,
        "diffusion": diffusion, "elastic_bcc": elastic_bcc}


def run(prop: str, cfg: dict, model: str, model_path, outputs: dict):
    """The job of one evaluation rule; ``outputs`` are the rule's named output files. A scan that
    stops at a later point keeps what it measured in ``<table>.partial.csv`` beside its table
    (Snakemake deletes a failed job's outputs, not this file); a finished job removes it."""
    if prop not in JOBS:
        raise ValueError(f"unknown property {prop!r}; expected one of {sorted(JOBS)}")
    partial = Path(outputs["table"]).with_suffix(".partial.csv") if "table" in outputs else None
    try:
        result = JOBS[prop](cfg, model, model_path, **outputs)
    except ScanStopped as exc:
        if partial is None:
            raise
        write_table([r | {"model": model} for r in exc.rows], csv_path=partial)
        log.error("%s; the points measured are in %s", exc, partial)
        raise
    if partial is not None:
        partial.unlink(missing_ok=True)
    return result
