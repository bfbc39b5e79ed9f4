"""Phonons of a potential's own 0 K crystal: relax the lattice parameters, then phonopy."""

from __future__ import annotations

import logging

import numpy as np

from ..observables.phonons import PhononResult, PhononSettings, phonons
from ..structures import LatticeParameters, crystal, relax_lattice
from .potentials import Potential

log = logging.getLogger(__name__)


def crystal_phonons(pot: Potential, symbol: str, structure: str, a0: float, covera0: float | None,
                    settings: PhononSettings, progress=log.info) -> tuple[PhononResult, LatticeParameters]:
    """Band structure and DOS at the potential's zero-pressure 0 K lattice parameters."""
    cell = crystal(symbol, structure, a0, covera0)
    efv = pot.host_efv(cell.numbers)
    lat = relax_lattice(lambda r, b: efv(r, b)[0], symbol, structure, a0, covera0, tol=1e-7)
    progress(f"{pot.name} {structure} at 0 K: a {lat.a:.4f} Å" + (f", c/a {lat.covera:.4f}" if lat.covera else "")
             + f", {lat.energy_per_atom:.4f} eV/atom")
    unit = crystal(symbol, structure, lat.a, lat.covera)
    # ``crystal`` is monatomic: phonopy's supercells hold the same element throughout
    forces_of_size: dict[int, object] = {}

    def forces(positions, box):
        n = len(positions)
        if n not in forces_of_size:
            forces_of_size[n] = pot.forces_fn(np.full(n, unit.numbers[0]))
        return forces_of_size[n](positions, box)

    res = phonons(forces, unit, structure, settings)
    progress(f"{pot.name} {structure} phonons: Γ {np.round(res.gamma_frequencies, 3).tolist()} THz, "
             f"max {max(float(f.max()) for f in res.frequencies):.2f} THz")
    return res, lat
