"""Harmonic phonons at 0 K by finite displacements (phonopy) for any potential.

phonopy builds the displaced supercells, ``forces_fn`` (the same energy model as MD) gives their
forces, and phonopy turns them into force constants, a band structure along a high-symmetry path,
a density of states and the Γ-point frequencies.

Units: Å, eV/Å and atomic masses in u go in; frequencies come out in THz (= 1/ps, see
``units.THZ``) through phonopy's default unit factor, which equals ``units.EV_A2_AMU_TO_THZ``.
Band distances are Cartesian |Δq| in 1/Å without the 2π, so a slope dν/d|q| is a group velocity
in Å/ps. Wave vectors handed to phonopy are reduced coordinates of the primitive reciprocal
lattice; the standard paths below are written in the conventional reciprocal basis (units of
2π/a for cubic cells) and converted with the primitive matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from ase import Atoms
from phonopy import Phonopy
from phonopy.phonon.band_structure import get_band_qpoints
from phonopy.structure.atoms import PhonopyAtoms

from ..io import atomic_path

ForcesFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Primitive vectors (columns) in fractional coordinates of the conventional cell given to phonopy.
PRIMITIVE_MATRICES = {
    "hcp": np.eye(3),
    "bcc": 0.5 * np.array([[-1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]),
    "fcc": 0.5 * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),
}
ATOMS_PER_CELL = {"hcp": 2, "bcc": 2, "fcc": 4}  # atoms of the cell that ``crystal`` builds


@dataclasses.dataclass(frozen=True)
class BandPath:
    """High-symmetry points (reduced coordinates of the *conventional* reciprocal lattice) and
    continuous branches through them; a new branch starts after a break ("|")."""

    points: dict[str, tuple[float, float, float]]
    branches: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        for branch in self.branches:
            if len(branch) < 2:
                raise ValueError(f"a band-path branch needs at least two points, got {branch}")
            unknown = [p for p in branch if p not in self.points]
            if unknown:
                raise ValueError(f"band path uses undefined points {unknown}; "
                                 f"defined: {sorted(self.points)}")

    def segments(self) -> list[tuple[str, str]]:
        return [(b[k], b[k + 1]) for b in self.branches for k in range(len(b) - 1)]


# Setyawan & Curtarolo, Comput. Mater. Sci. 49, 299 (2010). hcp: the 2-atom hexagonal cell
# (120° between a1 and a2). bcc, fcc: conventional cubic reciprocal basis, units of 2π/a.
STANDARD_PATHS = {
    "hcp": BandPath(
        points={"Γ": (0, 0, 0), "M": (0.5, 0, 0), "K": (1 / 3, 1 / 3, 0), "A": (0, 0, 0.5),
                "L": (0.5, 0, 0.5), "H": (1 / 3, 1 / 3, 0.5)},
        branches=(("Γ", "M", "K", "Γ", "A", "L", "H", "A"), ("L", "M"), ("K", "H"))),
    "bcc": BandPath(
        points={"Γ": (0, 0, 0), "H": (0, 1, 0), "N": (0.5, 0.5, 0), "P": (0.5, 0.5, 0.5)},
        branches=(("Γ", "H", "N", "Γ", "P", "H"), ("P", "N"))),
    "fcc": BandPath(
        points={"Γ": (0, 0, 0), "X": (0, 1, 0), "W": (0.5, 1, 0), "K": (0.75, 0.75, 0),
                "L": (0.5, 0.5, 0.5), "U": (0.25, 1, 0.25)},
        branches=(("Γ", "X", "W", "K", "Γ", "L", "U", "W", "L", "K"), ("U", "X"))),
}


@dataclasses.dataclass(frozen=True)
class PhononSettings:
    supercell: Sequence[int] | Sequence[Sequence[int]] = (3, 3, 2)  # of the conventional cell
    displacement: float = 0.01  # Å
    band_points: int = 51  # q-points per segment, ends included
    dos_mesh: Sequence[int] = (20, 20, 20)  # q-mesh of the primitive cell
    dos_method: str = "tetrahedron"  # or "gaussian"
    dos_sigma: float | None = None  # THz: Gaussian width, used only by dos_method "gaussian"
    dos_pitch: float = 0.05  # THz between DOS points
    path: BandPath | None = None  # None: the standard path of the structure

    def __post_init__(self):
        sc = np.asarray(self.supercell)
        if sc.shape not in ((3,), (3, 3)) or not np.allclose(sc, np.round(sc)):
            raise ValueError(f"supercell must be 3 integers or a 3×3 integer matrix, got {self.supercell}")
        if round(abs(np.linalg.det(np.diag(sc) if sc.ndim == 1 else sc))) < 1:
            raise ValueError(f"supercell matrix {self.supercell} is singular")
        if not self.displacement > 0:
            raise ValueError(f"displacement must be positive (Å), got {self.displacement}")
        if self.band_points < 2:
            raise ValueError(f"band_points must be at least 2, got {self.band_points}")
        if len(self.dos_mesh) != 3 or min(self.dos_mesh) < 1:
            raise ValueError(f"dos_mesh must be 3 positive integers, got {self.dos_mesh}")
        if self.dos_method not in ("tetrahedron", "gaussian"):
            raise ValueError(f"dos_method must be 'tetrahedron' or 'gaussian', got {self.dos_method!r}")
        if self.dos_method == "gaussian" and not (self.dos_sigma and self.dos_sigma > 0):
            raise ValueError("dos_method 'gaussian' needs a positive dos_sigma (THz)")


@dataclasses.dataclass
class PhononResult:
    """Band structure, DOS and Γ frequencies (THz); ``phonopy`` keeps the force constants."""

    structure: str
    segment_labels: list[tuple[str, str]]
    qpoints: list[np.ndarray]  # per segment (n, 3), reduced primitive reciprocal coordinates
    distances: list[np.ndarray]  # per segment (n,), cumulative |q| in 1/Å (no 2π)
    frequencies: list[np.ndarray]  # per segment (n, bands), THz
    tick_positions: np.ndarray  # 1/Å
    tick_labels: list[str]  # "L|M" where one branch ends and the next starts
    dos_frequencies: np.ndarray  # THz
    dos: np.ndarray  # states/THz per primitive cell (integrates to 3 × atoms)
    gamma_frequencies: np.ndarray  # THz, ascending
    phonopy: Phonopy = dataclasses.field(repr=False)

    def frequencies_at(self, qpoints) -> np.ndarray:
        """Frequencies (THz) at reduced primitive-cell wave vectors, shape (n, bands)."""
        q = np.atleast_2d(np.asarray(qpoints, float))
        return np.array([self.phonopy.get_frequencies(qi) for qi in q])

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(bands, dos) tables: one band row per q-point with one column per branch."""
        rows = []
        for k, ((start, end), q, d, f) in enumerate(zip(self.segment_labels, self.qpoints,
                                                        self.distances, self.frequencies)):
            seg = pd.DataFrame({"segment": k, "start": start, "end": end, "distance_inv_A": d,
                                "q1": q[:, 0], "q2": q[:, 1], "q3": q[:, 2]})
            bands = pd.DataFrame(f, columns=[f"band{j}_thz" for j in range(f.shape[1])])
            rows.append(pd.concat([seg, bands], axis=1))
        dos = pd.DataFrame({"frequency_thz": self.dos_frequencies, "dos_per_thz": self.dos})
        return pd.concat(rows, ignore_index=True), dos


def conventional_to_primitive_q(q, structure: str) -> np.ndarray:
    """Wave vectors from the conventional to the primitive reduced reciprocal basis."""
    if structure not in PRIMITIVE_MATRICES:
        raise ValueError(f"unknown structure {structure!r}; expected one of {sorted(PRIMITIVE_MATRICES)}")
    # q·r is invariant: q_prim = q_conv @ P with P's columns the primitive vectors (conventional).
    return np.asarray(q, float) @ PRIMITIVE_MATRICES[structure]


def primitive_path(path: BandPath, structure: str, npoints: int) -> list[np.ndarray]:
    """q-points of each segment in reduced coordinates of the primitive reciprocal lattice."""
    branches = [conventional_to_primitive_q([path.points[p] for p in b], structure)
                for b in path.branches]
    return get_band_qpoints(branches, npoints=npoints)


def _ticks(path: BandPath, distances: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Tick positions and labels; phonopy's distance does not jump at a break, so the end of
    one branch and the start of the next share a tick ("A|L")."""
    positions, labels, k = [], [], 0
    for branch in path.branches:
        if labels:
            if labels[-1] != branch[0]:
                labels[-1] = f"{labels[-1]}|{branch[0]}"
        else:
            positions.append(float(distances[0][0]))
            labels.append(branch[0])
        for i, name in enumerate(branch[1:]):
            positions.append(float(distances[k + i][-1]))
            labels.append(name)
        k += len(branch) - 1
    return np.array(positions), labels


def _phonopy_atoms(atoms: Atoms) -> PhonopyAtoms:
    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.asarray(atoms.cell),
                        scaled_positions=atoms.get_scaled_positions(), masses=atoms.get_masses())


def force_constants(forces_fn: ForcesFn, atoms_unit_cell: Atoms, structure: str,
                    settings: PhononSettings) -> Phonopy:
    """A phonopy object with force constants from forces of the displaced supercells."""
    if structure not in PRIMITIVE_MATRICES:
        raise ValueError(f"unknown structure {structure!r}; expected one of {sorted(PRIMITIVE_MATRICES)}")
    if len(atoms_unit_cell) != ATOMS_PER_CELL[structure]:
        raise ValueError(f"{structure} needs the {ATOMS_PER_CELL[structure]}-atom cell of "
                         f"structures.crystal (supercell (1, 1, 1)), got {len(atoms_unit_cell)} atoms")
    sc = np.asarray(settings.supercell, int)
    ph = Phonopy(_phonopy_atoms(atoms_unit_cell), supercell_matrix=np.diag(sc) if sc.ndim == 1 else sc,
                 primitive_matrix=PRIMITIVE_MATRICES[structure])
    ph.generate_displacements(distance=settings.displacement, is_plusminus=True)

    def forces(cell: PhonopyAtoms) -> np.ndarray:
        f = np.asarray(forces_fn(np.asarray(cell.positions), np.asarray(cell.cell)), float)
        if f.shape != (len(cell), 3):
            raise ValueError(f"forces_fn returned shape {f.shape}, expected ({len(cell)}, 3)")
        return f

    # Residual forces of the ideal supercell (a cell slightly off equilibrium, numerical noise)
    # are subtracted so they do not leak into the force constants.
    f0 = forces(ph.supercell)
    ph.forces = np.array([forces(cell) - f0 for cell in ph.supercells_with_displacements])
    ph.produce_force_constants(show_drift=False)
    return ph


def phonons(forces_fn: ForcesFn, atoms_unit_cell: Atoms, structure: str,
            settings: PhononSettings = PhononSettings()) -> PhononResult:
    """Phonon bands, DOS and Γ frequencies of ``atoms_unit_cell`` (from ``structures.crystal``)."""
    ph = force_constants(forces_fn, atoms_unit_cell, structure, settings)
    path = settings.path or STANDARD_PATHS[structure]
    ph.run_band_structure(primitive_path(path, structure, settings.band_points),
                          labels=None, path_connections=None)
    bands = ph.get_band_structure_dict()
    distances = [np.asarray(d) for d in bands["distances"]]
    ticks, tick_labels = _ticks(path, distances)

    ph.run_mesh(list(settings.dos_mesh), is_gamma_center=True)
    gaussian = settings.dos_method == "gaussian"
    ph.run_total_dos(sigma=settings.dos_sigma if gaussian else None, freq_pitch=settings.dos_pitch,
                     use_tetrahedron_method=not gaussian)
    dos = ph.get_total_dos_dict()
    return PhononResult(
        structure=structure, segment_labels=path.segments(),
        qpoints=[np.asarray(q) for q in bands["qpoints"]], distances=distances,
        frequencies=[np.asarray(f) for f in bands["frequencies"]], tick_positions=ticks,
        tick_labels=tick_labels, dos_frequencies=np.asarray(dos["frequency_points"]),
        dos=np.asarray(dos["total_dos"]), gamma_frequencies=np.sort(ph.get_frequencies([0, 0, 0])),
        phonopy=ph)


def write_band_csv(result: PhononResult, path) -> None:
    bands, _ = result.to_frames()
    with atomic_path(path) as tmp:
        bands.to_csv(tmp, index=False)


def write_dos_csv(result: PhononResult, path) -> None:
    _, dos = result.to_frames()
    with atomic_path(path) as tmp:
        dos.to_csv(tmp, index=False)
