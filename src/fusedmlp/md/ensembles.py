"""MD ensembles on jax-md integrators: NVE, NVT (Langevin, Nose–Hoover chains) and an
anisotropic NPT by stochastic cell rescaling.

Particles are propagated by jax-md (``simulate.nve``, ``nvt_langevin`` — BAOAB —, and
``nvt_nose_hoover``) with unwrapped positions (``space.free``), so trajectories can be used for
mean-squared displacements; the neighbour lists take care of periodicity.

jax-md's ``npt_nose_hoover`` is isotropic only, so NPT adds a barostat step to an NVT
integrator: **stochastic cell rescaling** (Bernetti & Bussi, JCP 153, 114107, 2020; anisotropic
form: Del Tatto, Raiteri, Bernetti & Bussi, Appl. Sci. 12, 1139, 2022), applied every ``every``
steps over Δt = every·dt. Cell lengths are grouped (``coupling``): ``isotropic`` (x, y, z
together), ``hexagonal`` (x and y together, z alone: a and c of a hexagonal cell with c along z)
or ``orthorhombic`` (each alone). For a group g of n_g Cartesian directions with log-length
y_g the update is the overdamped Langevin equation

    dy_g = (β_T/τ_P) · mean_(α∈g)(P_αα − P₀) dt + (1 − n_g) D_g dt + √(2 D_g) dW,
    D_g  = k_BT β_T / (V τ_P n_g),

which samples exp(−β(U + K + P₀V)) with the measure ∏_g dL_g (the (1 − n_g) D_g term is the
Itô drift of the volume-dependent noise). P is the instantaneous pressure tensor including the
kinetic part; positions scale as r_α → λ_α r_α and momenta as p_α → p_α/λ_α (a phase-space
volume-preserving map), λ_α = exp(Δy_g(α)). β_T only sets the relaxation speed. The step before
each cell update is the integrator's own, with a force evaluation that also returns the virial
(``virial_step``), so the update costs one evaluation (the forces after scaling), not two.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import simulate

from .. import units
from ..observables.stress import pressure_tensor, volume

THERMOSTATS = ("langevin", "nose-hoover", "none")
COUPLINGS = {"isotropic": ((0, 1, 2),), "hexagonal": ((0, 1), (2,)),
             "orthorhombic": ((0,), (1,), (2,))}


@dataclasses.dataclass(frozen=True)
class Thermostat:
    kind: str = "langevin"  # langevin, nose-hoover, or none (NVE)
    temperature: float = 300.0  # K; also the temperature of the initial velocities
    friction_per_ps: float = 4.0  # Langevin
    tau_fs: float = 50.0  # Nose–Hoover chain time constant
    chain_length: int = 5
    chain_steps: int = 2
    sy_steps: int = 3  # Suzuki–Yoshida order: 1, 3, 5 or 7

    def __post_init__(self):
        if self.kind not in THERMOSTATS:
            raise ValueError(f"thermostat kind {self.kind!r}: expected one of {THERMOSTATS}")
        if self.sy_steps not in (1, 3, 5, 7):
            raise ValueError(f"Suzuki–Yoshida steps {self.sy_steps}: expected 1, 3, 5 or 7")


@dataclasses.dataclass(frozen=True)
class Barostat:
    pressure_gpa: float = 0.0
    tau_ps: float = 0.5
    compressibility_per_gpa: float = 0.01  # β_T; sets how fast the cell relaxes, not where
    coupling: str = "hexagonal"
    every: int = 10  # steps between cell updates

    def __post_init__(self):
        if self.coupling not in COUPLINGS:
            raise ValueError(f"barostat coupling {self.coupling!r}: expected one of {tuple(COUPLINGS)}")

    def groups(self) -> np.ndarray:
        """(3, n_groups) 0/1 matrix: direction α belongs to group g."""
        g = COUPLINGS[self.coupling]
        m = np.zeros((3, len(g)))
        for k, dirs in enumerate(g):
            m[list(dirs), k] = 1.0
        return m

    def check_box(self, box) -> None:
        """Scaling Cartesian axes keeps the cell's shape only if it is aligned with them."""
        box = np.asarray(box, float)
        tol = 1e-8 * np.abs(box).max()
        if self.coupling == "orthorhombic" and np.abs(box - np.diag(np.diag(box))).max() > tol:
            raise ValueError("orthorhombic barostat coupling needs a diagonal box")
        if self.coupling == "hexagonal" and (np.abs(box[:2, 2]).max() > tol or np.abs(box[2, :2]).max() > tol):
            raise ValueError("hexagonal barostat coupling needs the third lattice vector along z "
                             "and the first two in the xy plane")


def integrator(thermostat: Thermostat, force_energy: Callable, shift: Callable, dt_ps: float):
    """jax-md (init_fn, step_fn) for the particle ensemble."""
    kT = units.kT(thermostat.temperature)
    # the thermostats also take kT at every step (jax-md's kT keyword), so one compiled step
    # serves every temperature
    if thermostat.kind == "langevin":
        return simulate.nvt_langevin(force_energy, shift, dt_ps, kT, gamma=thermostat.friction_per_ps)
    if thermostat.kind == "nose-hoover":
        return simulate.nvt_nose_hoover(force_energy, shift, dt_ps, kT,
                                        chain_length=thermostat.chain_length,
                                        chain_steps=thermostat.chain_steps,
                                        sy_steps=thermostat.sy_steps,
                                        tau=thermostat.tau_fs * units.FS)
    init_fn, step_fn = simulate.nve(force_energy, shift, dt_ps)
    def nve_init(key, r, mass, **kw):
        return init_fn(key, r, kw.pop("kT", kT), mass=mass, **kw)

    def nve_step(state, **kw):
        kw.pop("kT", None)
        return step_fn(state, **kw)

    return nve_init, nve_step


def virial_step(thermostat: Thermostat, forces_virial: Callable, shift: Callable, dt_ps: float):
    """``step(state, **kw) -> (state, virial)``: the step of ``integrator`` (jax-md's
    ``nvt_langevin`` BAOAB or ``nvt_nose_hoover``, operator by operator) whose force evaluation
    also returns the virial at the positions where the step ends; ``forces_virial(positions,
    neighbor, box, params) -> (F, W)``. The NPT driver takes it for the step before each cell
    update, which otherwise evaluates energy, forces and virial again at those positions (one
    evaluation in 12 with the update every 10 steps). None without a thermostat: a barostat on
    NVE dynamics evaluates the virial apart."""
    kT0 = units.kT(thermostat.temperature)

    def fw(position, kw):
        return forces_virial(position, **{k: v for k, v in kw.items() if k != "kT"})

    if thermostat.kind == "langevin":
        gamma, half = thermostat.friction_per_ps, dt_ps / 2

        def langevin(state, **kw):
            kT = kw.pop("kT", kT0)
            state = simulate.momentum_step(state, half)
            state = simulate.position_step(state, shift, half, **kw)
            state = simulate.stochastic_step(state, dt_ps, kT, gamma)
            state = simulate.position_step(state, shift, half, **kw)
            forces, virial = fw(state.position, kw)
            return simulate.momentum_step(state.set(force=forces), half), virial

        return langevin
    if thermostat.kind == "nose-hoover":
        # jax-md's nvt_nose_hoover takes dt and tau in float32, also under x64
        dt = jnp.float32(dt_ps)
        chain = simulate.nose_hoover_chain(dt, thermostat.chain_length, thermostat.chain_steps,
                                           thermostat.sy_steps, jnp.float32(thermostat.tau_fs * units.FS))

        def nose_hoover(state, **kw):
            kT = kw.get("kT", kT0)
            c = chain.update_mass(state.chain, kT)
            p, c = chain.half_step(state.momentum, c, kT)
            state = simulate.momentum_step(state.set(momentum=p), jnp.float32(dt / 2))
            state = simulate.position_step(state, shift, dt, **kw)
            forces, virial = fw(state.position, kw)
            state = simulate.momentum_step(state.set(force=forces), jnp.float32(dt / 2))
            p, c = chain.half_step(state.momentum, c.set(kinetic_energy=simulate.kinetic_energy(state)), kT)
            return state.set(momentum=p, chain=c), virial

        return nose_hoover
    return None


def degrees_of_freedom(thermostat: Thermostat, n_atoms: int) -> int:
    """Langevin exchanges momentum with the bath; the others conserve the (zero) total momentum."""
    return 3 * n_atoms if thermostat.kind == "langevin" else 3 * n_atoms - 3


def barostat_step(b: Barostat, dt_ps: float):
    """``f(key, positions, momenta, masses, virial, box, kT, p0) -> (positions, momenta, box)``;
    the target pressure ``p0`` (eV/Å³) is an argument, like ``kT``, so one compiled step serves
    every pressure (``b.pressure_gpa`` is the run's default, applied by the MD driver)."""
    groups = jnp.asarray(b.groups())
    n_g = jnp.sum(groups, axis=0)
    beta = b.compressibility_per_gpa / units.GPA  # Å³/eV
    span = b.every * dt_ps

    def apply(key, positions, momenta, masses, virial, box, kT, p0):
        dp = jnp.diag(pressure_tensor(momenta, masses, virial, box)) - p0
        diff = kT * beta / (volume(box) * b.tau_ps * n_g)
        dy = ((beta / b.tau_ps) * (dp @ groups) / n_g * span + (1.0 - n_g) * diff * span
              + jnp.sqrt(2.0 * diff * span) * jax.random.normal(key, n_g.shape, box.dtype))
        lam = jnp.exp(groups @ dy)
        return positions * lam, momenta / lam, box * lam[None, :]

    return apply
