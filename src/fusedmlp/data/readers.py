"""Readers that turn external data into the canonical ``Dataset``.

* ``read_release``: the DeePMD-style ``.npy`` layout of the fused-training paper's data release
  (Röcken & Zavadlav, npj Comput. Mater. 10, 69, 2024): one folder with ``box.npy`` (N×9, rows
  are lattice vectors), ``coord.npy`` (N×3n), ``energy.npy`` (N), ``force.npy`` (N×3n),
  ``virial.npy`` (N×9, energy units, not divided by volume) and ``types.npy`` (N, a per-config
  type flag), as a folder or inside a zip archive.
* ``read_ase``: anything ASE reads (extended XYZ, VASP OUTCAR, ...) with energy, forces and
  stress or virial.
* ``download``: fetch a file from a URL and check its sha256 before it appears on disk.
"""

from __future__ import annotations

import io
import logging
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers

from .. import units
from ..io import InputError, atomic_path
from .dataset import LABELS, Dataset, Limits, check_labels, check_physical, file_sha256, from_configs, validate

log = logging.getLogger(__name__)

RELEASE_FILES = ("box.npy", "coord.npy", "energy.npy", "force.npy", "virial.npy", "types.npy")
# the release file of each label
LABEL_FILES = {"energy": "energy.npy", "forces": "force.npy", "virial": "virial.npy"}

LENGTH_UNITS = {"angstrom": 1.0, "nm": units.NM}
ENERGY_UNITS = {"eV": 1.0, "kJ/mol": units.KJ_PER_MOL, "meV": units.MEV}


def _unit(table: Mapping[str, float], name: str, source, field: str) -> float:
    if name not in table:
        raise InputError(source, field, f"unknown unit {name!r}; expected one of {sorted(table)}")
    return table[name]


def _symbol_to_z(symbol: str, source, field: str) -> int:
    if symbol not in atomic_numbers or atomic_numbers[symbol] == 0:
        raise InputError(source, field, f"unknown species {symbol!r}: expected a chemical symbol")
    return atomic_numbers[symbol]


# --- the paper's release format -------------------------------------------------------------------

class _Folder:
    """Uniform access to the release files in a directory or a zip archive."""

    def __init__(self, path: Path, subdir: str | None):
        self.path = path
        if path.is_dir():
            self.zip = None
            dirs = sorted({p.parent for p in path.rglob("box.npy")})
            names = [str(d.relative_to(path)) for d in dirs]
        elif path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
                bad = self.zip.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InputError(path, None, f"corrupt or unreadable zip archive ({exc})") from exc
            if bad is not None:
                raise InputError(path, bad, "corrupt member in zip archive (CRC mismatch)")
            names = sorted({str(PurePosixPath(n).parent) for n in self.zip.namelist()
                            if PurePosixPath(n).name == "box.npy"})
        else:
            raise InputError(path, None, "release path does not exist (expected a folder or a .zip)")
        if subdir is not None:
            sub = str(PurePosixPath(subdir))
            if sub not in names:
                raise InputError(path, "subdir", f"no folder {subdir!r} holding box.npy; "
                                                 f"folders with box.npy: {names}")
            self.root = sub
        elif len(names) == 1:
            self.root = names[0]
        elif not names:
            raise InputError(path, "box.npy", "no box.npy found; expected the files "
                                              f"{list(RELEASE_FILES)} in one folder")
        else:
            raise InputError(path, "subdir", f"several folders hold box.npy ({names}); "
                                             "name the one to read with `subdir`")

    def has(self, name: str) -> bool:
        if self.zip is not None:
            member = str(PurePosixPath(self.root) / name) if self.root != "." else name
            return member in self.zip.namelist()
        return (self.path / self.root / name).is_file()

    def where(self, name: str) -> str:
        return f"{self.path}:{PurePosixPath(self.root) / name}" if self.zip else \
            str(self.path / self.root / name)

    def load(self, name: str, missing: str = "file missing from the release") -> np.ndarray:
        where = self.where(name)
        try:
            if self.zip is not None:
                member = str(PurePosixPath(self.root) / name) if self.root != "." else name
                if member not in self.zip.namelist():
                    raise InputError(where, name, missing)
                raw = io.BytesIO(self.zip.read(member))
            else:
                file = self.path / self.root / name
                if not file.is_file():
                    raise InputError(where, name, missing)
                raw = file
            return np.load(raw, allow_pickle=False)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(where, name, f"not a readable .npy array ({exc})") from exc


def read_release(path, species: str, fidelity: str = "dft", subdir: str | None = None,
                 virial_types: Sequence[int] = (0,),
                 type_names: Mapping[int, str] | None = None,
                 length_unit: str = "angstrom", energy_unit: str = "eV",
                 labels: Sequence[str] = LABELS, limits: Limits = Limits(),
                 sha256: str | None = None) -> Dataset:
    """Read the paper's ``.npy`` release (a folder or a zip) into a validated ``Dataset``.

    ``species`` is the single element of every atom (the release has no per-atom types);
    ``types.npy`` flags each configuration, and only types in ``virial_types`` keep their
    virial (the paper uses type 0, "Init", and ignores the virial of type 1, "Bulk").
    ``labels`` are the labels this level of theory has (config ``data.release.labels``): their
    files must be there, the others are not read. ``limits``: the physical ranges every
    configuration must lie in (``data.checks``). ``sha256``: the archive's pinned checksum.
    """
    path = Path(path)
    if sha256 is not None:
        _check_sha256(path, sha256)
    folder = _Folder(path, subdir)
    z = _symbol_to_z(species, path, "species")
    length = _unit(LENGTH_UNITS, length_unit, path, "length_unit")
    energy = _unit(ENERGY_UNITS, energy_unit, path, "energy_unit")
    type_names = {0: "init", 1: "bulk"} if type_names is None else dict(type_names)

    unused = {LABEL_FILES[k] for k in LABELS if k not in labels}
    arr = {name: folder.load(name, "file missing from the release (if this level of theory has no "
                                   f"{k}, leave it out of data.release.labels)" if (k := _label_of(name))
                             else "file missing from the release")
           for name in RELEASE_FILES if name not in unused}
    n = arr["box.npy"].shape[0] if arr["box.npy"].ndim else -1
    if n == 0:
        raise InputError(folder.where("box.npy"), "box.npy", "the release holds no configurations (0 rows)")
    for name in unused:  # a label this level of theory does not have: zeros, masked out
        if folder.has(name):
            log.info("%s: not read (%s is not in data.release.labels)", folder.where(name), _label_of(name))
        arr[name] = np.zeros((n, 1) if name == "energy.npy" else
                             (n, 9) if name == "virial.npy" else arr["coord.npy"].shape)
    for name, a in arr.items():
        if a.ndim == 0 or a.shape[0] != n:
            raise InputError(folder.where(name), name,
                             f"expected {n} rows (one per configuration, as in box.npy), "
                             f"got shape {a.shape}")
    for name, width in (("box.npy", 9), ("virial.npy", 9)):
        if arr[name].reshape(n, -1).shape[1] != width:
            raise InputError(folder.where(name), name, f"expected shape ({n}, 9), got {arr[name].shape}")
    coord = arr["coord.npy"].reshape(n, -1)
    force = arr["force.npy"].reshape(n, -1)
    if coord.shape[1] % 3:
        raise InputError(folder.where("coord.npy"), "coord.npy",
                         f"expected 3n columns (x, y, z per atom), got {coord.shape[1]}")
    if force.shape != coord.shape:
        raise InputError(folder.where("force.npy"), "force.npy",
                         f"atom count mismatch: force.npy has shape {force.shape}, "
                         f"coord.npy {coord.shape}")
    en = arr["energy.npy"].reshape(n, -1)
    if en.shape[1] != 1:
        raise InputError(folder.where("energy.npy"), "energy.npy", f"expected shape ({n},), got {arr['energy.npy'].shape}")
    types = arr["types.npy"].reshape(n, -1)
    if types.shape[1] != 1 or not np.all(np.isfinite(types)) or np.any(types != np.round(types)):
        raise InputError(folder.where("types.npy"), "types.npy", "expected one integer flag per configuration")
    types = types[:, 0].astype(np.int64)
    unknown = sorted(set(types.tolist()) - set(type_names))
    if unknown:
        raise InputError(folder.where("types.npy"), "types.npy",
                         f"type flags {unknown} have no name in type_names {type_names}")

    n_at = coord.shape[1] // 3
    virial_mask = np.isin(types, np.asarray(virial_types))
    masks = check_labels(folder.where(""), {"energy": np.full(n, "energy" in labels),
                                            "forces": np.full(n, "forces" in labels),
                                            "virial": virial_mask & ("virial" in labels)},
                         labels, "data.release.labels (virial: data.release.virial_types)", log)
    ds = Dataset(
        n_atoms=np.full(n, n_at, np.int64),
        positions=coord.reshape(-1, 3).astype(np.float64) * length,
        species=np.full(n * n_at, z, np.int64),
        box=arr["box.npy"].reshape(n, 3, 3).astype(np.float64) * length,
        energy=en[:, 0].astype(np.float64) * energy,
        forces=force.reshape(-1, 3).astype(np.float64) * (energy / length),
        virial=arr["virial.npy"].reshape(n, 3, 3).astype(np.float64) * energy,
        energy_mask=masks["energy"], forces_mask=masks["forces"], virial_mask=masks["virial"],
        fidelity=np.full(n, fidelity),
        config_type=np.array([type_names[t] for t in types]),
        source=np.array([f"{folder.where('')}#{i}" for i in range(n)]),
        metadata={"reader": "release", "path": str(path), "subdir": folder.root,
                  "species": species, "fidelity": fidelity,
                  "virial_types": list(map(int, virial_types)), "labels": list(labels),
                  "length_unit": length_unit, "energy_unit": energy_unit, "sha256": sha256},
    )
    # Name the .npy file in errors, since that is what a user must fix.
    try:
        validate(ds, folder.where(""), allowed_species=[species])
        check_physical(ds, folder.where(""), limits)
        return ds
    except InputError as exc:
        field = {"positions": "coord.npy", "box": "box.npy", "energy": "energy.npy",
                 "forces": "force.npy", "virial": "virial.npy"}.get(exc.field, exc.field)
        raise InputError(folder.where(field or ""), field, exc.message) from None


def _label_of(name: str) -> str | None:
    return next((k for k, f in LABEL_FILES.items() if f == name), None)


def _check_sha256(path: Path, sha256: str) -> None:
    """A release given by a local path is checked against the pinned checksum as a download is."""
    if not path.is_file():
        raise InputError(path, "sha256", "data.release.sha256 pins an archive, but the release path is "
                                         "not a file (a folder has no checksum: zip it, or set sha256: null)")
    got = file_sha256(path)
    if got.lower() != sha256.lower():
        raise InputError(path, "sha256", f"checksum mismatch: data.release.sha256 is {sha256}, the file has "
                                         f"{got}; this is not the pinned release")


def write_release(folder, ds: Dataset, types: Sequence[int] | None = None) -> None:
    """Write a single-species, equal-size dataset in the release layout (for tests and export)."""
    if len(set(ds.n_atoms.tolist())) != 1:
        raise ValueError("the release format needs configurations of equal size")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(ds)
    types = np.where(ds.virial_mask, 0, 1) if types is None else np.asarray(types)
    np.save(folder / "box.npy", ds.box.reshape(n, 9))
    np.save(folder / "coord.npy", ds.positions.reshape(n, -1))
    np.save(folder / "energy.npy", ds.energy)
    np.save(folder / "force.npy", ds.forces.reshape(n, -1))
    np.save(folder / "virial.npy", ds.virial.reshape(n, 9))
    np.save(folder / "types.npy", types)


# --- anything ASE reads ------------------------------------------------------------------------------

def read_ase(path, fidelity: str = "dft", index: str = ":", format: str | None = None,
             config_type_key: str = "config_type", default_config_type: str = "",
             allowed_species: Sequence[str] | None = None, labels: Sequence[str] = LABELS,
             limits: Limits = Limits()) -> Dataset:
    """Read periodic structures with energy, forces and stress or virial through ASE.

    Labels come from the attached calculator results (``energy``, ``forces``, ``stress``, as ASE's
    extended-XYZ reader stores them) or from ``info['virial']`` / ``info['energy']``.
    ASE stress (tension positive, eV/Å³) becomes the virial W = -σ V. ``labels`` are the labels
    this level of theory has (config ``data.ase.labels``; see ``dataset.check_labels``), ``limits``
    the physical ranges every frame must lie in (``data.checks``).
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "structure file does not exist")
    try:
        frames = ase.io.read(path, index=index, format=format)
    except Exception as exc:
        raise InputError(path, None, f"ASE could not read the file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise InputError(path, "index", f"data.ase.index {index!r} selects no frame of the file")
    configs = []
    for i, at in enumerate(frames):
        where = f"{path}#{i}"
        if not np.all(at.pbc) or abs(at.cell.volume) < 1e-12:
            raise InputError(where, "cell", "expected a periodic structure with a 3D cell")
        results = dict(at.calc.results) if at.calc is not None else {}
        e = results.get("energy", results.get("free_energy", at.info.get("energy")))
        f = results.get("forces", at.arrays.get("forces"))
        w = None
        if "stress" in results or "stress" in at.info:
            s = np.asarray(results.get("stress", at.info.get("stress")), float)
            if s.shape == (6,):
                xx, yy, zz, yz, xz, xy = s
                s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            if s.size != 9:
                raise InputError(where, "stress", f"expected 6 Voigt or 9 components, got {s.shape}")
            w = -s.reshape(3, 3) * at.cell.volume
        elif "virial" in at.info:
            w = np.asarray(at.info["virial"], float)
            if w.size != 9:
                raise InputError(where, "virial", f"expected 9 components, got {w.shape}")
            w = w.reshape(3, 3)
        if f is not None and np.shape(f) != (len(at), 3):
            raise InputError(where, "forces", f"expected shape ({len(at)}, 3), got {np.shape(f)}")
        configs.append(dict(positions=at.positions, species=at.numbers, box=np.asarray(at.cell),
                            energy=None if e is None else float(e), forces=f, virial=w,
                            fidelity=fidelity, source=where,
                            config_type=str(at.info.get(config_type_key, default_config_type))))
    # configurations are counted in the frames ase.index selects
    where = path if index == ":" else f"{path} (frames selected by ase.index {index!r})"
    masks = check_labels(where, {k: np.array([c[k] is not None for c in configs]) for k in LABELS},
                         labels, "data.ase.labels", log)
    for k in LABELS:
        for c, keep in zip(configs, masks[k]):
            c[f"{k}_mask"] = bool(keep)
    ds = from_configs(configs, metadata={"reader": "ase", "path": str(path), "index": index,
                                         "fidelity": fidelity, "labels": list(labels)})
    validate(ds, where, allowed_species)
    check_physical(ds, where, limits)
    return ds


# --- download -----------------------------------------------------------------------------------------

def download(url: str, dest, sha256: str | None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``; the file appears only if its sha256 matches."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
        except Exception as exc:
            raise InputError(url, None, f"download failed ({type(exc).__name__}: {exc})") from exc
        got = file_sha256(tmp)
        if sha256 is not None and got.lower() != sha256.lower():
            raise InputError(url, "sha256", f"checksum mismatch: expected {sha256}, got {got}; "
                                            "the download was discarded")
    return dest
