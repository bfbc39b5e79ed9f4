"""Liquid properties: structure (RDF, ADF) and self-diffusion (Green–Kubo, Einstein).

A liquid is prepared from a bcc crystal: melted at ``melt_temperature``, brought to T at zero
pressure with an isotropic barostat (so the density is the model's own), then sampled in NVT at
the mean NPT box. Diffusion is sampled with a deterministic thermostat (Nose–Hoover by default):
Langevin friction would slow the dynamics it measures.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

from .. import units
from ..md.neighbors import plane_spacings
from ..md.settings import Dynamics
from ..md.simulate import Trajectory
from ..observables.averages import block_errors
from ..observables.structure import adf, coordination_number, number_density, rdf_frames
from ..observables.transport import DiffusionSettings, self_diffusion
from ..structures import crystal
from .potentials import Potential
from .sampling import Sampling, final_atoms, simulate

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LiquidSettings:
    structure: str = "bcc"  # the crystal that is melted
    a0: float = 3.3  # Å
    supercell: tuple = (4, 4, 4)
    # above the melting point, but within the potential's training data (hotter melts of ML
    # potentials find unphysical close contacts)
    melt_temperature: float = 2500.0  # K
    melt_ps: float = 2.0
    npt_ps: float = 2.0  # density relaxation at T (second half averaged)
    sampling: Sampling = Sampling(1.0, 5.0, 20.0)  # NVT at the mean NPT box


def prepare_liquid(pot: Potential, symbol: str, temperature: float, ls: LiquidSettings, rs: Dynamics,
                   seed: int = 0, progress: Callable[[str], None] = log.info):
    """(liquid atoms in their mean zero-pressure box at T, momenta)."""
    atoms = crystal(symbol, ls.structure, ls.a0, supercell=ls.supercell)
    hot = simulate(pot, atoms, max(ls.melt_temperature, temperature), rs, ls.melt_ps, 0.0, pressure_gpa=0.0,
                   coupling="isotropic", seed=3 * seed, progress=progress)
    npt = simulate(pot, final_atoms(atoms, hot), temperature, rs, ls.npt_ps, ls.sampling.record_every_fs,
                   pressure_gpa=0.0, coupling="isotropic", seed=3 * seed + 1, progress=progress)
    box = np.mean(npt.boxes[len(npt.boxes) // 2:], axis=0)
    return final_atoms(atoms, npt, box), npt.final["momenta"]


def sample_liquid(pot, symbol, temperature, ls: LiquidSettings, rs: Dynamics, seed: int = 0,
                  progress=log.info) -> tuple[Trajectory, object]:
    liquid, momenta = prepare_liquid(pot, symbol, temperature, ls, rs, seed, progress)
    eq = simulate(pot, liquid, temperature, rs, ls.sampling.equilibration_ps, 0.0, momenta=momenta,
                  seed=3 * seed + 2, progress=progress)
    traj = simulate(pot, final_atoms(liquid, eq), temperature, rs, ls.sampling.production_ps,
                    ls.sampling.record_every_fs, momenta=eq.final["momenta"], seed=3 * seed + 3,
                    progress=progress)
    return traj, liquid


@dataclasses.dataclass(frozen=True)
class StructureSettings:
    rdf_r_max: float = 8.0  # Å (capped at half the smallest plane spacing)
    rdf_bins: int = 160
    adf_cutoff: float = 4.0  # Å: triplets within this distance (the paper's)
    adf_bins: int = 90
    coordination_cutoff: float | None = None  # Å; None: the first minimum of g(r) after its peak
    n_blocks: int = 5  # consecutive blocks of frames for the standard error of g(r)


def first_minimum(r, g) -> float:
    """Position of the first minimum of g after its main peak (Å)."""
    r, g = np.asarray(r), np.asarray(g)
    peak = int(np.argmax(g))
    rest = g[peak:]
    # smooth over three bins so noise does not pick a spurious dip
    smooth = np.convolve(rest, np.ones(3) / 3, mode="same")
    return float(r[peak + int(np.argmin(smooth[: max(3, len(smooth) * 2 // 3)]))])


def liquid_structure(pot: Potential, symbol: str, temperature: float, ls: LiquidSettings,
                     ss: StructureSettings, rs: Dynamics, progress=log.info) -> dict:
    """RDF, ADF, density and coordination number of the liquid at ``temperature``."""
    traj, liquid = sample_liquid(pot, symbol, temperature, ls, rs, progress=progress)
    box = np.asarray(liquid.cell, float)
    half = 0.5 * float(plane_spacings(box).min())
    r_max = min(ss.rdf_r_max, half * (1 - 1e-6))
    n_bins = max(10, int(round(ss.rdf_bins * r_max / ss.rdf_r_max)))
    r, g_frames = rdf_frames(traj.positions, box, r_max, n_bins)
    g, g_err = g_frames.mean(axis=0), block_errors(g_frames, ss.n_blocks)
    theta, p = adf(traj.positions, box, ss.adf_cutoff, ss.adf_bins)
    rho = float(number_density(traj.positions, box))
    r_cn = ss.coordination_cutoff or first_minimum(r, np.asarray(g))
    summary = {"T_K": float(temperature), "T_mean_K": float(np.mean(traj.temperatures)),
               "n_atoms": len(liquid), "frames": len(traj.positions), "density_per_A3": rho,
               "mass_density_g_cm3": rho * float(np.mean(np.asarray(liquid.get_masses()))) * units.AMU_PER_A3_TO_G_CM3,
               "rdf_peak_r_A": float(r[int(np.argmax(g))]), "rdf_peak_g": float(np.max(g)),
               "coordination_cutoff_A": r_cn,
               "coordination_number": float(coordination_number(r, np.asarray(g), rho, r_cn)),
               "adf_peak_deg": float(theta[int(np.argmax(p))])}
    progress(f"{pot.name} liquid {temperature:g} K: density {summary['mass_density_g_cm3']:.3f} g/cm³, "
             f"g(r) peak {summary['rdf_peak_g']:.2f} at {summary['rdf_peak_r_A']:.2f} Å, "
             f"coordination {summary['coordination_number']:.1f}")
    return {"summary": summary, "rdf": {"r_A": r, "g": g, "g_err": g_err},
            "adf": {"theta_deg": theta, "p_per_deg": np.asarray(p)}}


@dataclasses.dataclass(frozen=True)
class TransportSettings:
    max_lag_ps: float = 1.0
    n_blocks: int = 4
    plateau_ps: tuple | None = None  # Green–Kubo plateau window; None: second half of the lags
    fit_ps: tuple | None = None  # Einstein fit window; None: second half of the lags


def diffusion_at(pot: Potential, symbol: str, temperature: float, ls: LiquidSettings,
                 ts: TransportSettings, rs: Dynamics, seed: int = 0, progress=log.info) -> dict:
    traj, liquid = sample_liquid(pot, symbol, temperature, ls, rs, seed=seed, progress=progress)
    dt = float(traj.times[1] - traj.times[0])
    ds = DiffusionSettings(max_lag=max(2, int(round(ts.max_lag_ps / dt))), n_blocks=ts.n_blocks,
                           plateau=None if ts.plateau_ps is None else tuple(ts.plateau_ps),
                           fit_range=None if ts.fit_ps is None else tuple(ts.fit_ps))
    res = self_diffusion(traj.velocities(), traj.positions, dt, ds)
    d = res.in_m2_per_s()
    row = {"T_K": float(temperature), "T_mean_K": float(np.mean(traj.temperatures)), "n_atoms": len(liquid),
           "frames": len(traj.positions), "density_per_A3": float(len(liquid) / abs(liquid.get_volume())),
           "D_gk_m2_s": d["D_gk"], "D_gk_err_m2_s": d["D_gk_err"],
           "D_einstein_m2_s": d["D_einstein"], "D_einstein_err_m2_s": d["D_einstein_err"]}
    progress(f"{pot.name} diffusion {temperature:g} K: Green–Kubo {row['D_gk_m2_s']:.3e} ± "
             f"{row['D_gk_err_m2_s']:.1e}, Einstein {row['D_einstein_m2_s']:.3e} ± "
             f"{row['D_einstein_err_m2_s']:.1e} m²/s")
    return row
