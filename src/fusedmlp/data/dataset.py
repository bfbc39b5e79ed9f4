"""The canonical labelled-configuration dataset.

One dataset is one ``.npz`` file (no pickles, written atomically) holding a ragged set of
periodic configurations that may differ in size. Per-atom arrays are concatenated over
configurations; ``n_atoms`` gives the split points.

Conventions (the same as ASE and the DeePMD-style release format of the fused-training paper):

* ``box[k]`` rows are the lattice vectors a, b, c in Å; a position is ``frac @ box``.
* ``virial`` is W = -∂U/∂ε in eV (not divided by volume): the derivative of the energy with
  respect to a homogeneous strain ε of the box at fixed fractional coordinates, sign chosen so
  that W is positive under compression. The potential-energy part of the stress tensor
  (tension positive, as in ASE) is ``-W / V``.
* Missing labels are stored as zeros with the matching ``*_mask`` entry False.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..io import InputError, save_npz

FORMAT_VERSION = 1

# How far (in fractional coordinates) a position may lie outside [0, 1) before we call the
# configuration corrupt: one full box length, so unwrapped-by-one-image data still loads.
MAX_FRACTIONAL_EXCURSION = 1.0
# Smallest admissible cell volume per atom (Å³); anything below is a unit or layout error.
MIN_VOLUME_PER_ATOM = 1.0

_PER_CONFIG = ("n_atoms", "box", "energy", "virial", "energy_mask", "forces_mask",
               "virial_mask", "fidelity", "config_type", "source")
_PER_ATOM = ("positions", "species", "forces")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A ragged batch of labelled periodic configurations (see module docstring)."""

    n_atoms: np.ndarray  # (N,) int
    positions: np.ndarray  # (sum n, 3) Å
    species: np.ndarray  # (sum n,) atomic numbers
    box: np.ndarray  # (N, 3, 3) Å, rows are lattice vectors
    energy: np.ndarray  # (N,) eV, total energy
    forces: np.ndarray  # (sum n, 3) eV/Å
    virial: np.ndarray  # (N, 3, 3) eV, W = -dU/dε
    energy_mask: np.ndarray  # (N,) bool
    forces_mask: np.ndarray  # (N,) bool
    virial_mask: np.ndarray  # (N,) bool
    fidelity: np.ndarray  # (N,) str, level of theory
    config_type: np.ndarray  # (N,) str, e.g. "hcp/strained"
    source: np.ndarray  # (N,) str, provenance of each configuration
    metadata: dict = dataclasses.field(default_factory=dict)  # dataset-level provenance

    def __len__(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)

    def atoms_slice(self, i: int) -> slice:
        off = self.offsets
        return slice(int(off[i]), int(off[i + 1]))

    @property
    def volume(self) -> np.ndarray:
        return np.abs(np.linalg.det(self.box))

    def config(self, i: int) -> dict:
        """Configuration ``i`` as a dict of plain arrays."""
        s = self.atoms_slice(i)
        return dict(positions=self.positions[s], species=self.species[s], box=self.box[i],
                    energy=self.energy[i], forces=self.forces[s], virial=self.virial[i],
                    energy_mask=bool(self.energy_mask[i]), forces_mask=bool(self.forces_mask[i]),
                    virial_mask=bool(self.virial_mask[i]), fidelity=str(self.fidelity[i]),
                    config_type=str(self.config_type[i]), source=str(self.source[i]))

    def subset(self, indices: Sequence[int]) -> "Dataset":
        idx = np.asarray(indices, dtype=np.int64)
        off = self.offsets
        atom_idx = (np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])
                    if len(idx) else np.zeros(0, np.int64))
        per_config = {k: getattr(self, k)[idx] for k in _PER_CONFIG}
        per_atom = {k: getattr(self, k)[atom_idx] for k in _PER_ATOM}
        return Dataset(**per_config, **per_atom, metadata=dict(self.metadata))

    def with_labels(self, energy, forces, virial, fidelity: str,
                    energy_mask=None, forces_mask=None, virial_mask=None,
                    metadata: dict | None = None) -> "Dataset":
        """The same configurations with new labels (e.g. another level of theory)."""
        n = len(self)
        def mask(m, default):
            return np.full(n, default, bool) if m is None else np.asarray(m, bool)
        return dataclasses.replace(
            self, energy=np.asarray(energy, np.float64), forces=np.asarray(forces, np.float64),
            virial=np.asarray(virial, np.float64),
            energy_mask=mask(energy_mask, True), forces_mask=mask(forces_mask, True),
            virial_mask=mask(virial_mask, True) if virial_mask is not None else self.virial_mask,
            fidelity=np.full(n, fidelity), metadata={**self.metadata, **(metadata or {})})

def from_configs(configs: Sequence[dict], metadata: dict | None = None) -> Dataset:
    """Build a dataset from per-configuration dicts (keys as in ``Dataset.config``).

    Label keys may be absent or None: the label is then masked out.
    """
    if not configs:
        raise ValueError("from_configs: no configurations given")
    n_atoms = np.array([len(c["positions"]) for c in configs], np.int64)

    def label(c, key, shape):
        v = c.get(key)
        return (np.zeros(shape), False) if v is None else (np.asarray(v, np.float64), True)

    energies, forces, virials, em, fm, vm = [], [], [], [], [], []
    for c, n in zip(configs, n_atoms):
        e, has_e = label(c, "energy", ())
        f, has_f = label(c, "forces", (n, 3))
        w, has_w = label(c, "virial", (3, 3))
        energies.append(e)
        forces.append(f)
        virials.append(w)
        em.append(c.get("energy_mask", has_e) and has_e)
        fm.append(c.get("forces_mask", has_f) and has_f)
        vm.append(c.get("virial_mask", has_w) and has_w)
    return Dataset(
        n_atoms=n_atoms,
        positions=np.concatenate([np.asarray(c["positions"], np.float64) for c in configs]),
        species=np.concatenate([np.asarray(c["species"], np.int64) for c in configs]),
        box=np.stack([np.asarray(c["box"], np.float64) for c in configs]),
        energy=np.array(energies, np.float64),
        forces=np.concatenate(forces).reshape(-1, 3),
        virial=np.stack(virials),
        energy_mask=np.array(em, bool), forces_mask=np.array(fm, bool),
        virial_mask=np.array(vm, bool),
        fidelity=np.array([str(c.get("fidelity", "")) for c in configs]),
        config_type=np.array([str(c.get("config_type", "")) for c in configs]),
        source=np.array([str(c.get("source", "")) for c in configs]),
        metadata=dict(metadata or {}),
    )


def concatenate(datasets: Sequence[Dataset], metadata: dict | None = None) -> Dataset:
    kw = {k: np.concatenate([getattr(d, k) for d in datasets]) for k in _PER_CONFIG + _PER_ATOM}
    meta = metadata if metadata is not None else {"parts": [d.metadata for d in datasets]}
    return Dataset(**kw, metadata=meta)


# --- validation ------------------------------------------------------------------------------

def validate(ds: Dataset, source, allowed_species: Sequence[str] | None = None) -> Dataset:
    """Check shapes, finiteness, boxes, positions and species; raise ``InputError`` naming
    ``source``, the field and the first offending configuration."""
    n = len(ds)
    if n == 0:
        raise InputError(source, None, "the dataset holds no configurations")
    n_tot = int(ds.n_atoms.sum())
    if np.any(ds.n_atoms < 1):
        raise InputError(source, "n_atoms", f"configuration {int(np.argmin(ds.n_atoms))} has no atoms")
    for k in _PER_CONFIG:
        if getattr(ds, k).shape[0] != n:
            raise InputError(source, k, f"expected {n} entries (one per configuration), "
                                        f"got shape {getattr(ds, k).shape}")
    expected = {"positions": (n_tot, 3), "species": (n_tot,), "forces": (n_tot, 3),
                "box": (n, 3, 3), "virial": (n, 3, 3), "energy": (n,)}
    for k, shape in expected.items():
        if getattr(ds, k).shape != shape:
            raise InputError(source, k, f"expected shape {shape} for {n} configurations with "
                                        f"{n_tot} atoms in total, got {getattr(ds, k).shape}")

    per_atom_config = np.repeat(np.arange(n), ds.n_atoms)
    _check_finite(source, "positions", ds.positions, per_atom_config)
    _check_finite(source, "box", ds.box, np.arange(n))
    _check_finite(source, "energy", np.where(ds.energy_mask, ds.energy, 0.0), np.arange(n))
    _check_finite(source, "forces", np.where(ds.forces_mask[per_atom_config, None], ds.forces, 0.0),
                  per_atom_config)
    _check_finite(source, "virial", np.where(ds.virial_mask[:, None, None], ds.virial, 0.0),
                  np.arange(n))

    det = np.linalg.det(ds.box)
    bad = np.nonzero(np.abs(det) < MIN_VOLUME_PER_ATOM * ds.n_atoms)[0]
    if bad.size:
        i = int(bad[0])
        raise InputError(source, "box", f"configuration {i}: box is singular or degenerate "
                                        f"(volume {det[i]:.3g} Å³ for {ds.n_atoms[i]} atoms; "
                                        "rows must be three independent lattice vectors in Å)")
    bad = np.nonzero(det < 0)[0]
    if bad.size:
        raise InputError(source, "box", f"configuration {int(bad[0])}: box is left-handed "
                                        "(det < 0); expected right-handed lattice vectors as rows")

    inv = np.linalg.inv(ds.box)
    frac = np.einsum("ai,aij->aj", ds.positions, inv[per_atom_config])
    far = np.nonzero(np.any((frac < -MAX_FRACTIONAL_EXCURSION)
                            | (frac > 1 + MAX_FRACTIONAL_EXCURSION), axis=1))[0]
    if far.size:
        a = int(far[0])
        raise InputError(source, "positions",
                         f"configuration {int(per_atom_config[a])}, atom {a - int(ds.offsets[per_atom_config[a]])}: "
                         f"fractional coordinates {np.round(frac[a], 3).tolist()} lie more than "
                         f"{MAX_FRACTIONAL_EXCURSION:g} box lengths outside the cell "
                         "(wrong units or wrong box?)")

    if np.any((ds.species < 1) | (ds.species >= len(chemical_symbols))):
        a = int(np.nonzero((ds.species < 1) | (ds.species >= len(chemical_symbols)))[0][0])
        raise InputError(source, "species", f"atom {a}: {ds.species[a]} is not an atomic number")
    if allowed_species is not None:
        for s in allowed_species:
            if atomic_numbers.get(s, 0) == 0:
                raise InputError(source, "species", f"configured species {s!r} is not a chemical symbol")
        allowed = {atomic_numbers[s] for s in allowed_species}
        unknown = sorted(set(np.unique(ds.species).tolist()) - allowed)
        if unknown:
            raise InputError(source, "species",
                             f"species {[chemical_symbols[z] for z in unknown]} are not among the "
                             f"configured species {list(allowed_species)}")
    return ds


def _check_finite(source, field, values, owner):
    flat = np.asarray(values).reshape(len(owner), -1)
    bad = np.nonzero(~np.all(np.isfinite(flat), axis=1))[0]
    if bad.size:
        raise InputError(source, field, f"configuration {int(owner[bad[0]])} holds NaN or inf")


# --- physical ranges -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Limits:
    """Physical ranges ingested data must lie in (config ``data.checks``). Values outside them are
    almost always a unit slip; the defaults are generous, raise them for exotic data."""

    min_distance_A: float = 0.5  # shortest interatomic distance (periodic images included)
    max_force_eV_A: float = 50.0  # largest force on one atom
    max_stress_GPa: float = 200.0  # largest stress component, |W| / V
    max_energy_spread_eV: float = 20.0  # max - min of the energy per atom

    @classmethod
    def from_config(cls, checks: dict | None) -> "Limits":
        return cls(**(checks or {}))


def check_physical(ds: Dataset, source, limits: Limits = Limits(), setting: str = "data.checks") -> None:
    """Stop at the first configuration whose geometry or labels lie outside ``limits``, naming
    ``source``, the configuration, the field and the likely unit mistake (masked labels are not
    checked). ``setting`` is the configuration section holding the limits, for the message."""
    _check_distances(ds, source, limits.min_distance_A, f"{setting}.min_distance_A")
    _check_forces(ds, source, limits.max_force_eV_A, f"{setting}.max_force_eV_A")
    _check_stress(ds, source, limits.max_stress_GPa, f"{setting}.max_stress_GPa")
    _check_energy_spread(ds, source, limits.max_energy_spread_eV, f"{setting}.max_energy_spread_eV")


def _check_distances(ds: Dataset, source, min_distance: float, key: str) -> None:
    from ase.neighborlist import primitive_neighbor_list

    for k in range(len(ds)):
        i, j, d = primitive_neighbor_list("ijd", [True] * 3, ds.box[k], ds.positions[ds.atoms_slice(k)],
                                          min_distance, self_interaction=False)
        if len(d):
            m = int(np.argmin(d))
            raise InputError(source, "positions",
                             f"configuration {k}: atoms {int(i[m])} and {int(j[m])} are {d[m]:.3g} Å apart "
                             f"(below {key} = {min_distance:g} Å): positions and cell in different units "
                             "(bohr or nm positions with an Å cell?) or overlapping atoms")


def _check_forces(ds: Dataset, source, max_force: float, key: str) -> None:
    owner = np.repeat(np.arange(len(ds)), ds.n_atoms)
    norm = np.where(ds.forces_mask[owner], np.linalg.norm(ds.forces, axis=1), 0.0)
    if norm.size and norm.max() > max_force:
        a = int(np.argmax(norm))
        k = int(owner[a])
        raise InputError(source, "forces",
                         f"configuration {k}, atom {a - int(ds.offsets[k])}: |F| = {norm[a]:.4g} eV/Å "
                         f"(above {key} = {max_force:g} eV/Å): forces in another unit than eV/Å "
                         "(kcal/mol/Å, kJ/mol/Å or kJ/mol/nm?)")


def _check_stress(ds: Dataset, source, max_stress: float, key: str) -> None:
    from ..units import EV_PER_A3_IN_GPA

    gpa = np.abs(ds.virial).reshape(len(ds), 9).max(axis=1) / ds.volume * EV_PER_A3_IN_GPA
    gpa = np.where(ds.virial_mask, gpa, 0.0)
    if gpa.size and gpa.max() > max_stress:
        k = int(np.argmax(gpa))
        raise InputError(source, "virial",
                         f"configuration {k}: a stress component of {gpa[k]:.4g} GPa (|virial| / volume; "
                         f"above {key} = {max_stress:g} GPa): a stress in GPa or kbar read as eV/Å³ "
                         "(1 eV/Å³ = 160.2 GPa), or a virial in another energy unit than eV?")


def _check_energy_spread(ds: Dataset, source, max_spread: float, key: str) -> None:
    sel = np.nonzero(ds.energy_mask)[0]
    if len(sel) < 2:
        return
    per_atom = ds.energy[sel] / ds.n_atoms[sel]
    lo, hi = int(np.argmin(per_atom)), int(np.argmax(per_atom))
    if per_atom[hi] - per_atom[lo] > max_spread:
        raise InputError(source, "energy",
                         f"energies per atom span {per_atom[hi] - per_atom[lo]:.4g} eV (configuration "
                         f"{int(sel[lo])}: {per_atom[lo]:.4g} eV/atom, configuration {int(sel[hi])}: "
                         f"{per_atom[hi]:.4g} eV/atom; above {key} = {max_spread:g} eV): energies in "
                         "kJ/mol, kcal/mol or meV read as eV, or total and per-atom energies mixed?")


# --- labels ----------------------------------------------------------------------------------

LABELS = ("energy", "forces", "virial")


def check_labels(source, present: dict, wanted, setting: str, log=None) -> dict:
    """Which configurations keep each label, given where the file has it (``present``: label →
    bool per configuration) and the labels the configuration says this level of theory has
    (``wanted``, from ``setting``). A wanted label on no configuration is an error, energies or
    forces on only some configurations are an error (every single-point calculation gives both:
    the rest were lost or come from another source), a virial on only some is logged (stresses
    are legitimately left out of some, as the paper's own data does); a label not wanted is
    dropped. Returns label → mask."""
    masks = {}
    for label in LABELS:
        has = np.asarray(present[label], bool)
        n = len(has)
        if label not in wanted:
            if log is not None and has.any():
                log.info("%s: ignoring the %s of %d configurations (not in %s)", source, label,
                         int(has.sum()), setting)
            masks[label] = np.zeros(n, bool)
            continue
        if not has.any():
            raise InputError(source, label, f"no configuration has {label}; if this level of theory has "
                                            f"no {label}, leave it out of {setting}")
        if not has.all():
            missing = np.nonzero(~has)[0]
            listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            what = f"{len(missing)} of {n} configurations have no {label} (configurations {listed})"
            if label != "virial":
                raise InputError(source, label, f"{what}: a truncated calculation or files of different "
                                                f"sources joined? Every configuration needs its {label} "
                                                f"(or leave {label} out of {setting})")
            if log is not None:
                log.warning("%s [virial]: %s; they are trained on energies and forces only", source, what)
        masks[label] = has
    return masks


# --- file format -------------------------------------------------------------------------------

def save(path, ds: Dataset) -> None:
    """Write ``ds`` to ``path`` (.npz) atomically."""
    arrays = {k: getattr(ds, k) for k in _PER_CONFIG + _PER_ATOM}
    for k in ("fidelity", "config_type", "source"):
        arrays[k] = np.asarray(arrays[k], dtype=str)
    save_npz(path, format_version=np.array(FORMAT_VERSION),
             metadata=np.array(json.dumps(ds.metadata)), **arrays)


def load(path, allowed_species: Sequence[str] | None = None) -> Dataset:
    """Read and validate a dataset written by ``save``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "dataset file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError...
        raise InputError(path, None, f"not a readable dataset file ({exc})") from exc
    missing = [k for k in ("format_version", "metadata") + _PER_CONFIG + _PER_ATOM if k not in data]
    if missing:
        raise InputError(path, missing[0], f"array missing from dataset file (missing: {missing})")
    if int(data.pop("format_version")) != FORMAT_VERSION:
        raise InputError(path, "format_version", f"expected version {FORMAT_VERSION}")
    meta = json.loads(str(data.pop("metadata")))
    ds = Dataset(**{k: data[k] for k in _PER_CONFIG + _PER_ATOM}, metadata=meta)
    return validate(ds, path, allowed_species)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def summary(ds: Dataset) -> "list[dict]":
    """Counts and label statistics per (fidelity, config_type), for tables and logs."""
    rows = []
    keys = sorted(set(zip(ds.fidelity.tolist(), ds.config_type.tolist())))
    for fid, ct in keys:
        sel = np.nonzero((ds.fidelity == fid) & (ds.config_type == ct))[0]
        e_per_atom = ds.energy[sel] / ds.n_atoms[sel]
        rows.append(dict(fidelity=fid, config_type=ct, configurations=len(sel),
                         atoms_min=int(ds.n_atoms[sel].min()), atoms_max=int(ds.n_atoms[sel].max()),
                         energy_per_atom_mean_eV=float(e_per_atom.mean()),
                         energy_per_atom_std_eV=float(e_per_atom.std()),
                         with_virial=int(ds.virial_mask[sel].sum())))
    return rows
