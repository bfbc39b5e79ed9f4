"""The `train_multifidelity` job and the models of the seed paper's comparison: from a dataset of
several levels of theory and its split (by structure) to a model file, a log and a figure.

Variants (Messerly et al. 2025), all evaluated on the high level's test structures:

* ``multifidelity`` (c): one head per configured level, each level trained on the labels its
  weights select (demo: low-level energies, forces and virials, high-level energies only).
* ``high_energies`` (a): one head, the high level's energies only.
* ``high_energies_forces`` (b): one head, the high level's energies and forces.

``size`` sets how many high-level training structures a variant uses and ``seed`` the
initialisation, batch order and choice of those structures, so that (a), (b) and (c) of one
size and seed see the same high-level structures.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import numpy as np

from ..data import dataset as D
from ..data.levels import level_counts
from ..data.splits import load_split
from ..io import InputError
from ..model.batch import prepare
from ..model.dimenet import species_index
from ..model.file import save_model
from ..model.params import EnergyScale, fit_head_shifts, init_params
from ..model.settings import dtype, model_settings
from .bottom_up import data_derived
from .multifidelity import LevelSettings, MultiFidelitySettings, fit_multifidelity, training_sets, used_labels

log = logging.getLogger(__name__)

VARIANTS = {"multifidelity": "(c) multi-fidelity: low-level E+F, high-level E",
            "high_energies": "(a) single fidelity: high-level E",
            "high_energies_forces": "(b) single fidelity: high-level E+F"}


def training_length(cfg: dict, comparison: bool = False) -> tuple[int, int]:
    """(epochs, steps per epoch): ``multifidelity.epochs`` and ``steps_per_epoch``, or for a model
    of the comparison ``multifidelity.comparison``'s own where they are set (null: the section's).
    Only the keys this reads need be in ``cfg`` (the rules pass the section's only where the
    comparison's are null)."""
    m = cfg["multifidelity"]
    own = m["comparison"] if comparison else {}
    return tuple(m[k] if own.get(k) is None else own[k] for k in ("epochs", "steps_per_epoch"))


def multifidelity_settings(cfg: dict, variant: str = "multifidelity", size: int | None = None,
                           seed: int | None = None, comparison: bool = False) -> MultiFidelitySettings:
    """The trainer's settings for one variant from ``multifidelity`` of the configuration; ``size``
    (high-level training structures) and ``seed`` override the configured ones; ``comparison``: a
    model of the seed paper's comparison, trained for the comparison's own length (every variant
    the same number of steps)."""
    m = cfg["multifidelity"]
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    epochs, steps_per_epoch = training_length(cfg, comparison)
    levels = [LevelSettings(name=name, **lv) for name, lv in m["levels"].items()]
    high = next(lv for lv in levels if lv.name == m["high"])
    if size is not None:
        high = dataclasses.replace(high, train_size=int(size))
    if variant == "high_energies":
        levels = [dataclasses.replace(high, forces_weight=0.0, virial_weight=0.0)]
    elif variant == "high_energies_forces":
        levels = [dataclasses.replace(high, forces_weight=m["comparison"]["forces_weight"], virial_weight=0.0)]
    else:
        levels = [high if lv.name == high.name else lv for lv in levels]
    return MultiFidelitySettings(levels=tuple(levels), epochs=epochs, steps_per_epoch=steps_per_epoch,
                                 lr_start=m["lr_start"], lr_end=m["lr_end"], energy_per_atom=m["energy_per_atom"],
                                 virial_per_atom=m["virial_per_atom"], patience=m["patience"],
                                 correction_l2=m["correction_l2"] if len(levels) > 1 else 0.0,
                                 seed=m["seed"] if seed is None else int(seed))


def _force_rms(ds: D.Dataset, idx) -> float:
    sub = ds.subset(idx)
    per_atom = np.repeat(sub.forces_mask, sub.n_atoms)
    return float(np.sqrt(np.mean(sub.forces[per_atom] ** 2))) if per_atom.any() else 0.0


def train_multifidelity(cfg: dict, dataset_path, split_path, model_path, log_csv, checkpoint_path,
                        figure_path=None, variant: str = "multifidelity", size: int | None = None,
                        seed: int | None = None, comparison: bool = False, max_epochs_this_run=None):
    t0 = time.time()
    mfs = multifidelity_settings(cfg, variant, size, seed, comparison)
    model_seed = cfg["model"]["seed"] if seed is None else int(seed)
    full = D.load(dataset_path, allowed_species=cfg["species"])
    split = load_split(split_path, len(full))
    log.info("dataset %s: %s", dataset_path, level_counts(full))
    missing = sorted(set(mfs.heads) - set(full.fidelity.tolist()))
    if missing:
        raise InputError(dataset_path, "fidelity", f"no configurations at levels {missing} "
                                                     f"(levels there: {sorted(set(full.fidelity.tolist()))})")
    # The output scale σ is one statistic of the file (the force RMS of its training structures at
    # every level), the same for every variant: the comparison's models differ only in the labels
    # they train on, not in their normalisation.
    force_rms = _force_rms(full, split["train"])
    if force_rms == 0:
        force_rms = 1.0
        log.info("the dataset has no forces: energy scale 1 eV")
    keep = np.nonzero(np.isin(full.fidelity, mfs.heads))[0]
    ds = full.subset(keep)
    split = {k: np.nonzero(np.isin(keep, v))[0] for k, v in split.items()}
    # (settings of runs made before `head_form` existed lack it: their heads were independent)
    settings = model_settings(cfg, heads=mfs.heads, head_form=cfg["multifidelity"].get("head_form", "independent"))
    data = prepare(ds, settings, progress=log.info)
    level_of = np.array([mfs.heads.index(f) for f in ds.fidelity])
    used = used_labels(data, level_of, mfs)
    train = training_sets(level_of, used, split["train"], mfs)
    structures = np.unique(np.concatenate(list(train.values())))  # the configurations it trains on
    settings, _ = data_derived(settings, data, structures)
    # per-head reference energies, each fitted on that head's own training energies
    with_e = np.concatenate([v[used["energy"][v]] for v in train.values()])
    counts = np.stack([np.bincount(species_index(ds.species[ds.atoms_slice(i)], settings.species),
                                   minlength=len(settings.species)) for i in with_e])
    shifts = fit_head_shifts(counts, ds.energy[with_e], level_of[with_e], mfs.heads)
    log.info("%s; heads %s; energy scale %.3f eV; reference energies %s eV/atom; neighbour capacity %d",
             VARIANTS[variant], list(mfs.heads), force_rms, np.round(shifts, 4).tolist(), data.capacity)
    params = init_params(settings, jax.random.PRNGKey(model_seed),
                         EnergyScale(np.full(len(mfs.heads), force_rms), shifts), dtype=dtype(cfg))
    inputs = {"dataset_sha256": D.file_sha256(dataset_path), "split_sha256": D.file_sha256(split_path),
              "model": settings.to_dict(), "model_seed": model_seed, "variant": variant}
    result = fit_multifidelity(settings, params, data, level_of, split, mfs, checkpoint_path, log_csv=log_csv,
                               dtype=dtype(cfg), inputs=inputs, progress=log.info,
                               max_epochs_this_run=max_epochs_this_run)
    save_model(model_path, settings, result.best_params, metadata={
        "scheme": f"multi-fidelity {variant}", "variant": VARIANTS[variant], "trained_on": str(dataset_path),
        "dataset_sha256": inputs["dataset_sha256"], "split_sha256": inputs["split_sha256"],
        "training_configurations": {k: len(v) for k, v in train.items()}, "model_seed": model_seed,
        "best_epoch": result.best_epoch, "epochs_run": len(result.rows), "stopped_early": result.stopped_early,
        "trainer": dataclasses.asdict(mfs)})
    Path(checkpoint_path).unlink(missing_ok=True)  # done: a later run of this job starts afresh
    if figure_path is not None:
        from ..plots import training_curve
        training_curve(result.rows, figure_path, title=f"Multi-fidelity training, {VARIANTS[variant]}")
    log.info("best epoch %d of %d; wrote %s (%.1f min)", result.best_epoch, len(result.rows), model_path,
             (time.time() - t0) / 60)
    return result
