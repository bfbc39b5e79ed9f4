"""Figures, in one style: labelled axes with units, legends, saved atomically as PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
