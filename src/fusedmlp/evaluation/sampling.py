"""MD runs of the evaluation protocol: equilibrate, then record a production trajectory.

The paper's protocol thermostats with Nose–Hoover chains (length 5, 2 chain steps, 3rd-order
Suzuki–Yoshida, τ_T = 50 fs) and relaxes cells with an anisotropic barostat (τ_P = 500 fs);
all of it is configuration (``evaluation.md``), read into the MD layer's ``md.settings.Dynamics``
(``evaluation.jobs.run_settings``) that every run here takes.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np
from ase import Atoms
from ase.data import atomic_masses

from .. import units
from ..md.neighbors import ROW_GROUPS, NeighborGraph
from ..md.settings import Dynamics
from ..md.simulate import Simulator, Trajectory, lattice_site_momenta
from .potentials import Potential

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Lengths of one measurement (ps): equilibration (discarded) and production."""

    equilibration_ps: float
    production_ps: float
    record_every_fs: float


def _masses(atoms: Atoms) -> np.ndarray:
    return np.asarray(atomic_masses[atoms.numbers], float)


def _simulator(pot: Potential, atoms: Atoms, rs: Dynamics, barostat) -> Simulator:
    """The potential's compiled MD for these atoms and ensemble. Temperature, pressure, length,
    recording interval and seed are arguments of a run, so the runs of a job (the points of a
    scan, an equilibration and its production) trace and compile once instead of once each."""
    # 100 frame slots of 500 steps per call: recording intervals down to 5 steps in full calls
    s = rs.md(1.0, steps=5, record_every=5, chunk=500, barostat=barostat)
    ng = NeighborGraph(pot.cutoff, skin=1.0, row_groups=ROW_GROUPS if pot.triplets else 1)
    return pot.reuse(("md", tuple(atoms.numbers), rs, barostat),
                     lambda: Simulator(pot.energy(atoms.numbers), _masses(atoms), s, ng))


def simulate(pot: Potential, atoms: Atoms, temperature: float, rs: Dynamics, ps: float,
             record_every_fs: float = 0.0, pressure_gpa: float | None = None, coupling: str = "hexagonal",
             momenta=None, seed: int = 0, progress: Callable[[str], None] = log.info,
             capacity: int = 0) -> Trajectory:
    """One NVT run (or NPT with ``pressure_gpa``) of ``ps`` picoseconds from ``atoms``; ``capacity``
    the graph capacity to start from (a previous run's ``stats["capacity"]``: the same compiled MD)."""
    steps = rs.steps(ps)
    every = rs.steps(record_every_fs * units.FS) if record_every_fs else 0
    if every:
        steps -= steps % every
    # the target pressure is a run argument, so every pressure shares the simulator
    barostat = None if pressure_gpa is None else rs.barostat(0.0, coupling)
    sim = _simulator(pot, atoms, rs, barostat)
    return sim.run(np.asarray(atoms.positions, pot.dtype), np.array(atoms.cell[:], pot.dtype), params=pot.params,
                   momenta=momenta, progress=progress, seed=rs.seed + seed, temperature=temperature,
                   steps=max(steps, every or 1), record_every=every, pressure_gpa=pressure_gpa,
                   capacity=capacity)


def final_atoms(atoms: Atoms, traj: Trajectory, box=None) -> Atoms:
    """``atoms`` at the last state of ``traj`` (optionally scaled into ``box``)."""
    out = atoms.copy()
    out.set_cell(np.asarray(traj.final["box"], float))
    out.positions = np.asarray(traj.final["positions"], float)
    if box is not None:
        out.set_cell(np.asarray(box, float), scale_atoms=True)
    return out


def measure(pot: Potential, atoms: Atoms, temperature: float, rs: Dynamics, sampling: Sampling,
            pressure_gpa: float | None = None, coupling: str = "hexagonal", seed: int = 0,
            progress: Callable[[str], None] = log.info, at_lattice_sites: bool = False) -> Trajectory:
    """Equilibrate for ``sampling.equilibration_ps``, then record ``sampling.production_ps``.
    ``at_lattice_sites``: ``atoms`` is a crystal at its sites, which starts with the momenta of
    ``md.simulate.lattice_site_momenta`` (else Maxwell–Boltzmann at ``temperature``)."""
    momenta = (lattice_site_momenta(atoms.get_masses(), temperature, rs.seed + 2 * seed) if at_lattice_sites
               else None)
    eq = simulate(pot, atoms, temperature, rs, sampling.equilibration_ps, 0.0, pressure_gpa, coupling,
                  momenta=momenta, seed=2 * seed, progress=progress)
    return simulate(pot, final_atoms(atoms, eq), temperature, rs, sampling.production_ps,
                    sampling.record_every_fs, pressure_gpa, coupling, momenta=eq.final["momenta"],
                    seed=2 * seed + 1, progress=progress, capacity=eq.stats["capacity"])


class ScanStopped(RuntimeError):
    """A scan stopped at a point by an error that is not about the potential (a rejected input,
    a crash); ``rows`` are the points measured before it, for the job to keep."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def scan(points, measure: Callable[[int, float], dict], key: str, label: str) -> list[dict]:
    """``measure(k, point)`` at every point of a scan (temperatures, pressures). A point where the
    potential's MD blows up is a result about the potential: it is logged, recorded as a row with
    ``status`` 'unstable: …' and no values, and the scan goes on. If every point fails, it raises.
    Any other error at a later point raises ``ScanStopped`` carrying the rows measured before it."""
    rows = []
    for k, x in enumerate(points):
        try:
            rows.append(measure(k, x) | {"status": "ok"})
        except FloatingPointError as exc:
            log.warning("%s at %s = %g: MD unstable (%s); recorded as unstable", label, key, x, exc)
            rows.append({key: float(x), "status": f"unstable: {exc}"})
        except Exception as exc:
            if not rows:
                raise
            raise ScanStopped(f"{label} stopped at {key} = {x:g} after {len(rows)} measured points: "
                              f"{type(exc).__name__}: {exc}", rows) from exc
    if rows and all(r["status"] != "ok" for r in rows):
        raise FloatingPointError(f"{label}: MD unstable at every {key} ({[r[key] for r in rows]})")
    return rows
