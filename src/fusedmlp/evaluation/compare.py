"""Comparison tables: every model side by side with experiment where a reference exists.

Inputs are the per-model tables of the evaluation jobs; each comparison is a DataFrame written as
CSV and Markdown. Relative errors are (model − experiment)/experiment in percent; the headline
table gives the mean absolute relative errors of B, G, ν (and the C_ij) over temperature.
The models' C_ij (and B, G, ν) compared with experiment are the adiabatic stress-fluctuation
constants (the experiment is ultrasonic); the isothermal ones (``C11_T`` …) stay in the tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import elastic, experiment
from ..io import InputError
from ..tables import write_table

log = logging.getLogger(__name__)

MODULI = ("B_V", "G_V", "nu_V")


def read_models(paths: dict[str, str]) -> pd.DataFrame:
    """Concatenate the per-model tables ``{model: csv}`` (each has a ``model`` column)."""
    frames = []
    for model, path in paths.items():
        df = pd.read_csv(path)
        if "model" not in df.columns:
            df.insert(0, "model", model)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def interpolate(table: pd.DataFrame, x: str, column: str, at) -> np.ndarray:
    """Linear interpolation of ``column`` at ``at``; NaN outside the table's range."""
    t = table.sort_values(x)
    v = np.interp(at, t[x], t[column])
    return np.where((np.asarray(at) < t[x].min()) | (np.asarray(at) > t[x].max()), np.nan, v)


def experimental_moduli(el: pd.DataFrame) -> pd.DataFrame:
    """Voigt B, G, ν of the experimental hcp constants at each temperature."""
    rows = []
    for _, r in el.iterrows():
        m = elastic.moduli(elastic.hexagonal_matrix(*(r[f"{c}_GPa"] for c in elastic.HEXAGONAL_CONSTANTS)))
        rows.append({"T_K": r["T_K"], "B_V": m["K_V"], "G_V": m["G_V"], "nu_V": m["nu_V"]})
    return pd.DataFrame(rows)


def _relative(model, exp):
    return 100.0 * (np.asarray(model, float) - exp) / exp


def elastic_hcp(models: pd.DataFrame, el: pd.DataFrame) -> pd.DataFrame:
    """Per model and temperature: C_ij (adiabatic), B, G, ν with experiment and relative errors,
    and the isothermal C_ij (``C11_T`` …) where the model tables have them."""
    exp_mod = experimental_moduli(el)
    out = models[["model", "T_K"]].copy()
    for c in elastic.HEXAGONAL_CONSTANTS:
        exp = interpolate(el, "T_K", f"{c}_GPa", models["T_K"])
        out[c], out[f"{c}_exp"], out[f"{c}_rel_err_pct"] = models[c], exp, _relative(models[c], exp)
        if f"{c}_T" in models.columns:
            out[f"{c}_T"] = models[f"{c}_T"]
    for m in MODULI:
        exp = interpolate(exp_mod, "T_K", m, models["T_K"])
        out[m], out[f"{m}_exp"], out[f"{m}_rel_err_pct"] = models[m], exp, _relative(models[m], exp)
    out["pressure_GPa"] = models["pressure_GPa"]
    return out


def moduli_summary(cmp: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute relative errors over temperature (the paper's headline), per model."""
    rows = []
    for model, g in cmp.groupby("model", sort=False):
        row = {"model": model, "temperatures": int(g["T_K"].nunique()),
               "T_range_K": f"{g['T_K'].min():g}-{g['T_K'].max():g}"}
        for name in MODULI + elastic.HEXAGONAL_CONSTANTS:
            row[f"{name}_mean_abs_rel_err_pct"] = float(np.nanmean(np.abs(g[f"{name}_rel_err_pct"])))
        row["mean_abs_pressure_GPa"] = float(np.mean(np.abs(g["pressure_GPa"])))
        rows.append(row)
    return pd.DataFrame(rows)


def lattice_temperature(models: pd.DataFrame, lat: pd.DataFrame) -> pd.DataFrame:
    out = models[["model", "T_K", "a_A", "a_A_err", "c_A", "c_A_err", "covera"]].copy()
    for x in ("a_A", "c_A"):
        exp = interpolate(lat, "T_K", x, models["T_K"])
        out[f"{x}_exp"], out[f"{x}_rel_err_pct"] = exp, _relative(models[x], exp)
    return out


def with_reference(models: pd.DataFrame, ref_path, key: str, columns) -> pd.DataFrame:
    """Add ``<col>_ref`` and relative errors from a user-supplied table keyed by ``key``."""
    out = models.copy()
    if not ref_path:
        return out
    ref = experiment.load_table(ref_path, (key, *columns))
    for col in columns:
        target = col if col in models.columns else col.removesuffix("_GPa")
        exp = interpolate(ref, key, col, models[key])
        out[f"{target}_ref"], out[f"{target}_rel_err_pct"] = exp, _relative(models[target], exp)
    return out


def phonons(models: pd.DataFrame, ref_path) -> pd.DataFrame:
    """Band frequencies at the path's special points; with a reference table (label,
    frequency_THz), each measured frequency next to the nearest branch of every model."""
    if not ref_path:
        return models
    ref = pd.read_csv(ref_path, comment="#")
    for col in ("label", "frequency_THz"):
        if col not in ref.columns:
            raise InputError(ref_path, col, f"column missing; expected label, frequency_THz, found {list(ref.columns)}")
    rows = []
    for _, r in ref.iterrows():
        for _, m in models[models["label"] == r["label"]].iterrows():
            bands = np.array([m[c] for c in models.columns if c.startswith("band")], float)
            near = float(bands[np.nanargmin(np.abs(bands - r["frequency_THz"]))])
            rows.append({"model": m["model"], "label": r["label"], "frequency_THz_ref": r["frequency_THz"],
                         "frequency_THz": near, "rel_err_pct": float(_relative(near, r["frequency_THz"]))})
        if not (models["label"] == r["label"]).any():
            raise InputError(ref_path, "label", f"{r['label']!r} is not a point of the band path "
                                                f"({sorted(models['label'].unique())})")
    return pd.DataFrame(rows)


def liquid(models: pd.DataFrame, rdf_paths: dict, adf_paths: dict, rdf_ref, adf_ref) -> pd.DataFrame:
    """Liquid summary per model; with reference curves, the RMS difference of g(r) and p(θ)."""
    out = models.copy()
    for ref_path, paths, x, y, name in ((rdf_ref, rdf_paths, "r_A", "g", "rdf"),
                                        (adf_ref, adf_paths, "theta_deg", "p_per_deg", "adf")):
        if not ref_path:
            continue
        ref = experiment.load_table(ref_path, (x, y))
        rms = []
        for model in out["model"]:
            cur = pd.read_csv(paths[model])
            rms.append(float(np.sqrt(np.nanmean((interpolate(cur, x, y, ref[x]) - ref[y]) ** 2))))
        out[f"{name}_rms_diff_to_ref"] = rms
    return out


def diffusion(models: pd.DataFrame, exp: pd.DataFrame) -> pd.DataFrame:
    """D (m²/s) with the measured value where the experimental table covers T (Arrhenius
    interpolation: ln D linear in 1/T)."""
    out = models.copy()
    d_exp = 1e-9 * exp["D_1e-9_m2_s"].to_numpy()
    if len(exp) == 1:
        at = np.where(np.isclose(models["T_K"], exp["T_K"].iloc[0]), d_exp[0], np.nan)
    else:
        inv = pd.DataFrame({"inv_T": 1.0 / exp["T_K"], "lnD": np.log(d_exp)})
        at = np.exp(interpolate(inv, "inv_T", "lnD", 1.0 / models["T_K"].to_numpy()))
    out["D_exp_m2_s"] = at
    out["D_gk_rel_err_pct"] = _relative(models["D_gk_m2_s"], at)
    return out


def first(df: pd.DataFrame, model: str, column: str) -> float:
    """``column`` of ``model``'s first row in ``df``; NaN where it has none or no such column."""
    rows = df[df["model"] == model]
    return float(rows[column].iloc[0]) if len(rows) and column in rows else float("nan")


def rdf_fits(fits: dict, start: str, rdf_paths: dict, diff: pd.DataFrame, el: pd.DataFrame,
             errors: pd.DataFrame) -> pd.DataFrame:
    """Models fitted to a g(r) (``fits``: ``{model: (method, target table, target potential or
    None)}``, IBI's pair correction or DiffTRe of the whole network), each beside the model
    ``start`` they began from, as the evaluation rules measured them: the RMS difference of the
    liquid's g(r) (``evaluation.liquid``) to the model's target over the target's points, the
    Green–Kubo diffusion coefficient and zero-pressure density of the liquid (first temperature of
    ``evaluation.diffusion``), the RMS deviation of the five hcp constants from experiment over
    temperature (``el``: the ``elastic_hcp`` comparison), and the reference-test errors. A known
    answer (a reference level's g(r), ``target potential`` its evaluated name) is compared as the
    evaluation measured that potential's liquid, at the same state point as the models' (the IBI
    target may be at another temperature and density), and adds its own D and density
    (``_target``); ``rdf_compared_to`` names the g(r) each error is taken against."""
    def rdf_err(model, ref):
        cur = pd.read_csv(rdf_paths[model])
        return float(np.sqrt(np.nanmean((interpolate(cur, "r_A", "g", ref["r_A"]) - ref["g"]) ** 2)))

    def cij_rms(model):
        g = el[el["model"] == model]
        dev = np.stack([g[c] - g[f"{c}_exp"] for c in elastic.HEXAGONAL_CONSTANTS])
        return float(np.sqrt(np.nanmean(dev**2))) if dev.size else float("nan")

    rows = []
    for model, (method, target, known) in fits.items():
        row = {"model": model, "method": method, "target": str(target), "start": start}
        level_liquid = known if known in rdf_paths else None
        ref = pd.read_csv(rdf_paths[level_liquid]) if level_liquid else experiment.load_table(target, ("r_A", "g"))
        row["rdf_compared_to"] = f"{level_liquid} (evaluation.liquid)" if level_liquid else str(target)
        for sfx, m in (("_start", start), ("", model)):
            row[f"rdf_rms_to_target{sfx}"] = rdf_err(m, ref)
            row[f"D_gk_m2_s{sfx}"] = first(diff, m, "D_gk_m2_s")
            row[f"D_gk_err_m2_s{sfx}"] = first(diff, m, "D_gk_err_m2_s")
            row[f"density_per_A3{sfx}"] = first(diff, m, "density_per_A3")
            row[f"Cij_rms_dev_GPa{sfx}"] = cij_rms(m)
            row[f"forces_rmse_meV_A{sfx}"] = first(errors, m, "forces_rmse_meV_A")
            row[f"energy_rmse_no_offset_meV_atom{sfx}"] = first(errors, m, "energy_rmse_no_offset_meV_atom")
        for col in ("D_gk_m2_s", "D_gk_err_m2_s", "density_per_A3"):
            row[f"{col}_target"] = first(diff, known, col)  # NaN without a known answer
        row["T_liquid_K"] = first(diff, model, "T_K")
        rows.append(row)
    return pd.DataFrame(rows)


def block_covariance(row, names) -> np.ndarray:
    """Covariance matrix of the block estimates of the constants ``names`` in an evaluation table's
    ``row`` (``<a>_err``, ``<a>_<b>_cov``); NaN where the table has no errors, or no covariances
    (a table written before they were: rerun its evaluation)."""
    cov = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        cov[i, i] = float(row.get(f"{a}_err", np.nan)) ** 2
        for j, b in enumerate(names[:i]):
            cov[i, j] = cov[j, i] = float(row.get(f"{b}_{a}_cov", np.nan))
    return cov


def rms_deviation(dev, cov) -> tuple[float, float]:
    """√(Σd²/n) of deviations ``dev`` and its standard error √(gᵀ Σ g), g = d/(n·rms), to first
    order, from their covariance ``cov`` (the errors of C11 and C12 are anti-correlated: taken as
    independent they would miscount it)."""
    dev = np.asarray(dev, float)
    rms = float(np.sqrt(np.mean(dev**2)))
    if rms == 0.0:
        return rms, float("nan")
    g = dev / (len(dev) * rms)
    return rms, float(np.sqrt(g @ np.asarray(cov, float) @ g))


def training_targets(el_models: pd.DataFrame, cmp_el: pd.DataFrame, lat: pd.DataFrame, errors: pd.DataFrame,
                     temperatures, start: str = "pretrained") -> pd.DataFrame:
    """What top-down training is judged by, per model at the training temperatures, as the
    evaluation rules measured it, beside the model ``start`` the schemes began from: the RMS
    deviation of the five hcp C_ij (``el_models``, the evaluation tables) from experiment
    (``cmp_el``, their ``elastic_hcp`` comparison; standard error from the block covariances) and its
    ratio to ``start``'s; the pressure at the experimental lattice; the zero-pressure lattice
    constants' deviations from experiment (``lat``: the ``lattice_temperature`` comparison; NaN
    where it has no run at that temperature); and the reference-test errors with their ratios to
    ``start``'s (the energy also without its mean offset)."""
    names = elastic.HEXAGONAL_CONSTANTS
    rows = []
    for i, r in el_models.iterrows():
        t = float(r["T_K"])
        if not np.any(np.isclose(t, temperatures)):
            continue
        dev = np.array([r[c] - cmp_el.loc[i, f"{c}_exp"] for c in names], float)
        cov = block_covariance(r, names)
        if np.isnan(cov).any() and not np.isnan(np.diag(cov)).any():
            log.warning("%s at %g K: the elastic table has block errors but no covariances (written by an "
                        "older evaluate_elastic_hcp); the C_ij RMS deviation gets no error", r["model"], t)
        rms, rms_err = rms_deviation(dev, cov)
        row = {"model": r["model"], "T_K": t, "Cij_rms_dev_GPa": rms, "Cij_rms_dev_err_GPa": rms_err,
               "pressure_GPa": r["pressure_GPa"], "pressure_err_GPa": r.get("pressure_GPa_err", np.nan)}
        at = lat[(lat["model"] == r["model"]) & np.isclose(lat["T_K"], t)]
        for x in ("a", "c"):
            have = len(at) > 0
            row[f"{x}_rel_err_pct"] = float(at[f"{x}_A_rel_err_pct"].iloc[0]) if have else np.nan
            row[f"{x}_rel_err_err_pct"] = (float(100.0 * at[f"{x}_A_err"].iloc[0] / at[f"{x}_A_exp"].iloc[0])
                                           if have else np.nan)
        for col in ("forces_rmse_meV_A", "energy_rmse_meV_atom", "energy_rmse_no_offset_meV_atom",
                    "energy_offset_meV_atom"):
            row[col] = first(errors, r["model"], col)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    base = out[out["model"] == start].set_index("T_K")
    for col in ("Cij_rms_dev_GPa", "forces_rmse_meV_A", "energy_rmse_meV_atom"):
        ref = out["T_K"].map(base[col]) if len(base) else np.nan
        out[f"{col.split('_meV')[0].removesuffix('_GPa')}_vs_{start}"] = out[col] / ref
    return out


def errors_by_type(by_type: pd.DataFrame, start: str = "pretrained") -> pd.DataFrame:
    """The per-configuration-type test errors of every model, each type's models together, with the
    shift of each type's mean energy error and the ratio of its force error against ``start``'s: a
    correction that moves one phase against another (bcc against hcp) shows as shifts of different
    sign, where the totals only grow."""
    if by_type.empty:
        return by_type
    base = by_type[by_type["model"] == start].set_index("config_type")
    out = by_type.copy()
    out[f"energy_offset_shift_vs_{start}_meV_atom"] = (out["energy_offset_meV_atom"]
                                                       - out["config_type"].map(base["energy_offset_meV_atom"]))
    out[f"forces_rmse_vs_{start}"] = out["forces_rmse_meV_A"] / out["config_type"].map(base["forces_rmse_meV_A"])
    return out.sort_values(["config_type", "model"], kind="stable").reset_index(drop=True)


def per_model(inputs: dict, prop: str, name: str) -> dict[str, str]:
    """``{model: path}`` of one output ``name`` of property ``prop`` from rule inputs keyed
    ``<prop>__<model>__<name>``."""
    return {k.split("__")[1]: v for k, v in inputs.items() if k.startswith(f"{prop}__") and k.endswith(f"__{name}")}


def write_all(inputs: dict, cfg: dict, outputs: dict[str, str]) -> None:
    """All comparison tables. ``inputs``: per-model tables keyed ``<prop>__<model>__<name>``
    and ``test_errors__<model>``, ``test_errors_by_type__<model>``; ``outputs``: ``{table name:
    markdown path}`` (CSV beside it)."""
    def models(prop, name):
        return per_model(inputs, prop, name)

    def errors(prefix):  # {model: csv} of the inputs keyed ``<prefix>__<model>``
        return {k.split("__")[1]: v for k, v in inputs.items() if k.startswith(f"{prefix}__")}

    refs = cfg["evaluation"]["references"]
    el = experiment.elastic_constants(cfg["experiment"]["elastic_constants"])
    lat = experiment.lattice_constants(cfg["experiment"]["lattice_constants"])
    el_models = read_models(models("elastic_hcp", "table"))
    cmp_el = elastic_hcp(el_models, el)
    tables = {
        "elastic_hcp": (cmp_el, "hcp adiabatic elastic constants (GPa) and Voigt moduli vs experiment "
                                f"({experiment.citation(cfg['experiment']['elastic_constants'])})"),
        "moduli": (moduli_summary(cmp_el), "Mean absolute relative errors (%) over temperature"),
        "lattice_temperature": (lattice_temperature(read_models(models("lattice_temperature", "table")), lat),
                                "hcp lattice constants (Å) vs temperature at zero pressure"),
        "lattice_pressure": (with_reference(read_models(models("lattice_pressure", "table")),
                                            refs["lattice_pressure"], "P_GPa", ("a_A", "c_A")),
                             "hcp lattice constants (Å) vs pressure"),
        "phonons": (phonons(read_models(models("phonons", "summary")), refs["phonons"]),
                    "Phonon frequencies (THz) at the special points of the band path"),
        "liquid": (liquid(read_models(models("liquid", "summary")), models("liquid", "rdf"),
                          models("liquid", "adf"), refs["rdf"], refs["adf"]), "Liquid structure"),
        "diffusion": (diffusion(read_models(models("diffusion", "table")),
                                experiment.diffusion(cfg["experiment"]["diffusion"])),
                      "Liquid self-diffusion (m²/s)"),
        "elastic_bcc": (with_reference(read_models(models("elastic_bcc", "table")), refs["elastic_bcc"],
                                       "T_K", ("C11_GPa", "C12_GPa", "C44_GPa")),
                        "bcc elastic constants (GPa; C11 … adiabatic, C11_T … isothermal)"),
        "test_errors": (read_models(errors("test_errors")), "Errors on the reference test split"),
        "test_errors_by_type": (errors_by_type(read_models(errors("test_errors_by_type"))),
                                "Errors on the reference test split per configuration type (energy offset: the "
                                "mean error; its shift against the pre-trained model's)"),
    }
    tables["targets"] = (training_targets(el_models, cmp_el,
                                          tables["lattice_temperature"][0], tables["test_errors"][0],
                                          cfg["difftre"]["temperatures"]),
                         "Top-down targets at the training temperatures and the cost on the reference test, "
                         "beside the pre-trained model")
    if "rdf_fits" in outputs:
        evaluated = set(models("diffusion", "table")) | set(models("liquid", "rdf"))
        known = {m: f"reference@{e['target']}" for m, e in cfg["ibi"]["models"].items()}  # a level's name
        fits = {m: (e.get("method", "ibi"), inputs[f"ibi_target__{m}"],
                    known[m] if known[m] in evaluated else None)
                for m, e in cfg["ibi"]["models"].items()}
        tables["rdf_fits"] = (rdf_fits(fits, "pretrained", models("liquid", "rdf"), tables["diffusion"][0], cmp_el,
                                       tables["test_errors"][0]),
                              "Fitted to a g(r): IBI (pair correction) and DiffTRe (whole network) beside their start")
    for name, md_path in outputs.items():
        df, title = tables[name]
        write_table(df, csv_path=Path(md_path).with_suffix(".csv"), markdown_path=md_path, title=title)
        log.info("wrote %s (%d rows)", md_path, len(df))
