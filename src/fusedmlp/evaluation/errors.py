"""Errors of a model on the test split of a labelled dataset: tables and parity plots.

A model with several heads is measured at one, ``<model>@<head>``, on the test configurations at
that head's level of theory (a dataset of several levels holds each test structure at each)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..data import dataset as D
from ..data.splits import load_split
from ..io import write_text
from ..model.batch import batch_predictor, error_metrics, indexed_predictor, prepare
from ..model.file import load_head
from ..model.settings import dtype, model_settings
from ..plots import parity
from ..tables import to_markdown, write_table
from .potentials import split_name

log = logging.getLogger(__name__)


def level_indices(ds, indices, level: str | None, source) -> np.ndarray:
    """The configurations among ``indices`` at level of theory ``level`` (all for ``None``)."""
    indices = np.asarray(indices)
    if level is None:
        return indices
    sel = indices[ds.fidelity[indices] == level]
    if len(sel) == 0:
        raise ValueError(f"{source}: no configurations at level {level!r} among these (levels there: "
                         f"{sorted(set(ds.fidelity[indices].tolist()))})")
    return sel


def model_errors(settings, params, head: int, data, idx, dtype) -> tuple[dict, np.ndarray, list, np.ndarray]:
    """(error metrics, U, F, W) of the model at ``head`` on configurations ``idx`` of ``data``."""
    predict = indexed_predictor(batch_predictor(settings, data.capacity, head), data, dtype)
    u, f, w = predict(params, idx)
    return error_metrics(data, np.asarray(idx), u, f, w), u, f, w


def errors_by_type(data, config_type, idx, u, f, w, model_name: str) -> list[dict]:
    """One row of errors per configuration type among ``idx`` (``u, f, w``: predictions for ``idx``).

    The mean energy error per type is what a correction that is not uniform across phases shows:
    a top-down correction that raises bcc against hcp costs the reference test through the phases'
    relative energies, which the totals do not separate from noise."""
    idx = np.asarray(idx)
    types = np.asarray(config_type)[idx]
    rows = []
    for t in sorted(set(types.tolist())):
        sel = np.nonzero(types == t)[0]
        m = error_metrics(data, idx[sel], u[sel], [f[k] for k in sel], w[sel])
        rows.append({"model": model_name, "config_type": t or "(none)", "configurations": len(sel),
                     "energy_offset_meV_atom": 1e3 * m["energy_offset"],
                     "energy_rmse_meV_atom": 1e3 * m["energy_rmse"],
                     "forces_rmse_meV_A": 1e3 * m["forces_rmse"],
                     "virial_rmse_meV_atom": 1e3 * m["virial_rmse"]})
    return rows


def dft_errors(cfg: dict, model_path, dataset_path, split_path, table_csv, table_md, figure,
                model_name: str = "model", subset: str = "test", by_type_csv=None) -> dict:
    _, head = split_name(model_name)
    settings, params, meta, index = load_head(model_path, head, expected=model_settings(cfg))
    ds = D.load(dataset_path, allowed_species=cfg["species"])
    split = load_split(split_path, len(ds))
    idx = split[subset]
    if len(idx) == 0:
        raise ValueError(f"{split_path}: the {subset} split is empty")
    idx = level_indices(ds, idx, head, dataset_path)
    data = prepare(ds, settings)
    m, u, f, w = model_errors(settings, params, index, data, idx, dtype(cfg))
    rows = [{"model": model_name, "dataset": str(dataset_path), "split": subset,
             "configurations": len(idx),
             "energy_rmse_meV_atom": 1e3 * m["energy_rmse"], "energy_mae_meV_atom": 1e3 * m["energy_mae"],
             "energy_offset_meV_atom": 1e3 * m["energy_offset"],
             "energy_rmse_no_offset_meV_atom": 1e3 * m["energy_rmse_no_offset"],
             "forces_rmse_meV_A": 1e3 * m["forces_rmse"], "forces_mae_meV_A": 1e3 * m["forces_mae"],
             "virial_rmse_meV_atom": 1e3 * m["virial_rmse"], "virial_mae_meV_atom": 1e3 * m["virial_mae"],
             "reference_forces_rms_meV_A": 1e3 * float(np.sqrt(np.mean(np.concatenate(
                 [data.forces[i, :data.n_atoms[i]] for i in idx]) ** 2))),
             "n_virial": m["n_virial"]}]
    by_type = write_table(errors_by_type(data, ds.config_type, idx, u, f, w, model_name), csv_path=by_type_csv)
    write_text(table_md, to_markdown(pd.DataFrame(rows), f"{model_name}: errors on the {subset} split")
               + "\n## Per configuration type (energy offset: the mean error)\n\n" + to_markdown(by_type))
    write_table(rows, csv_path=table_csv)
    n = data.n_atoms[idx]
    em, fm, wm = data.energy_mask[idx], data.forces_mask[idx], data.virial_mask[idx]
    f_ref = np.concatenate([data.forces[i, :data.n_atoms[i]] for i, k in zip(idx, fm) if k] or [np.zeros((0, 3))])
    f_pred = np.concatenate([fi for fi, k in zip(f, fm) if k] or [np.zeros((0, 3))])
    parity([(data.energy[idx][em] / n[em], u[em] / n[em], "energy per atom", "eV/atom"),
            (f_ref, f_pred, "force components", "eV/Å"),
            ((data.virial[idx] / n[:, None, None])[wm], (w / n[:, None, None])[wm], "virial per atom", "eV/atom")],
           figure, title=f"{model_name} on the {subset} split of {dataset_path}")
    log.info("%s on %d %s configurations: energy %.2f meV/atom, forces %.1f meV/Å, virial %.1f meV/atom (RMSE)",
             model_name, len(idx), subset, rows[0]["energy_rmse_meV_atom"], rows[0]["forces_rmse_meV_A"],
             rows[0]["virial_rmse_meV_atom"])
    return rows[0]
