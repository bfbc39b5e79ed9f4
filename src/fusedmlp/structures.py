"""Crystal cells for any element: builders and zero-pressure lattice parameters.

Structures are ASE ``Atoms`` (rows of ``cell`` are lattice vectors, as in the dataset).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk
from scipy.optimize import minimize

STRUCTURES = ("hcp", "bcc", "fcc")


def crystal(symbol: str, structure: str, a: float, covera: float | None = None,
            supercell: Sequence[int] = (1, 1, 1)) -> Atoms:
    """A periodic crystal: hcp as the 2-atom hexagonal cell (a along x, c along z),
    bcc and fcc as the conventional cubic cell, repeated ``supercell`` times."""
    if structure == "hcp":
        if covera is None:
            raise ValueError("hcp needs a c/a ratio")
        atoms = bulk(symbol, "hcp", a=a, c=a * covera)
    elif structure in ("bcc", "fcc"):
        atoms = bulk(symbol, structure, a=a, cubic=True)
    else:
        raise ValueError(f"unknown structure {structure!r}; expected one of {STRUCTURES}")
    return atoms.repeat(tuple(int(k) for k in supercell))


def sublattices(structure: str, supercell: Sequence[int] = (1, 1, 1)) -> np.ndarray:
    """Each atom's basis atom in the primitive cell, in ``crystal``'s atom order (cell by cell, the
    basis within each): hcp has two sublattices; the atoms of bcc's and fcc's cubic cells are
    lattice translations of one another, one sublattice."""
    n_cells = int(np.prod([int(k) for k in supercell]))
    if structure == "hcp":
        return np.tile(np.arange(2), n_cells)
    if structure in ("bcc", "fcc"):
        return np.zeros(n_cells * {"bcc": 2, "fcc": 4}[structure], dtype=int)
    raise ValueError(f"unknown structure {structure!r}; expected one of {STRUCTURES}")


@dataclasses.dataclass(frozen=True)
class LatticeParameters:
    structure: str
    a: float  # Å
    covera: float | None  # c/a for hcp
    energy_per_atom: float  # eV

    @property
    def c(self) -> float | None:
        return None if self.covera is None else self.a * self.covera


def relax_lattice(potential_energy: Callable[[np.ndarray, np.ndarray], float], symbol: str,
                  structure: str, a0: float, covera0: float | None = None,
                  tol: float = 1e-9) -> LatticeParameters:
    """Minimise the energy per atom over the lattice parameters of the primitive cell.

    Internal coordinates of hcp, bcc and fcc are fixed by symmetry, so the cell parameters
    (a, and c/a for hcp) are the only degrees of freedom at zero pressure.
    """

    def e_of(x):
        a = x[0]
        covera = x[1] if structure == "hcp" else None
        at = crystal(symbol, structure, a, covera)
        return potential_energy(at.positions, np.asarray(at.cell)) / len(at)

    x0 = [a0, covera0] if structure == "hcp" else [a0]
    res = minimize(e_of, x0, method="Nelder-Mead",
                   options=dict(xatol=tol, fatol=tol * 1e-3, maxiter=4000))
    if not res.success:
        raise RuntimeError(f"lattice relaxation of {structure} {symbol} failed: {res.message}")
    return LatticeParameters(structure, float(res.x[0]),
                             float(res.x[1]) if structure == "hcp" else None, float(res.fun))
