"""The paper's evaluation figures: every model in one colour throughout, experiment in black."""

from __future__ import annotations

import pandas as pd

from .. import experiment
from ..elastic import HEXAGONAL_CONSTANTS
from ..plots import STYLE, plt, save
from .compare import experimental_moduli, per_model, read_models

LABELS = {"pretrained": "DFT pre-trained", "sequential": "DFT, EXP sequential", "fused": "DFT & EXP fused",
          "reference": "reference potential", "ibi": "DFT + IBI pair correction"}
EXP = dict(color="k", marker="o", ls="none", ms=4, mfc="none", label="experiment", zorder=5)


def colours(models) -> dict:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(k % 10) for k, m in enumerate(models)}


def _label(name: str) -> str:
    """Legend name of a potential: ``<model>`` or ``<model>@<head>`` (a reference level, a head)."""
    model, _, head = name.partition("@")
    return f"{LABELS.get(model, model)} ({head})" if head else LABELS.get(model, model)


def _series(ax, df, x, y, colour, label, err=None, **kw):
    d = df.sort_values(x)
    e = d[err] if err and err in d.columns else None
    ax.errorbar(d[x], d[y], yerr=e, color=colour, label=label, marker=kw.pop("marker", "s"), ms=3,
                capsize=2, lw=1.2, **kw)


def elastic_constants(models: pd.DataFrame, el: pd.DataFrame, path) -> None:
    c = colours(models["model"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 5, figsize=(17, 3.6), sharex=True)
        for ax, name in zip(axes, HEXAGONAL_CONSTANTS):
            ax.plot(el["T_K"], el[f"{name}_GPa"], **EXP)
            for m, g in models.groupby("model", sort=False):
                _series(ax, g, "T_K", name, c[m], _label(m), f"{name}_err")
            ax.set_title(name)
            ax.set_xlabel("temperature (K)")
        axes[0].set_ylabel("elastic constant (GPa)")
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle("hcp adiabatic elastic constants by stress fluctuation (NVT at the experimental lattice)")
        save(fig, path)


def moduli(models: pd.DataFrame, el: pd.DataFrame, path) -> None:
    c = colours(models["model"].unique())
    exp = experimental_moduli(el)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharex=True, gridspec_kw={"wspace": 0.35})
        for ax, (name, title, unit) in zip(axes, (("B_V", "bulk modulus B", "GPa"), ("G_V", "shear modulus G", "GPa"),
                                                  ("nu_V", "Poisson ratio ν", ""))):
            ax.plot(exp["T_K"], exp[name], **EXP)
            for m, g in models.groupby("model", sort=False):
                _series(ax, g, "T_K", name, c[m], _label(m), f"{name}_err")
            ax.set_title(f"{title} (Voigt)")
            ax.set_xlabel("temperature (K)")
            ax.set_ylabel(f"{title} ({unit})" if unit else title)
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle("moduli of the adiabatic hcp elastic constants (stress fluctuation, NVT at the experimental lattice)")
        save(fig, path)


def lattice_temperature(models: pd.DataFrame, lat: pd.DataFrame, path) -> None:
    c = colours(models["model"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharex=True, gridspec_kw={"wspace": 0.35})
        lat = lat.assign(covera=lat["c_A"] / lat["a_A"])
        for ax, (name, title) in zip(axes, (("a_A", "a (Å)"), ("c_A", "c (Å)"), ("covera", "c/a"))):
            ax.plot(lat["T_K"], lat[name], **EXP)
            for m, g in models.groupby("model", sort=False):
                _series(ax, g, "T_K", name, c[m], _label(m), f"{name}_err")
            ax.set_xlabel("temperature (K)")
            ax.set_ylabel(title)
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle("hcp lattice constants, anisotropic NPT at zero pressure")
        save(fig, path)


def lattice_pressure(models: pd.DataFrame, ref: pd.DataFrame | None, path) -> None:
    c = colours(models["model"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharex=True, gridspec_kw={"wspace": 0.35})
        models = models.assign(covera=models["c_A"] / models["a_A"])
        for ax, (name, title) in zip(axes, (("a_A", "a (Å)"), ("c_A", "c (Å)"), ("covera", "c/a"))):
            if ref is not None:
                ax.plot(ref["P_GPa"], ref[name] if name != "covera" else ref["c_A"] / ref["a_A"],
                        **(EXP | {"label": "reference"}))
            for m, g in models.groupby("model", sort=False):
                _series(ax, g, "P_GPa", name, c[m], _label(m), f"{name}_err")
            ax.set_xlabel("pressure (GPa)")
            ax.set_ylabel(title)
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        t = models["T_K"].iloc[0]
        fig.suptitle(f"hcp lattice constants vs pressure at {t:g} K (anisotropic NPT)")
        save(fig, path)


def phonons(bands: dict[str, pd.DataFrame], dos: dict[str, pd.DataFrame], ref: pd.DataFrame | None,
            path) -> None:
    c = colours(bands)
    with plt.rc_context(STYLE):
        fig, (ax, ax_dos) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True,
                                         gridspec_kw={"width_ratios": [4, 1], "wspace": 0.05})
        # Each potential has its own lattice, so its |q| along the path differs: every segment is
        # drawn on the first potential's span, so special points line up across potentials.
        axis = next(iter(bands.values())).groupby("segment")["distance_inv_A"].agg(["first", "last"])
        ticks = {}
        for m, b in bands.items():
            cols = [k for k in b.columns if k.startswith("band")]
            for seg, s in b.groupby("segment"):
                d = s["distance_inv_A"].to_numpy()
                x0, x1 = axis.loc[seg, "first"], axis.loc[seg, "last"]
                x = x0 + (d - d[0]) / (d[-1] - d[0]) * (x1 - x0)
                lines = ax.plot(x, s[cols], color=c[m], lw=1)
                if seg == 0:
                    lines[0].set_label(_label(m))
                # a point shared by two segments is labelled once; a jump is labelled "X|Y"
                for xp, label in ((x0, s["start"].iloc[0]), (x1, s["end"].iloc[-1])):
                    if label not in ticks.get(xp, "").split("|"):
                        ticks[xp] = f"{ticks[xp]}|{label}" if xp in ticks else label
            d = dos[m]
            ax_dos.plot(d[d.columns[1]], d[d.columns[0]], color=c[m], lw=1)
        pos = sorted(ticks)
        ax.set_xticks(pos, [ticks[p].replace("G", "Γ") for p in pos])
        for p in pos:
            ax.axvline(p, color="0.6", lw=0.6)
        ax.set_xlim(pos[0], pos[-1])
        if ref is not None:
            for _, r in ref.iterrows():
                xs = [p for p in pos if r["label"] in ticks[p].split("|")]
                ax.plot(xs, [r["frequency_THz"]] * len(xs), **(EXP | {"label": None}))
        ax.set_ylabel("frequency (THz)")
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
        ax.legend(loc="lower right")
        ax_dos.set_xlabel("DOS (states/THz)")
        ax.set_title("phonon dispersion at each potential's 0 K lattice")
        save(fig, path)


def liquid_structure(rdf: dict[str, pd.DataFrame], adf: dict[str, pd.DataFrame], rdf_ref, adf_ref,
                     temperature: float, path) -> None:
    c = colours(rdf)
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
        for m in rdf:
            a1.plot(rdf[m]["r_A"], rdf[m]["g"], color=c[m], label=_label(m))
            a2.plot(adf[m]["theta_deg"], adf[m]["p_per_deg"], color=c[m], label=_label(m))
        if rdf_ref is not None:
            a1.plot(rdf_ref["r_A"], rdf_ref["g"], **(EXP | {"label": "reference", "ms": 3}))
        if adf_ref is not None:
            a2.plot(adf_ref["theta_deg"], adf_ref["p_per_deg"], **(EXP | {"label": "reference", "ms": 3}))
        a1.set_xlabel("r (Å)")
        a1.set_ylabel("g(r)")
        a1.axhline(1.0, color="0.6", lw=0.6)
        a2.set_xlabel("bond angle θ (degrees)")
        a2.set_ylabel("p(θ) (1/degree)")
        a1.legend(loc="center left", fontsize=8)  # the empty core, r below the first peak
        fig.suptitle(f"liquid structure at {temperature:g} K")
        save(fig, path)


def diffusion(models: pd.DataFrame, exp: pd.DataFrame, path) -> None:
    c = colours(models["model"].unique())
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax.errorbar(1000.0 / exp["T_K"], 1e-9 * exp["D_1e-9_m2_s"], yerr=1e-9 * exp["uncertainty_1e-9_m2_s"],
                    **EXP, capsize=2)
        for m, g in models.groupby("model", sort=False):
            g = g.sort_values("T_K")
            ax.errorbar(1000.0 / g["T_K"], g["D_gk_m2_s"], yerr=g["D_gk_err_m2_s"], color=c[m], marker="s",
                        ms=4, capsize=2, label=f"{_label(m)} (Green–Kubo)")
            ax.errorbar(1000.0 / g["T_K"], g["D_einstein_m2_s"], yerr=g["D_einstein_err_m2_s"], color=c[m],
                        marker="^", mfc="none", ls=":", ms=4, capsize=2, label=f"{_label(m)} (Einstein)")
        ax.set_yscale("log")
        ax.set_xlabel("1000 / T (1/K)")
        ax.set_ylabel("self-diffusion coefficient D (m²/s)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        ax.set_title("liquid self-diffusion (Arrhenius plot)")
        save(fig, path)


def write_all(inputs: dict, cfg: dict, outputs: dict[str, str]) -> None:
    """Every figure in ``outputs`` (``{figure name: png}``) from the per-model tables in
    ``inputs`` (keys ``<prop>__<model>__<name>``, as for ``compare.write_all``)."""
    def models(prop, name):
        return per_model(inputs, prop, name)

    def frames(prop, name):
        return {m: pd.read_csv(p) for m, p in models(prop, name).items()}

    def optional(path, columns):
        return experiment.load_table(path, columns) if path else None

    refs = cfg["evaluation"]["references"]
    el = experiment.elastic_constants(cfg["experiment"]["elastic_constants"])
    makers = {
        "elastic_constants": lambda p: elastic_constants(read_models(models("elastic_hcp", "table")), el, p),
        "moduli": lambda p: moduli(read_models(models("elastic_hcp", "table")), el, p),
        "lattice_temperature": lambda p: lattice_temperature(
            read_models(models("lattice_temperature", "table")),
            experiment.lattice_constants(cfg["experiment"]["lattice_constants"]), p),
        "lattice_pressure": lambda p: lattice_pressure(read_models(models("lattice_pressure", "table")),
                                                       optional(refs["lattice_pressure"], ("P_GPa", "a_A", "c_A")), p),
        "phonons": lambda p: phonons(frames("phonons", "bands"), frames("phonons", "dos"),
                                     None if not refs["phonons"] else pd.read_csv(refs["phonons"], comment="#"), p),
        "liquid_structure": lambda p: liquid_structure(
            frames("liquid", "rdf"), frames("liquid", "adf"), optional(refs["rdf"], ("r_A", "g")),
            optional(refs["adf"], ("theta_deg", "p_per_deg")), cfg["evaluation"]["liquid"]["temperature"], p),
        "diffusion": lambda p: diffusion(read_models(models("diffusion", "table")),
                                         experiment.diffusion(cfg["experiment"]["diffusion"]), p),
    }
    for name, path in outputs.items():
        makers[name](path)
