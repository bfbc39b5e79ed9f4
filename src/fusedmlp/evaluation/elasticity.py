"""Elastic constants at finite temperature by stress fluctuation (NVT at a fixed box).

hcp at the experimental lattice constants of each temperature (the paper's protocol); bcc in the
box that an NPT run at zero pressure gives. Each result carries the 6×6 stress–strain
coefficients (``observables.stress.stress_fluctuation``) reduced by the crystal's symmetry: the
adiabatic ones as ``C11`` … (what ultrasonic experiments such as Fisher & Renken 1964 measure,
and what the comparisons use) and the isothermal ones as ``C11_T`` …; the pressure, the
Voigt/Reuss/Hill moduli and Poisson ratio (of the adiabatic constants), and standard errors from
blocks of the production frames for all of them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from .. import elastic, units
from ..md.neighbors import frame_graphs
from ..md.settings import Dynamics
from ..md.simulate import Trajectory, lattice_site_momenta
from ..observables.averages import block_slices, standard_covariance, standard_error
from ..observables.control_variates import calibration_weights, sublattice_variates
from ..observables.reweighting import BatchedQuantities, Frames
from ..observables.stress import (frame_pressure, kinetic_tensor, pressure_path_slope, stress_fluctuation,
                                  thermal_stress)
from ..structures import crystal, sublattices
from .potentials import Potential
from .sampling import Sampling, final_atoms, measure, scan, simulate

log = logging.getLogger(__name__)

def born_frames(pot: Potential, atoms: Atoms, traj: Trajectory, batch_frames: int = 8,
                with_forces: bool = False) -> dict:
    """Per-frame Born stress (F, 6) and stiffness (F, 6, 6) (eV/Å³), potential energies (F,) and
    kinetic tensors (F, 3, 3) (eV) of an NVT trajectory (one box); ``with_forces`` also the forces
    (F, N, 3) (eV/Å), for control variates."""
    box = np.asarray(traj.boxes[0], float)
    if not np.allclose(traj.boxes, box):
        raise ValueError("stress fluctuation needs a fixed box (an NVT trajectory)")
    graphs = frame_graphs(traj.positions, box, pot.cutoff)
    frames = Frames(np.asarray(traj.positions, pot.dtype), box.astype(pot.dtype), graphs,
                    np.zeros(len(traj.positions)), {})
    per_frame = pot.reuse(("frame quantities", tuple(atoms.numbers), batch_frames),
                          lambda: BatchedQuantities(pot.energy(atoms.numbers), batch_frames))
    q = per_frame.quantities(pot.params, frames, True)
    kin = jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(traj.momenta), jnp.asarray(traj.masses))
    out = {"born_stress": np.asarray(q["born_stress"], float),
           "born_stiffness": np.asarray(q["born_stiffness"], float), "energy": np.asarray(q["energy"], float),
           "kinetic": np.asarray(kin, float), "volume": float(abs(np.linalg.det(box)))}
    if with_forces:
        out["forces"] = np.asarray(per_frame.forces(pot.params, frames), float)
    return out


def tensor_and_pressure(q: dict, n_atoms: int, temperature: float, idx=None,
                        variates=None) -> tuple[dict, float, np.ndarray]:
    """Stress-fluctuation tensors ``{"adiabatic", "isothermal"}`` (6×6, GPa), pressure (GPa) and
    thermal stress λ = (∂σ/∂T)_V (Voigt, MPa/K) of the frames ``idx`` (all if None); with
    ``variates`` (F, p) of known mean zero, averages over those frames take their calibration
    weights (``control_variates``)."""
    idx = slice(None) if idx is None else idx
    f = {k: jnp.asarray(q[k][idx]) for k in ("born_stress", "born_stiffness", "kinetic", "energy")}
    w = None if variates is None else jnp.asarray(calibration_weights(np.asarray(variates)[idx]))
    c = stress_fluctuation(f["born_stress"], f["born_stiffness"], f["kinetic"], f["energy"], q["volume"],
                           n_atoms, temperature, w)
    p = frame_pressure(f["born_stress"], f["kinetic"], q["volume"], w)
    t_lambda = thermal_stress(f["born_stress"], f["energy"], q["volume"], n_atoms, temperature, w)
    return ({k: np.asarray(units.ev_per_a3_to_gpa(v), float) for k, v in c.items()},
            float(units.ev_per_a3_to_gpa(np.mean(np.asarray(p)[:3]))),
            np.asarray(units.ev_per_a3_to_mpa(t_lambda), float) / temperature)


def summarize(q: dict, n_atoms: int, temperature: float, symmetry: str, n_blocks: int,
              variates=None, expansion=None) -> dict:
    """Symmetry-reduced constants (adiabatic ``C11`` …, isothermal ``C11_T`` …), pressure, moduli
    (adiabatic), the fixed-box thermal pressure coefficients ``dPa_dT_V_MPa_K`` (basal plane, the
    mean of xx and yy) and ``dPc_dT_V_MPa_K`` (z), and with a lattice ``expansion`` (Voigt, 1/K)
    the pressure slopes along it, ``dPa_dT_MPa_K`` and ``dPc_dT_MPa_K``
    (``stress.pressure_path_slope``, what the DiffTRe slope targets ask for), with block
    standard errors ``<name>_err``, and the block covariances
    ``<a>_<b>_cov`` of every pair of adiabatic constants: C11 and C12 share the optical-mode
    relaxation term, so their errors are strongly anti-correlated and any combination of the
    constants (an RMS deviation, C11 − C12) needs them. With ``variates`` every estimate, the
    blocks' included, uses its own frames' calibration weights."""

    def values(idx=None) -> dict:
        c, p, lam = tensor_and_pressure(q, n_atoms, temperature, idx, variates)
        out = {k: float(v) for k, v in elastic.reduce_stiffness(c["adiabatic"], symmetry).items()}
        out.update({f"{k}_T": float(v) for k, v in elastic.reduce_stiffness(c["isothermal"], symmetry).items()})
        out["pressure_GPa"] = p
        out["dPa_dT_V_MPa_K"], out["dPc_dT_V_MPa_K"] = -float(np.mean(lam[:2])), -float(lam[2])
        if expansion is not None:  # λ in MPa/K and B^T in MPa: the slope in MPa/K
            slope = pressure_path_slope(lam * temperature, 1e3 * c["isothermal"], np.asarray(expansion), temperature)
            out["dPa_dT_MPa_K"], out["dPc_dT_MPa_K"] = float(np.mean(slope[:2])), float(slope[2])
        # bulk modulus named B as in the paper (elastic.moduli calls it K)
        out.update({k.replace("K_", "B_"): v for k, v in
                    elastic.moduli(elastic.symmetric_matrix(out, symmetry)).items()})
        return out

    row = values()
    n = len(q["born_stress"])
    if n_blocks >= 2 and n // n_blocks >= 2:  # otherwise no errors: too few frames per block
        blocks = [values(s) for s in block_slices(n, n_blocks)]
        for k in list(row):
            row[f"{k}_err"] = standard_error([b[k] for b in blocks])
        names = elastic.SYMMETRY_CONSTANTS[symmetry]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                row[f"{a}_{b}_cov"] = standard_covariance([x[a] for x in blocks], [x[b] for x in blocks])
    return row


@dataclasses.dataclass(frozen=True)
class ElasticSettings:
    sampling: Sampling
    n_blocks: int = 4
    batch_frames: int = 8
    control_variates: bool = False  # Stein variates of the sublattice shifts (``control_variates``)


def elastic_at(pot: Potential, atoms: Atoms, temperature: float, rs: Dynamics, es: ElasticSettings,
               symmetry: str, seed: int = 0, progress: Callable[[str], None] = log.info,
               at_lattice_sites: bool = False, sublattice=None, expansion=None) -> dict:
    """Stress-fluctuation constants of ``atoms`` (its box fixed) at ``temperature``;
    ``at_lattice_sites`` as in ``sampling.measure``. With ``es.control_variates`` the averages take
    the calibration weights of the Stein variates of the shifts between the crystal's sublattices
    (``sublattice``: each atom's basis atom, ``structures.sublattices``), which remove most of the
    optical-mode noise of hcp's C11 and C12; the plain estimate of the same frames goes beside it
    (``C11_plain``, ``C11_plain_err`` …). ``expansion``: as in ``summarize``."""
    traj = measure(pot, atoms, temperature, rs, es.sampling, seed=seed, progress=progress,
                   at_lattice_sites=at_lattice_sites)
    q = born_frames(pot, atoms, traj, es.batch_frames, with_forces=es.control_variates)
    row = {"T_K": float(temperature), "n_atoms": len(atoms), "frames": len(traj.positions),
           "T_mean_K": float(np.mean(traj.temperatures))}
    variates = None
    if es.control_variates:
        if sublattice is None:
            raise ValueError("control variates need each atom's sublattice")
        # unwrapped positions start at the sites: displacements never jump by a lattice vector
        variates = sublattice_variates(np.asarray(traj.positions) - atoms.positions[None], q["forces"],
                                       sublattice, units.kT(temperature))
        plain = summarize(q, len(atoms), temperature, symmetry, es.n_blocks)
    row["control_variates"] = 0 if variates is None else variates.shape[1]
    row.update(summarize(q, len(atoms), temperature, symmetry, es.n_blocks, variates, expansion))
    if variates is not None:
        names = elastic.SYMMETRY_CONSTANTS[symmetry]
        for n in names:  # the plain estimate of the same frames beside it
            row[f"{n}_plain"], row[f"{n}_plain_err"] = plain[n], plain.get(f"{n}_err", np.nan)
        progress(f"{temperature:g} K, {variates.shape[1]} control variates: "
                 + "  ".join(f"{n} {row[n]:.1f} ± {row.get(n + '_err', np.nan):.2f} "
                             f"(plain {plain[n]:.1f} ± {row[n + '_plain_err']:.2f})" for n in names))
    return row


def hcp_elastic_vs_temperature(pot: Potential, symbol: str, lattice: Callable[[float], tuple[float, float]],
                               temperatures, supercell, rs: Dynamics, es: ElasticSettings,
                               progress: Callable[[str], None] = log.info, expansion=None) -> list[dict]:
    """hcp C_ij, P, B, G, ν at each temperature, in a box at ``lattice(T) = (a, c)`` (Å); with
    ``expansion(T)`` (the lattice's linear strain rates, Voigt, 1/K) the pressure slopes along it."""
    def at(k, t):
        a, c = lattice(float(t))
        row = elastic_at(pot, crystal(symbol, "hcp", a, c / a, supercell), t, rs, es, "hexagonal", seed=k,
                         progress=progress, at_lattice_sites=True, sublattice=sublattices("hcp", supercell),
                         expansion=None if expansion is None else expansion(float(t)))
        row.update(a_A=a, c_A=c)
        progress(f"{pot.name} hcp {t:g} K: "
                 + "  ".join(f"{n} {row[n]:.1f}" for n in elastic.HEXAGONAL_CONSTANTS)
                 + f"  P {row['pressure_GPa']:+.3f} GPa  B {row['B_V']:.1f}  G {row['G_V']:.1f}"
                 + f"  ν {row['nu_V']:.3f}"
                 + (f"  dPa/dT {row['dPa_dT_MPa_K']:+.2f}  dPc/dT {row['dPc_dT_MPa_K']:+.2f} MPa/K"
                    if "dPc_dT_MPa_K" in row else ""))
        return row

    return scan(temperatures, at, "T_K", f"{pot.name} hcp elastic constants")


@dataclasses.dataclass(frozen=True)
class CubicElasticSettings:
    structure: str  # bcc or fcc
    a0: float  # starting lattice constant (Å)
    supercell: tuple
    temperature: float
    npt_ps: float  # zero-pressure box relaxation
    elastic: ElasticSettings


def cubic_elastic(pot: Potential, symbol: str, cs: CubicElasticSettings, rs: Dynamics,
                  progress: Callable[[str], None] = log.info) -> dict:
    """Cubic C11, C12, C44 at ``cs.temperature`` in the mean box of a zero-pressure NPT run."""
    atoms = crystal(symbol, cs.structure, cs.a0, supercell=cs.supercell)
    npt = simulate(pot, atoms, cs.temperature, rs, cs.npt_ps, cs.elastic.sampling.record_every_fs,
                   momenta=lattice_site_momenta(atoms.get_masses(), cs.temperature, rs.seed), pressure_gpa=0.0,
                   coupling="isotropic", progress=progress)
    half = len(npt.boxes) // 2
    box = np.mean(npt.boxes[half:], axis=0)  # second half: the cell has relaxed
    lattice_a = float(np.cbrt(abs(np.linalg.det(box)) / np.prod(cs.supercell)))
    row = elastic_at(pot, final_atoms(atoms, npt, box), cs.temperature, rs, cs.elastic, "cubic",
                     progress=progress)
    row.update(structure=cs.structure, a_A=lattice_a)
    progress(f"{pot.name} {cs.structure} {cs.temperature:g} K, a = {lattice_a:.4f} Å: C11 {row['C11']:.1f}  "
             f"C12 {row['C12']:.1f}  C44 {row['C44']:.1f}  P {row['pressure_GPa']:+.3f} GPa")
    return row
