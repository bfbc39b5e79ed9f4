"""Figures, in one style: labelled axes with units, legends, saved atomically as PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .elastic import HEXAGONAL_CONSTANTS  # noqa: E402
from .io import atomic_path  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}


def save(fig, path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def dataset_overview(ds, path, title: str = "") -> None:
    """Energy per atom vs volume per atom by configuration type, and the force distribution."""
    with plt.rc_context(STYLE):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"wspace": 0.75})
        e = ds.energy / ds.n_atoms
        v = ds.volume / ds.n_atoms
        # colour = structure (the part before "/"), marker = kind of configuration
        groups = sorted({t.split("/")[0] for t in ds.config_type})
        kinds = sorted({t.split("/")[-1] for t in ds.config_type})
        colours = {g: plt.get_cmap("tab10")(k % 10) for k, g in enumerate(groups)}
        markers = dict(zip(kinds, "o^sDv<>pP*X"))
        for t in sorted(set(ds.config_type.tolist())):
            sel = (ds.config_type == t) & ds.energy_mask
            g, kind = t.split("/")[0], t.split("/")[-1]
            ax1.scatter(v[sel], e[sel], s=14, color=colours[g], marker=markers[kind],
                        alpha=0.8, label=f"{t} ({sel.sum()})")
        ax1.set_xlabel("volume per atom (Å³)")
        ax1.set_ylabel("energy per atom (eV)")
        ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        per_atom = np.repeat(ds.forces_mask, ds.n_atoms)
        f = ds.forces[per_atom].ravel()
        if f.size:
            ax2.hist(f, bins=80, color="0.3")
            ax2.set_yscale("log")
            ax2.set_title(f"force components: RMS {np.sqrt(np.mean(f**2)):.3f} eV/Å")
        ax2.set_xlabel("force component (eV/Å)")
        ax2.set_ylabel("count")
        fig.suptitle(f"{title}: {len(ds)} configurations, {int(ds.n_atoms.sum())} atoms")
        save(fig, path)


def training_curve(rows, path, title: str = "") -> None:
    """Loss and validation errors per epoch of a bottom-up training log."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    with plt.rc_context(STYLE):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        ax1.semilogy(df["epoch"], df["train_loss"], label="train")
        ax1.semilogy(df["epoch"], df["val_loss"], label="validation")
        if "best_epoch" in df and len(df):
            best = int(df["best_epoch"].iloc[-1])
            ax1.axvline(best, color="0.5", ls=":", label=f"best epoch {best}")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("loss")
        ax1.legend()
        # every validation error column: val_<quantity>_rmse_<unit>, or val_<level>_<quantity>_...
        # for the multi-fidelity trainer's levels
        units = {"_rmse_meV_atom": " (meV/atom)", "_rmse_meV_A": " (meV/Å)"}
        for col in df.columns:
            unit = next((u for u in units if col.startswith("val_") and col.endswith(u)), None)
            if unit and np.isfinite(df[col]).any():
                ax2.semilogy(df["epoch"], df[col], label=col[4:-len(unit)].replace("_", " ") + units[unit])
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("validation RMSE")
        ax2.legend()
        fig.suptitle(title)
        save(fig, path)


def parity(panels, path, title: str = "") -> None:
    """Predicted vs reference scatter plots. ``panels``: list of (reference, predicted, label, unit)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), gridspec_kw={"wspace": 0.35})
        for ax, (ref, pred, label, unit) in zip(np.atleast_1d(axes), panels):
            ref, pred = np.ravel(ref), np.ravel(pred)
            if ref.size == 0:
                ax.set_title(f"{label}: no data")
                continue
            lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1)
            ax.scatter(ref, pred, s=4, alpha=0.5, rasterized=True)
            rmse = np.sqrt(np.mean((pred - ref) ** 2))
            mae = np.mean(np.abs(pred - ref))
            ax.set_title(f"{label}\nRMSE {rmse:.4g}, MAE {mae:.4g} {unit}")
            ax.set_xlabel(f"reference ({unit})")
            ax.set_ylabel(f"model ({unit})")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_aspect("equal")
        fig.suptitle(title)
        save(fig, path)


def _mark_selected(axes, df) -> None:
    """A dashed line on every panel at the epoch whose end parameters a top-down run kept
    (``best_epoch`` of its log), labelled on the first."""
    if "best_epoch" not in df:
        return
    best = int(df["best_epoch"].iloc[-1])
    for ax in axes:
        ax.axvline(best, color="0.4", ls="--", lw=0.9)
    axes[0].text(best, 1.0, " selected", transform=axes[0].get_xaxis_transform(), fontsize=8, va="top",
                 color="0.3")


def rdf_difftre_curve(rows, state_point: str, path, title: str = "") -> None:
    """DiffTRe on g(r): the RDF error (root of the loss, reweighted from each epoch's frames,
    before the update and at the epoch's end) and the frames' effective sample size under the
    updated parameters, per epoch."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"wspace": 0.3})
        ax = axes[0]
        ax.plot(df["epoch"], np.sqrt(df[f"{state_point}_loss"]), "o-", label="before the update")
        if f"{state_point}_loss_end" in df:
            ax.plot(df["epoch"], np.sqrt(df[f"{state_point}_loss_end"]), "s--", ms=4, label="at the epoch's end")
        ax.set_ylim(0, None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("RDF error (RMS of g, reweighted)")
        ax.legend(fontsize=8)
        ax = axes[1]
        ax.plot(df["epoch"], df[f"{state_point}_ess"], "o-")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("epoch")
        ax.set_ylabel("effective sample size after the update")
        _mark_selected(axes, df)
        fig.suptitle(title)
        save(fig, path)


def top_down_curve(rows, state_points, path, title: str = "") -> None:
    """DiffTRe training: losses, predicted elastic constants and pressure per state point with
    their experimental targets, the pressure slopes where they are targets, and the effective
    sample size, per epoch."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    names = HEXAGONAL_CONSTANTS
    slopes = any(sp.slope_targets for sp in state_points)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 5 if slopes else 4, figsize=(22.5 if slopes else 18, 4.2),
                                 gridspec_kw={"wspace": 0.3})
        ax = axes[0]
        ax.semilogy(df["epoch"], df["exp_loss"], label="EXP loss during the epoch")
        if "exp_loss_end" in df:
            ax.semilogy(df["epoch"], df["exp_loss_end"], label="EXP loss at its end (reweighted)")
        if "val_loss" in df:
            ax.semilogy(df["epoch"], df["val_loss"], label="DFT validation loss at its end")
        if "dft_train_loss" in df and np.isfinite(df["dft_train_loss"]).any():
            ax.semilogy(df["epoch"], df["dft_train_loss"], label="DFT training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        colours = {n: plt.get_cmap("tab10")(k) for k, n in enumerate(names)}
        styles = ["-", "--", ":", "-."]
        for k, sp in enumerate(state_points):
            ls = styles[k % len(styles)]
            for n in names:
                col = f"{sp.name}_{n}"
                if col in df:
                    axes[1].plot(df["epoch"], df[col], ls=ls, color=colours[n],
                                 label=f"{n}" if k == 0 else None)
                    if n in sp.targets:
                        axes[1].plot(df["epoch"].iloc[-1] + 0.4, sp.targets[n], marker="<",
                                     color=colours[n], ms=7)
            # P always; its normal parts (basal plane, c axis) when they are targets
            for n, colour, short in (("pressure", "k", "P"), ("pressure_a", "C0", "P_a"),
                                     ("pressure_c", "C3", "P_c")):
                if f"{sp.name}_{n}" in df and (n == "pressure" or n in sp.targets):
                    axes[2].plot(df["epoch"], df[f"{sp.name}_{n}"], ls=ls, color=colour,
                                 label=f"{short} {sp.name}")
            # the kept parameters' P: the update's above is mid-epoch, before the steps after it
            if f"{sp.name}_pressure_end" in df:
                axes[2].plot(df["epoch"], df[f"{sp.name}_pressure_end"], ls=ls, color="C2", marker="o", ms=3,
                             label=f"P {sp.name} at the epoch's end")
            if f"{sp.name}_ess" in df:
                axes[3].plot(df["epoch"], df[f"{sp.name}_ess"], ls=ls, label=sp.name)
            for n, colour, short in (("pressure_slope", "k", "dP/dT"), ("pressure_a_slope", "C0", "dP_a/dT"),
                                     ("pressure_c_slope", "C3", "dP_c/dT")):
                if slopes and n in sp.targets and f"{sp.name}_{n}" in df:
                    axes[4].plot(df["epoch"], df[f"{sp.name}_{n}"], ls=ls, color=colour, label=f"{short} {sp.name}")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("elastic constant (GPa)")
        axes[1].set_title("line style = state point; ◀ = experiment", fontsize=9)
        axes[1].legend(fontsize=8, ncol=2)
        axes[2].axhline(0.0, color="0.5", lw=0.8)
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("pressure (GPa)")
        axes[2].legend(fontsize=8)
        axes[3].set_xlabel("epoch")
        axes[3].set_ylabel("effective sample size after the update")
        axes[3].set_ylim(0, 1.05)
        axes[3].legend(fontsize=8)
        if slopes:
            axes[4].axhline(0.0, color="0.5", lw=0.8)
            axes[4].set_xlabel("epoch")
            axes[4].set_ylabel("dP/dT along the experimental lattice (MPa/K)")
            axes[4].set_title("0 = the measured thermal expansion", fontsize=9)
            axes[4].legend(fontsize=8)
        _mark_selected(axes, df)
        fig.suptitle(title)
        save(fig, path)


def ibi_figure(r, g_target, g_iter, grid, curves: dict, rows, best_iteration: int | None, path,
               title: str = "") -> None:
    """Iterative Boltzmann Inversion: g(r) of every iteration against the target, the learned
    correction v(r) per iteration (the kept one bold), and the RDF error and pressure per
    iteration. ``best_iteration`` is the 0-based iteration whose table was kept, or None for a
    kept mean of tables (no iteration sampled it: `validate_ibi` measures it)."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    n = len(g_iter)
    cmap = plt.get_cmap("viridis")
    shade = [cmap(0.9 * k / max(n - 1, 1)) for k in range(n)]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"wspace": 0.28, "width_ratios": [1.3, 1.1, 1]})
        ax = axes[0]
        has = np.isfinite(g_target)
        for k in range(n):
            ax.plot(r, g_iter[k], color=shade[k], lw=2.0 if k in (0, best_iteration) else 0.9,
                    label=f"iteration {k + 1}" if k in (0, n - 1, best_iteration) else None)
        ax.plot(r[has], g_target[has], "o", color="crimson", ms=2.5, label="target", zorder=5)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        # from just below the first pairs of the target or of any iteration (close contacts the
        # target never has must show); the core, g = 0, carries no information
        paired = (has & (np.nan_to_num(g_target) > 0.05)) | np.any(np.asarray(g_iter) > 0.02, axis=0)
        start = r[paired][0] - 0.4 if paired.any() else 0
        ax.set_xlim(max(0.0, start), r[-1])
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title("radial distribution function")
        # inset: the first peak, over the low second shell on the right
        if has.any():
            peak = int(np.nanargmax(np.where(has, g_target, np.nan)))
            ins = ax.inset_axes([0.6, 0.5, 0.38, 0.38])
            near = np.nonzero(np.abs(r - r[peak]) <= 0.4)[0]
            lo, hi = int(near[0]), int(near[-1]) + 1
            for k in range(n):
                ins.plot(r[lo:hi], g_iter[k][lo:hi], color=shade[k], lw=1.8 if k == best_iteration else 0.8)
            ins.plot(r[lo:hi][has[lo:hi]], g_target[lo:hi][has[lo:hi]], "o", color="crimson", ms=2.5)
            top = max(float(np.max(g_iter[:, lo:hi])), float(np.nanmax(g_target[lo:hi])))
            ins.set_ylim(0.75 * top, 1.03 * top)
            ins.tick_params(labelsize=7)
            ins.set_title("first peak", fontsize=7)
        ax = axes[1]
        names = [c for c in curves if c.startswith("v_iter")]
        for k, c in enumerate(names):
            ax.plot(grid, 1e3 * np.asarray(curves[c]), color=shade[k], lw=0.9)
        if "v_selected_eV" in curves:
            ax.plot(grid, 1e3 * np.asarray(curves["v_selected_eV"]), color="k", lw=2.2,
                    label=(f"kept (sampled in iteration {best_iteration + 1})" if best_iteration is not None
                           else "kept (mean of the last tables)"))
        # the tables each iteration ran with; the last update's (dashed) was not sampled
        if "v_after_last_update_eV" in curves:
            ax.plot(grid, 1e3 * np.asarray(curves["v_after_last_update_eV"]), color=shade[-1], lw=0.9, ls="--",
                    label="after the last update")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("pair correction v(r) (meV)")
        ax.legend(fontsize=8)
        ax.set_title("learned correction (colour: iteration)")
        ax = axes[2]
        it = df["epoch"].to_numpy()
        ax.plot(it, df["rdf_rmse"], "o-", color="C0", label="RDF error (RMS of g)")
        if best_iteration is not None:
            ax.plot([best_iteration + 1], [df["rdf_rmse"].iloc[best_iteration]], "*", ms=14, color="C0", label="kept")
        if "rdf_noise" in df:  # older logs lack it
            ax.plot(it, df["rdf_noise"], ":", color="C0", lw=1.5, label="sampling noise")
            ax.plot(it, df["rdf_excess"], "^-", color="C2", ms=4, lw=1.0, label="beyond noise")
        top = float(df["rdf_rmse"].max())
        ax.set_ylim(0, 1.6 * top)  # the legend above the curves
        ax.set_xlabel("iteration")
        ax.set_ylabel("RDF error")
        ax.set_xticks(list(it[::max(1, -(-len(it) // 10))]))  # at most ~10 labelled iterations
        ax2 = ax.twinx()
        ax2.plot(it, df["pressure_gpa"], "s--", color="C3", ms=4, label="pressure")
        ax2.set_ylabel("pressure (GPa)", color="C3")
        lo, hi = float(df["pressure_gpa"].min()), float(df["pressure_gpa"].max())
        span = max(hi - lo, 0.1)
        ax2.set_ylim(lo - 0.05 * span, hi + 0.7 * span)
        ax2.grid(False)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", ncol=2, framealpha=0.85)
        ax.set_title("convergence")
        fig.suptitle(title)
        save(fig, path)


def ibi_validation_figure(r, g_target, g_target_err, gs: dict, rows, r_range, path, title: str = "") -> None:
    """The validation of an IBI model: g(r) of each model validated (``gs``: label -> (g, standard
    error); "start" and "kept") against the target, and their differences from it with the
    combined standard error as a band, over the range the RDF error uses (``r_range``); the
    legend gives each RDF error with the error sampling noise alone would give (``rows``)."""
    r, g_target, g_target_err = np.asarray(r), np.asarray(g_target, float), np.asarray(g_target_err, float)
    report = {row["model"]: row for row in rows}
    style = {"start": ("0.45", "start model"), "kept": ("C0", "kept correction")}
    has = np.isfinite(g_target)
    used = has & (r >= r_range[0]) & (r <= r_range[1])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"wspace": 0.25})
        ax, dx = axes
        for k, (g, err) in gs.items():
            color, label = style.get(k, (None, k))
            row = report[k]
            ax.plot(r, g, color=color, lw=1.5, label=label)
            band = np.sqrt(np.asarray(err) ** 2 + g_target_err**2)
            dx.fill_between(r[used], (g - g_target - band)[used], (g - g_target + band)[used], color=color, alpha=0.2, lw=0)
            dx.plot(r[used], (g - g_target)[used], color=color, lw=1.5,
                    label=f"{label}: RDF error {row['rdf_rmse']:.4f} (noise {row['rdf_noise']:.4f}), "
                          f"{row['production_ps']:g} ps")
        ax.plot(r[has], g_target[has], "o", color="crimson", ms=2.5, label="target", zorder=5)
        paired = has & (np.nan_to_num(g_target) > 0.05)
        ax.set_xlim(max(0.0, r[paired][0] - 0.4) if paired.any() else 0.0, r[-1])
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        ax.legend(fontsize=8)
        ax.set_title("radial distribution function")
        dx.axhline(0.0, color="crimson", lw=0.8)
        dx.set_xlim(*ax.get_xlim())
        dx.set_xlabel("r (Å)")
        dx.set_ylabel("g − g_target")
        if "start" in report and "kept" in report:
            dx.set_title(f"difference from the target: error {report['start']['rdf_rmse'] / report['kept']['rdf_rmse']:.1f}x "
                         "lower (bands: ±1 standard error)", fontsize=10)
        lo, hi = dx.get_ylim()
        dx.set_ylim(lo, hi + 0.3 * (hi - lo))  # the legend above the curves
        dx.legend(fontsize=8, loc="upper right")
        fig.suptitle(title)
        save(fig, path)
