"""Evaluation of multi-fidelity models (Messerly et al., Mach. Learn.: Sci. Technol. 6, 035066, 2025).

* ``elastic_0k_job``: the hcp lattice and 0 K elastic constants of the multi-fidelity model at each
  head beside those of the reference potential at each level: a head that learned its level's
  physics (not only lower test errors) is close to its own level's reference and not to the other.
* ``comparison_job``: the seed paper's comparison at the high level, (a) high-level energies only,
  (b) high-level energies and forces, (c) low-level energies and forces plus high-level energies:
  test errors per seed, their means, the 0 K elastic constants, and the learning curve of (a) and
  (c) against the number of high-level energies with (b) as the reference.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ..data import dataset as D
from ..data.splits import load_split
from ..elastic import HEXAGONAL_CONSTANTS, finite_strain_stiffness, hexagonal
from ..model.batch import prepare
from ..model.file import load_model, model_head
from ..model.settings import dtype, model_settings
from ..structures import crystal, relax_lattice
from ..tables import write_table
from .errors import level_indices, model_errors
from .potentials import Potential, load_potential

log = logging.getLogger(__name__)

# the hcp lattice the 0 K relaxations start from (Å, c/a): near every Ti level's minimum
A0, COVERA0 = 2.94, 1.62


def float64(cfg: dict) -> dict:
    """``cfg`` with the models evaluated in float64: central differences of the stress at strains
    of 1e-3 lose a few GPa in float32 (the reference potential's C11 151.9 instead of 147.8 GPa).
    The job's script enables JAX's 64-bit mode."""
    return {**cfg, "model": {**cfg["model"], "dtype": "float64"}}


def elastic_0k(pot: Potential, symbol: str, a0: float = A0, covera0: float = COVERA0) -> dict:
    """Zero-pressure hcp lattice (a, c/a) and elastic constants (GPa) at 0 K: the lattice
    relaxed, then central differences of the stress in strained cells with the atoms relaxed
    (``elastic.finite_strain_stiffness``). Use a float64 potential (``float64``)."""
    cell = crystal(symbol, "hcp", a0, covera0)
    efv = pot.host_efv(cell.numbers)
    lat = relax_lattice(lambda r, b: efv(r, b)[0], symbol, "hcp", a0, covera0, tol=1e-7)
    at = crystal(symbol, "hcp", lat.a, lat.covera)
    c = hexagonal(finite_strain_stiffness(efv, at.positions, np.asarray(at.cell)))
    return {"a_A": lat.a, "covera": lat.covera, **{k: float(v) for k, v in c.items()}}


def _mae(row: dict, ref: dict) -> float:
    return float(np.mean([abs(row[k] - ref[k]) for k in HEXAGONAL_CONSTANTS]))


def elastic_0k_job(cfg: dict, model: str, model_path, levels, table_csv, table_md) -> pd.DataFrame:
    """0 K hcp constants of ``model`` at each of ``levels`` (its heads) and of the reference
    potential at each, with every row's mean absolute deviation of C11 … C13 from each level's
    reference."""
    t0, symbol, cfg = time.time(), cfg["species"][0], float64(cfg)
    refs = {level: elastic_0k(load_potential(cfg, f"reference@{level}"), symbol) for level in levels}
    rows = [{"potential": f"reference@{level}", **refs[level]} for level in levels]
    for level in levels:
        name = f"{model}@{level}"
        rows.append({"potential": name, **elastic_0k(load_potential(cfg, name, model_path), symbol)})
        log.info("%s: %s", name, {k: round(v, 1) for k, v in rows[-1].items() if k in HEXAGONAL_CONSTANTS})
    for row in rows:
        for level in levels:
            row[f"mae_vs_reference@{level}_GPa"] = _mae(row, refs[level])
    table = write_table(rows, csv_path=table_csv, markdown_path=table_md,
                        title=f"{model} at each head: 0 K hcp lattice (Å) and elastic constants (GPa) beside the "
                              "reference potential at each level")
    log.info("0 K elastic constants done in %.1f min", (time.time() - t0) / 60)
    return table


# --- the seed paper's comparison ---------------------------------------------------------------------------

VARIANT_LABELS = {"high_energies": "(a) high-level E", "high_energies_forces": "(b) high-level E+F",
                  "multifidelity": "(c) low-level E+F + high-level E"}


def comparison_job(cfg: dict, models: dict[tuple[str, int, int], str], dataset_path, split_path,
                   outputs: dict) -> pd.DataFrame:
    """Test errors at the high level of every model (``models``: (variant, size, seed) → file),
    the 0 K elastic constants of the models at the configured size, the tables and the figure.
    ``outputs``: ``runs`` (every model, CSV), ``table`` / ``markdown`` (the summary at the
    configured size, per seed and mean), ``figure`` (learning curve)."""
    t0 = time.time()
    m = cfg["multifidelity"]
    high, size0, symbol = m["high"], m["levels"][m["high"]]["train_size"], cfg["species"][0]
    ds = D.load(dataset_path, allowed_species=cfg["species"])
    split = load_split(split_path, len(ds))
    test = ds.subset(level_indices(ds, split["test"], high, dataset_path))
    data = prepare(test, model_settings(cfg, heads=(high,)))
    idx = np.arange(len(test))
    ref = elastic_0k(load_potential(float64(cfg), f"reference@{high}"), symbol)
    runs = []
    for (variant, size, seed), path in sorted(models.items()):
        settings, params, meta = load_model(path, expected=model_settings(cfg))
        multi = len(settings.heads) > 1  # (c) at its high head; (a) and (b) have one head
        head = model_head(path, settings, high if multi else None)
        err, *_ = model_errors(settings, params, head, data, idx, dtype(cfg))
        row = {"variant": variant, "label": VARIANT_LABELS[variant], "size": size, "seed": seed,
               "energy_rmse_meV_atom": 1e3 * err["energy_rmse"], "energy_mae_meV_atom": 1e3 * err["energy_mae"],
               "forces_rmse_meV_A": 1e3 * err["forces_rmse"], "forces_mae_meV_A": 1e3 * err["forces_mae"],
               "virial_rmse_meV_atom": 1e3 * err["virial_rmse"], "best_epoch": meta.get("best_epoch")}
        if size == size0:
            el = elastic_0k(load_potential(float64(cfg), f"{variant}@{high}" if multi else variant, path), symbol)
            row.update({k: el[k] for k in ("a_A", "covera", *HEXAGONAL_CONSTANTS)},
                       elastic_mae_GPa=_mae(el, ref))
        runs.append(row)
        log.info("%s n=%d seed %d: E %.2f meV/atom, F %.1f meV/Å", variant, size, seed,
                 row["energy_rmse_meV_atom"], row["forces_rmse_meV_A"])
    runs = pd.DataFrame(runs)
    write_table(runs, csv_path=outputs["runs"])
    summary = summary_table(runs, size0, ref, high)
    write_table(summary, csv_path=outputs["table"], markdown_path=outputs["markdown"],
                title=f"Errors at the high level ({high}) on its {len(test)} test structures, {size0} high-level "
                      f"training structures; 0 K elastic constants beside reference@{high}")
    learning_curve(runs, outputs["figure"], high, len(test))
    log.info("comparison of %d models done in %.1f min", len(models), (time.time() - t0) / 60)
    return summary


METRICS = ("energy_rmse_meV_atom", "energy_mae_meV_atom", "forces_rmse_meV_A", "forces_mae_meV_A")


def summary_table(runs: pd.DataFrame, size: int, ref: dict, level: str) -> pd.DataFrame:
    """Rows per variant and seed at ``size`` and their mean ± standard deviation, the reference's
    0 K constants, and the acceptance ratios of (c)'s force RMSE to (a)'s and (b)'s per seed."""
    at = runs[runs["size"] == size].copy()
    cols = [c for c in (*METRICS, "elastic_mae_GPa", *HEXAGONAL_CONSTANTS) if c in at]
    rows = []
    for variant in VARIANT_LABELS:
        part = at[at["variant"] == variant]
        for _, r in part.iterrows():
            rows.append({"model": VARIANT_LABELS[variant], "seed": str(r["seed"]), **{c: r[c] for c in cols}})
        if len(part):
            rows.append({"model": VARIANT_LABELS[variant], "seed": "mean",
                         **{c: part[c].mean() for c in cols}})
            rows.append({"model": VARIANT_LABELS[variant], "seed": "std",
                         **{c: part[c].std(ddof=1) if len(part) > 1 else np.nan for c in cols}})
    rows.append({"model": f"reference@{level}", "seed": "", **{k: ref[k] for k in HEXAGONAL_CONSTANTS}})
    f = at.pivot_table(index="seed", columns="variant", values="forces_rmse_meV_A")
    e = at.pivot_table(index="seed", columns="variant", values="energy_rmse_meV_atom")
    if {"multifidelity", "high_energies", "high_energies_forces"} <= set(f.columns):
        # the acceptance ratios of the seed paper's claim, seed by seed
        for seed in f.index:
            rows.append({"model": "ratios (c)/(a), (c)/(b)", "seed": str(seed),
                         "F_rmse_c_over_a": f.loc[seed, "multifidelity"] / f.loc[seed, "high_energies"],
                         "F_rmse_c_over_b": f.loc[seed, "multifidelity"] / f.loc[seed, "high_energies_forces"],
                         "E_rmse_c_over_a": e.loc[seed, "multifidelity"] / e.loc[seed, "high_energies"]})
    return pd.DataFrame(rows)


def learning_curve(runs: pd.DataFrame, path, level: str, n_test: int) -> None:
    """High-level test RMSE of energies and forces against the number of high-level training
    energies: (a) and (c), mean over seeds with their range; (b) at its size as a reference band."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker

    from ..plots import STYLE, save

    colors = {"high_energies": "#c44e52", "multifidelity": "#4c72b0", "high_energies_forces": "0.35"}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"wspace": 0.28})
        for ax, col, what in ((axes[0], "energy_rmse_meV_atom", "energy RMSE (meV/atom)"),
                              (axes[1], "forces_rmse_meV_A", "force RMSE (meV/Å)")):
            for variant in ("high_energies", "multifidelity"):
                g = runs[runs["variant"] == variant].groupby("size")[col]
                if not len(g):
                    continue
                mean, lo, hi = g.mean(), g.min(), g.max()
                ax.errorbar(mean.index, mean.values, yerr=[mean - lo, hi - mean], marker="o", capsize=3,
                            color=colors[variant], label=VARIANT_LABELS[variant])
            b = runs[runs["variant"] == "high_energies_forces"]
            if len(b):
                n = int(b["size"].iloc[0])
                ax.axhspan(b[col].min(), b[col].max(), color=colors["high_energies_forces"], alpha=0.15, lw=0)
                ax.axhline(b[col].mean(), color=colors["high_energies_forces"], ls="--",
                           label=f"{VARIANT_LABELS['high_energies_forces']}, {n} structures")
                ax.annotate(f"(b) {b[col].mean():.3g}", (1.0, b[col].mean()), xycoords=("axes fraction", "data"),
                            xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom", fontsize=8,
                            color=colors["high_energies_forces"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            # head room: (b)'s label sits above its line, which may be the highest thing drawn
            ax.margins(y=0.15)
            sizes = sorted(runs["size"].unique())
            ax.xaxis.set_major_locator(mticker.FixedLocator(sizes))
            ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%d"))
            ax.xaxis.set_minor_locator(mticker.NullLocator())
            # readable numbers on a log axis that may span less than a decade
            ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="both", labelsize=8)  # one size: major and minor labels mix on a short log axis
            ax.set_xlabel(f"high-level ({level}) training energies")
            ax.set_ylabel(f"test {what}")
            ax.grid(True, which="both", alpha=0.25)
        handles, labels = axes[1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, fontsize=9)
        fig.subplots_adjust(bottom=0.24, top=0.88)
        fig.suptitle(f"Multi-fidelity learning curve at the high level ({n_test} test structures); "
                     "points: mean over seeds, bars: their range")
        save(fig, path)
