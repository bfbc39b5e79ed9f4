"""hcp lattice constants from anisotropic NPT (a and c relax independently): vs temperature at
zero pressure and vs pressure at one temperature. Time averages over the production frames with
standard errors from blocks."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from ..md.settings import Dynamics
from ..observables.averages import block_slices, standard_error
from ..structures import crystal
from .potentials import Potential
from .sampling import Sampling, measure, scan

log = logging.getLogger(__name__)


def hcp_lattice(boxes, supercell) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame a and c (Å) of hcp supercells (``crystal`` layout: a1 along x, c along z)."""
    boxes = np.asarray(boxes, float)
    a = 0.5 * (np.linalg.norm(boxes[:, 0], axis=1) / supercell[0]
               + np.linalg.norm(boxes[:, 1], axis=1) / supercell[1])
    c = np.linalg.norm(boxes[:, 2], axis=1) / supercell[2]
    return a, c


def block_mean(x, n_blocks: int) -> tuple[float, float]:
    """Mean of all frames and its standard error from ``n_blocks`` consecutive blocks (NaN error
    if there are too few frames for the blocks)."""
    x = np.asarray(x, float)
    if n_blocks < 2 or len(x) // n_blocks < 1:
        return float(np.mean(x)), float("nan")
    means = [np.mean(x[s]) for s in block_slices(len(x), n_blocks, min_length=1)]
    return float(np.mean(x)), standard_error(means)


def hcp_npt(pot: Potential, symbol: str, a0: float, covera0: float, supercell, temperature: float,
            pressure_gpa: float, rs: Dynamics, sampling: Sampling, n_blocks: int = 4, seed: int = 0,
            progress: Callable[[str], None] = log.info) -> dict:
    atoms = crystal(symbol, "hcp", a0, covera0, supercell)
    traj = measure(pot, atoms, temperature, rs, sampling, pressure_gpa=pressure_gpa, coupling="hexagonal",
                   seed=seed, progress=progress, at_lattice_sites=True)
    a, c = hcp_lattice(traj.boxes, supercell)
    row = {"T_K": float(temperature), "P_GPa": float(pressure_gpa), "n_atoms": len(atoms),
           "frames": len(a), "T_mean_K": float(np.mean(traj.temperatures))}
    for name, x in (("a_A", a), ("c_A", c), ("covera", c / a)):
        row[name], row[f"{name}_err"] = block_mean(x, n_blocks)
    progress(f"{pot.name} hcp NPT {temperature:g} K, {pressure_gpa:g} GPa: a {row['a_A']:.4f}({row['a_A_err']:.4f}) "
             f"c {row['c_A']:.4f}({row['c_A_err']:.4f}) Å  c/a {row['covera']:.4f}")
    return row


def lattice_vs_temperature(pot, symbol, a0, covera0, supercell, temperatures, rs, sampling, n_blocks=4,
                           progress=log.info) -> list[dict]:
    return scan(temperatures, lambda k, t: hcp_npt(pot, symbol, a0, covera0, supercell, t, 0.0, rs, sampling,
                                                   n_blocks, seed=k, progress=progress),
                "T_K", f"{pot.name} hcp lattice vs temperature")


def lattice_vs_pressure(pot, symbol, a0, covera0, supercell, temperature, pressures, rs, sampling,
                        n_blocks=4, progress=log.info) -> list[dict]:
    return scan(pressures, lambda k, p: hcp_npt(pot, symbol, a0, covera0, supercell, temperature, p, rs, sampling,
                                                n_blocks, seed=k, progress=progress),
                "P_GPa", f"{pot.name} hcp lattice vs pressure")
