"""Iterative Boltzmann Inversion (IBI) of a pair correction on top of a fixed potential
(Matin et al., J. Chem. Theory Comput. 2024, doi:10.1021/acs.jctc.3c01051; Reith, Pütz &
Müller-Plathe, J. Comput. Chem. 24, 1624, 2003).

A tabulated pair potential v (``model.pair_correction``) is added to a trained model, whose own
parameters stay fixed, and refined until NVT MD at the target state point (temperature and
density) reproduces a target radial distribution function:

    v_{n+1}(r) = v_n(r) + α(r) k_BT ln[g_n(r) / g_target(r)].

No gradient passes through the MD and nothing is assumed of the model. The safeguards are those
of VOTCA-CSG (``update_ibi_pot.pl``, ``postupd_smooth.sh``, ``pressure_cor_simple.pl``), the most
used implementation, whose users' most common failure is an unphysical potential after one update
from a poor start (``ibi_update``, in this order):

1. the update only where both g's exceed a floor (ln of a vanishing g is noise or infinite),
   and where the model's g exceeds it while the target's does not (the model goes where the
   target never does: close contacts in a hole of the network at short range) the update that
   would bring g down to the floor, k_BT ln(g/floor) > 0 (not in VOTCA, whose base potentials are
   repulsive pair potentials: here the core would otherwise carry a constant, no force, and the
   close contacts would stay);
2. elsewhere the nearest such value carried over: inward from the first peak into the g ≈ 0
   core (a constant shift there, no force), outward to the cutoff, linearly across gaps; inward
   of the target's first pairs the step is made non-increasing in r (its running maximum from
   there inward), so that it never pulls pairs into the core (not in VOTCA, for the same reason);
3. triangular smoothing of the update ([1 2 1]/4 passes; of the update, not of g or v);
4. the update shifted to zero at the correction's cutoff;
5. damping α, constant or α0 (1 − r/r_c) (msibi's, which leaves the tail alone);
6. a cap on |Δv| per iteration (in k_BT);
7. optionally the pressure ramp A (1 − r/r_c), A = −sgn(ΔP) min(A_max, f |ΔP|) k_BT with
   A_max ≤ 0.1 (Reith et al.; VOTCA's simple pressure correction), which trades a little of the
   RDF for the pressure at the target density.

Each iteration is one ``training.loop`` step (checkpoints, resume, the per-iteration CSV and
progress come from the loop): an NVT trajectory with the current correction, continuing from the
previous iteration's final state, its g(r), pressure and RDF error, and the update. The error of
iteration n belongs to the correction it sampled with, and the run stops once the error is at or
below the tolerance. Each g is one short sample, so the tables do not converge: they scatter about
IBI's fixed point by the sampling noise of g, and the lowest of the noisy errors picks a lucky
sample more than a good table. The model therefore keeps the mean of the chain's last tables
(Polyak-Ruppert averaging of a stochastic fixed-point iteration, ``kept_correction``), or, with
``average_last`` 0, the measured correction with the lowest error.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses, atomic_numbers

from .. import experiment, units
from ..compilation import Program
from ..io import InputError
from ..md.neighbors import NeighborGraph, frame_graphs, plane_spacings
from ..md.settings import Dynamics
from ..md.simulate import Simulator
from ..model.dimenet import species_index
from ..model.energy import energy_fn
from ..model.pair_correction import PairCorrectionSettings, pair_correction
from ..model.settings import ModelSettings
from ..observables.averages import block_errors
from ..observables.structure import rdf_frames
from ..quantity import energy_forces_virial
from ..structures import crystal
from . import loop

log = logging.getLogger(__name__)


# --- the target ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RDFTarget:
    """A target g(r) on its own (possibly irregular) grid: r (Å), g, its standard error where
    the table gives one (a simulated target's ``g_err``; zero for a measurement without), and where
    it came from."""

    r: np.ndarray
    g: np.ndarray
    source: str
    g_err: np.ndarray | None = None

    def on(self, r) -> np.ndarray:
        """g_target at ``r`` (linear interpolation, no smoothing: a digitized curve is used as
        measured); NaN outside the table's range, where there is no target."""
        r = np.asarray(r, float)
        out = np.interp(r, self.r, self.g)
        return np.where((r >= self.r[0]) & (r <= self.r[-1]), out, np.nan)

    def error_on(self, r) -> np.ndarray:
        """Standard error of g_target at ``r`` (0 without a ``g_err`` column)."""
        if self.g_err is None:
            return np.zeros(np.shape(r))
        return np.interp(np.asarray(r, float), self.r, self.g_err)


def load_rdf_target(path) -> RDFTarget:
    """A ``r_A, g`` table (``#`` comment header naming the source), with an optional standard
    error column ``g_err``; r strictly increasing, g ≥ 0."""
    df = experiment.load_table(path, ("r_A", "g"))
    r, g = df["r_A"].to_numpy(), df["g"].to_numpy()
    g_err = None
    if "g_err" in df.columns:
        g_err = experiment.load_table(path, ("r_A", "g", "g_err"))["g_err"].to_numpy()
        if np.any(g_err < 0):
            raise InputError(path, "g_err", "standard errors must not be negative")
    if len(r) < 2 or np.any(np.diff(r) <= 0):
        i = int(np.nonzero(np.diff(r) <= 0)[0][0]) if len(r) >= 2 else 0
        raise InputError(path, "r_A", f"distances must be strictly increasing (row {i + 1}: {r[i]:g} Å, "
                                      f"then {r[min(i + 1, len(r) - 1)]:g} Å) with at least two rows")
    if np.any(g < 0) or np.any(r < 0):
        raise InputError(path, "g", "g(r) and r must not be negative")
    return RDFTarget(r, g, str(path), g_err)


# --- the update ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UpdateSettings:
    """The IBI update and its safeguards (module docstring)."""

    alpha: float = 0.5  # damping α (α0 with ``alpha_ramp``)
    alpha_ramp: bool = False  # α(r) = α0 (1 − r/r_c)
    g_floor: float = 0.05  # update only where both g's exceed this
    smoothing_passes: int = 1  # triangular [1 2 1]/4 passes over the update
    max_update_kT: float = 1.0  # cap of |Δv| per iteration, k_BT
    pressure_correction: bool = False
    target_pressure_gpa: float = 0.0
    pressure_scale_per_gpa: float = 3.0  # f (VOTCA's default 3e-4 per bar)
    pressure_max_kT: float = 0.1  # A_max, at most 0.1 k_BT

    def __post_init__(self):
        if not 0 < self.alpha <= 1:
            raise ValueError(f"IBI damping alpha {self.alpha}: expected 0 < alpha <= 1")
        if not 0 <= self.pressure_max_kT <= 0.1:
            raise ValueError(f"IBI pressure_max_kT {self.pressure_max_kT}: expected 0 to 0.1 (k_BT)")


def smooth_triangular(x: np.ndarray, passes: int) -> np.ndarray:
    """``passes`` of the 3-point triangular filter [1 2 1]/4 (end points: [2 1]/3, as a
    reflecting edge would not keep the end values' trend)."""
    x = np.asarray(x, float).copy()
    for _ in range(passes):
        if len(x) < 3:
            break
        y = x.copy()
        y[1:-1] = 0.25 * x[:-2] + 0.5 * x[1:-1] + 0.25 * x[2:]
        y[0] = (2 * x[0] + x[1]) / 3
        y[-1] = (2 * x[-1] + x[-2]) / 3
        x = y
    return x


def pressure_ramp_amplitude(pressure_gpa: float, s: UpdateSettings, kT: float) -> float:
    """A (eV) of the ramp A (1 − r/r_c): attractive (A < 0) when the pressure is too high."""
    dp = pressure_gpa - s.target_pressure_gpa
    return float(-np.sign(dp) * min(s.pressure_max_kT, s.pressure_scale_per_gpa * abs(dp)) * kT)


def ibi_update(r, g, g_target, kT: float, correction: PairCorrectionSettings, s: UpdateSettings,
               pressure_gpa: float | None = None) -> tuple[np.ndarray, dict]:
    """Δv (eV) on the correction's grid from g (the model's) and g_target on the bins ``r``
    (NaN where there is no target), and a report. See the module docstring for the steps."""
    r, g, gt = (np.asarray(x, float) for x in (r, g, g_target))
    rc = correction.cutoff
    inside = r < rc
    r_in, g_in, gt_in = r[inside], g[inside], gt[inside]
    has = np.isfinite(gt_in) & (g_in > s.g_floor)
    both = has & (gt_in > s.g_floor)
    if both.sum() < 2:
        raise ValueError(f"IBI: fewer than two bins below the cutoff {rc:g} Å where both g's exceed "
                         f"{s.g_floor:g}; the target and the model share no structure to invert")
    intrusion = has & ~both  # the model's g where the target's is below the floor
    valid = both | intrusion
    raw = kT * np.log(g_in[valid] / np.where(intrusion, s.g_floor, gt_in)[valid])
    # the nearest valid value into the core and to the cutoff, linear across gaps
    du = np.interp(r_in, r_in[valid], raw)
    du = smooth_triangular(du, s.smoothing_passes)
    # zero at the cutoff: shift by the last bin's value, the cutoff itself is 0 by construction
    du = du - du[-1]
    grid = correction.grid
    on_grid = np.interp(grid, np.r_[r_in, rc], np.r_[du, 0.0])  # constant below the first bin
    alpha = s.alpha * (1.0 - grid / rc) if s.alpha_ramp else np.full_like(grid, s.alpha)
    step = np.clip(alpha * on_grid, -s.max_update_kT * kT, s.max_update_kT * kT)
    # Inward of the target's first pairs the step never falls: a step that fell inward of a
    # close-contact bump (the bump raised, the core carried at the bump's inner edge) would pull
    # the pairs it is meant to push out deeper into the network's hole (seen in the demo: pairs at
    # 1.7 Å that grew over the iterations). A correction that starts at zero then stays
    # non-increasing in r there.
    target_from = r_in[np.isfinite(gt_in) & (gt_in > s.g_floor)][0]
    core = grid < target_from
    step[core] = np.maximum.accumulate(step[core][::-1])[::-1]
    ramp = 0.0
    if s.pressure_correction and pressure_gpa is not None:
        ramp = pressure_ramp_amplitude(pressure_gpa, s, kT)
        step = step + ramp * np.clip(1.0 - grid / rc, 0.0, None)
    step[grid >= rc] = 0.0
    capped = float(np.mean(np.abs(alpha * on_grid) > s.max_update_kT * kT))
    return step, {"update_max_meV": 1e3 * float(np.max(np.abs(step))), "update_capped_fraction": capped,
                  "valid_from_A": float(r_in[valid][0]), "intrusion_bins": int(intrusion.sum()),
                  "pressure_ramp_meV": 1e3 * ramp}


def rdf_error(r, g, g_target, r_range: tuple[float, float]) -> float:
    """RMS of g − g_target over the bins within ``r_range`` (Å) that have a target."""
    use = _bins_used(r, g_target, r_range)
    return float(np.sqrt(np.mean((np.asarray(g, float)[use] - np.asarray(g_target, float)[use]) ** 2)))


def rdf_noise(r, g_err, g_target, g_target_err, r_range: tuple[float, float]) -> float:
    """The RDF error that sampling noise alone gives (same bins as ``rdf_error``): the RMS over
    bins of the combined standard error √(σ_g² + σ_target²). When g and the target agree, the
    expected square of ``rdf_error`` is this squared; below it, an error says nothing more."""
    use = _bins_used(r, g_target, r_range)
    var = np.asarray(g_err, float) ** 2 + np.asarray(g_target_err, float) ** 2
    return float(np.sqrt(np.mean(var[use])))


def _bins_used(r, g_target, r_range):
    r = np.asarray(r, float)
    use = (r >= r_range[0]) & (r <= r_range[1]) & np.isfinite(np.asarray(g_target, float))
    if not use.any():
        raise ValueError(f"IBI: no RDF bin with a target within {r_range} Å")
    return use


# --- the state point and its sampling --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IBISettings:
    temperature: float  # K
    density_per_a3: float  # atoms per Å³ (NVT)
    supercell: tuple = (3, 3, 3)  # bcc repetitions of the melted crystal
    melt_temperature: float = 2500.0  # K, the crystal is melted at max(this, T) first
    melt_ps: float = 0.4
    timestep_fs: float = 2.0
    friction_per_ps: float = 4.0  # Langevin
    equilibration_ps: float = 0.2  # discarded at the start of each iteration's trajectory
    production_ps: float = 1.0
    record_every_fs: float = 20.0
    rdf_r_max: float = 6.0  # Å, capped at half the box
    rdf_bin_A: float = 0.05
    r_range: tuple = (0.0, 6.0)  # Å: bins that enter the update and the error (within the target's range)
    iterations: int = 8
    tolerance: float = 0.0  # stop once the RDF error (RMS of g) is at or below this
    n_blocks: int = 5  # consecutive blocks of an iteration's frames for the standard error of g
    average_last: int = 6  # keep the mean of the chain's last tables (0: the lowest-error iteration's)
    seed: int = 0
    update: UpdateSettings = UpdateSettings()

    @property
    def dynamics(self) -> Dynamics:
        return Dynamics(timestep_fs=self.timestep_fs, thermostat_kind="langevin",
                        friction_per_ps=self.friction_per_ps, seed=self.seed)

    def rdf_bins(self, box) -> tuple[float, int, np.ndarray]:
        """(r_max, number of bins, bin centres) of g(r) in ``box``: to ``rdf_r_max`` or half the box."""
        half = 0.5 * float(plane_spacings(box).min())
        r_max = min(self.rdf_r_max, half * (1 - 1e-6))
        n_bins = max(10, int(round(r_max / self.rdf_bin_A)))
        return r_max, n_bins, (np.arange(n_bins) + 0.5) * (r_max / n_bins)

    def liquid_box(self, symbol: str):
        """bcc positions and box (Å) scaled to the target density."""
        n_cells = int(np.prod(self.supercell))
        a = (2.0 / self.density_per_a3) ** (1.0 / 3.0)  # two atoms per cubic bcc cell
        atoms = crystal(symbol, "bcc", a, supercell=self.supercell)
        assert len(atoms) == 2 * n_cells
        return np.asarray(atoms.positions), np.asarray(atoms.cell[:]), atoms.numbers


def target_on_bins(target: RDFTarget, r_bins, r_range) -> tuple[np.ndarray, tuple[float, float]]:
    """g_target on the bins, NaN outside the table and ``r_range`` (no target there), and the
    range actually used (Å)."""
    lo, hi = max(r_range[0], target.r[0]), min(r_range[1], target.r[-1], float(r_bins[-1]))
    if not lo < hi:
        raise ValueError(f"the range used, {tuple(r_range)} Å, does not overlap the target's "
                         f"{target.r[0]:g}-{target.r[-1]:g} Å ({target.source}) below {r_bins[-1]:.2f} Å")
    g = target.on(r_bins)
    g[(r_bins < lo) | (r_bins > hi)] = np.nan
    return g, (lo, hi)


def melt(sim: Simulator, positions, box, params, s: IBISettings, steps: int,
         progress: Callable[[str], None] = log.info):
    """The trajectory (no frames) that melts ``positions``, the bcc crystal at the target density,
    in NVT at max(melt_temperature, T) for ``steps`` steps of ``sim`` in the same box."""
    t = max(s.melt_temperature, s.temperature)
    traj = sim.run(positions, box, params=params, progress=progress, temperature=t, steps=steps, record_every=0,
                   seed=int(np.random.default_rng([s.seed, 0, 0]).integers(2**31)))
    progress(f"melted the {len(positions)}-atom bcc crystal at {t:g} K for {s.melt_ps:g} ps in its "
             f"{box[0, 0]:.3f} Å box ({s.density_per_a3:.5f} atoms/Å³)")
    return traj


def melt_liquid(energy: Callable, graph_cutoff: float, species: tuple, s: IBISettings, symbol: str, params,
                progress: Callable[[str], None] = log.info):
    """The liquid at the state point of ``s`` melted as the IBI's first iteration does (``melt``),
    on a simulator of its own for ``energy(params, positions, box, species_idx, graph)``.
    Returns (positions, momenta, box, atomic numbers)."""
    positions, box, numbers = s.liquid_box(symbol)
    masses = np.full(len(numbers), atomic_masses[atomic_numbers[symbol]])
    spc = jnp.asarray(species_index(numbers, species))
    n = max(s.dynamics.steps(s.melt_ps) // 50, 1) * 50  # whole chunks
    md = s.dynamics.md(max(s.melt_temperature, s.temperature), steps=n, record_every=0, chunk=50)
    sim = Simulator(lambda p, r, b, g: energy(p, r, b, spc, g), masses, md, NeighborGraph(graph_cutoff, skin=1.0))
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    traj = melt(sim, jnp.asarray(positions, dtype), box, params, s, n, progress)
    return np.asarray(traj.final["positions"]), np.asarray(traj.final["momenta"]), box, numbers


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["positions", "momenta", "started", "graph_capacity", "frame_capacity",
                                "rdf", "tables"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class IBIState:
    """Where the next trajectory starts, the graph capacities (they only grow, so a resumed run
    compiles the same shapes), per iteration the measured g(r), and the chain of tables: row k the
    table iteration k + 1 sampled with, the row after the last iteration's the table its update
    made (the figure, the CSVs of g and v per iteration and ``kept_correction`` read them)."""

    positions: jnp.ndarray  # (N, 3)
    momenta: jnp.ndarray  # (N, 3)
    started: np.ndarray  # () bool: melted and running
    graph_capacity: np.ndarray  # () int
    frame_capacity: np.ndarray  # () int
    rdf: np.ndarray  # (iterations, bins)
    tables: np.ndarray  # (iterations + 1, n_points)


class IBITrainer:
    """The IBI iterations of one corrected potential at one state point.

    ``energy(params, positions, box, species_idx, graph)`` is a potential whose ``params["pair"]``
    is the table of ``correction`` (``model.energy.energy_fn`` of a corrected model, or any pair
    potential plus ``model.pair_correction.correction_energy``); ``graph_cutoff`` sizes its graphs.
    """

    def __init__(self, energy: Callable, graph_cutoff: float, species: tuple, correction: PairCorrectionSettings,
                 target: RDFTarget, s: IBISettings, symbol: str, progress: Callable[[str], None] = log.info):
        if correction.cutoff > graph_cutoff:
            raise ValueError(f"IBI: correction cutoff {correction.cutoff:g} Å beyond the graph's {graph_cutoff:g} Å")
        self.target, self.s, self.progress = target, s, progress
        self.correction, self.graph_cutoff = correction, graph_cutoff
        self.positions0, self.box, numbers = s.liquid_box(symbol)
        self.r_max, self.n_bins, self.r_bins = s.rdf_bins(self.box)
        if self.r_max < correction.cutoff:
            raise ValueError(f"IBI: the RDF reaches {self.r_max:.2f} Å (half the {len(numbers)}-atom box), "
                             f"less than the correction's cutoff {correction.cutoff:g} Å: "
                             "use a larger supercell (ibi.supercell) or a shorter correction")
        self.g_target, self.r_range = target_on_bins(target, self.r_bins, s.r_range)
        self.g_target_err = target.error_on(self.r_bins)
        self.kT = units.kT(s.temperature)
        self.masses = np.full(len(numbers), atomic_masses[atomic_numbers[symbol]])
        spc = jnp.asarray(species_index(numbers, species))

        def md_energy(params, r, box, graph):
            return energy(params, r, box, spc, graph)

        dyn = s.dynamics
        steps = dyn.steps(s.equilibration_ps + s.production_ps)
        self.every = dyn.steps(s.record_every_fs * units.FS)
        self.skip = int(round(s.equilibration_ps / (self.every * dyn.timestep_ps)))
        md = dyn.md(s.temperature, steps=steps - steps % self.every, record_every=self.every,
                    chunk=max(self.every, 500 - 500 % self.every))
        self.sim = Simulator(md_energy, self.masses, md, NeighborGraph(graph_cutoff, skin=1.0))
        self.melt_steps = dyn.steps(s.melt_ps) // self.every * self.every or self.every
        self.efv = Program(energy_forces_virial(lambda r, b, params, graph: md_energy(params, r, b, graph)))

    def init(self, dtype) -> IBIState:
        n = self.positions0.shape
        return IBIState(jnp.asarray(self.positions0, dtype), jnp.zeros(n, dtype), np.asarray(False),
                        np.asarray(0), np.asarray(0), np.zeros((self.s.iterations, self.n_bins)),
                        np.zeros((self.s.iterations + 1, self.correction.n_points)))

    def _seed(self, epoch: int, part: int) -> int:
        return int(np.random.default_rng([self.s.seed, epoch, part]).integers(2**31))

    def melt(self, params, state: IBIState) -> IBIState:
        """The crystal at the target density melted (``melt``) on this trainer's simulator."""
        traj = melt(self.sim, state.positions, self.box, params, self.s, self.melt_steps, self.progress)
        dt = state.positions.dtype
        return dataclasses.replace(state, positions=jnp.asarray(traj.final["positions"], dt),
                                   momenta=jnp.asarray(traj.final["momenta"], dt), started=np.asarray(True),
                                   graph_capacity=np.asarray(traj.stats["capacity"]))

    def sample(self, params, state: IBIState, epoch: int, part: int = 1):
        """One NVT trajectory: (g on the bins and its standard error, pressure GPa, mean T, new
        state, frames kept, MD steps/s). ``part`` 1 is an iteration's; others seed other streams."""
        g, p, t_mean, state, rate = self._trajectory(params, state, epoch, part)
        return np.mean(g, axis=0), block_errors(g, self.s.n_blocks), p, t_mean, state, len(g), rate

    def _trajectory(self, params, state: IBIState, epoch: int, part: int):
        """(g per frame kept, pressure GPa, mean T, new state, MD steps/s) of one NVT trajectory."""
        traj = self.sim.run(state.positions, self.box, params=params, momenta=state.momenta,
                            progress=self.progress, seed=self._seed(epoch + 1, part), temperature=self.s.temperature,
                            capacity=int(state.graph_capacity))
        pos, mom = traj.positions[self.skip:], traj.momenta[self.skip:]
        _, g = rdf_frames(pos, self.box, self.r_max, self.n_bins)
        graphs = frame_graphs(pos, self.box, self.graph_cutoff, extra=6,
                              min_capacity=int(state.frame_capacity))
        dt = state.positions.dtype
        box = jnp.asarray(self.box, dt)
        p = []
        for k in range(len(pos)):
            graph = jax.tree_util.tree_map(lambda x: x[k], graphs)
            _, _, w = self.efv(jnp.asarray(pos[k], dt), box, params=params, graph=graph)
            kin = np.einsum("ia,ib->ab", mom[k] / units.mass_to_internal(self.masses)[:, None], mom[k])
            p.append(np.trace(kin + np.asarray(w, float)) / (3 * abs(np.linalg.det(self.box))))
        new = dataclasses.replace(state, positions=jnp.asarray(traj.final["positions"], dt),
                                  momenta=jnp.asarray(traj.final["momenta"], dt),
                                  graph_capacity=np.asarray(traj.stats["capacity"]),
                                  frame_capacity=np.asarray(graphs.neighbors.shape[-1]))
        steps_per_s = traj.stats["steps"] / traj.stats["wall_s"]
        pressure = float(units.ev_per_a3_to_gpa(np.mean(p)))
        return g, pressure, float(np.mean(traj.temperatures)), new, steps_per_s

    def rdf_errors(self, g, g_err) -> dict:
        """The RDF error of ``g`` against the target, the error noise alone would give, and the
        part noise does not explain (E[error²] = systematic² + noise²)."""
        err = rdf_error(self.r_bins, g, self.g_target, self.r_range)
        noise = rdf_noise(self.r_bins, g_err, self.g_target, self.g_target_err, self.r_range)
        excess = float(np.sqrt(max(err**2 - noise**2, 0.0))) if np.isfinite(noise) else float("nan")
        return dict(rdf_rmse=err, rdf_noise=noise, rdf_excess=excess)

    def validate(self, params, liquid: IBIState, runs: int, part: int):
        """The RDF error of ``params`` from ``runs`` consecutive trajectories (each as long as an
        iteration's, so the compiled simulator serves) after one more that is discarded, starting
        from ``liquid``: the before/after measurement the iterations cannot give (each of theirs is
        one short sample, and a kept mean of tables has none). Every model should
        start from the same liquid: the job passes the start model's melt, where the first
        iteration began (a potential with a deeper well may not melt the crystal in ``melt_ps``,
        and the last iteration's liquid holds that iteration's history). Returns (report, g, its
        standard error)."""
        state = liquid
        gs, ps, ts = [], [], []
        for k in range(runs + 1):
            g, p, t_mean, state, _ = self._trajectory(params, state, k, part)
            if k:  # the first lets the liquid adapt to ``params``
                gs.append(g), ps.append(p), ts.append(t_mean)
        # the trajectories continue one another: their frames are one time series, whose blocks
        # are ``runs`` times longer than one trajectory's (blocks of one short trajectory are too
        # short for the liquid's correlation time and understate the error)
        frames = np.concatenate(gs)
        g, g_err = np.mean(frames, axis=0), block_errors(frames, self.s.n_blocks)
        report = dict(**self.rdf_errors(g, g_err), pressure_gpa=float(np.mean(ps)), T_mean_K=float(np.mean(ts)), frames=len(frames),
                      production_ps=runs * self.s.production_ps)
        return report, g, g_err

    def step(self) -> loop.Step:
        """One IBI iteration: sample with the current correction, measure, update the table."""
        s = self.s

        def apply(params, state: IBIState, epoch: int):
            if not bool(state.started):
                state = self.melt(params, state)
            g, g_err, p, t_mean, state, n_frames, rate = self.sample(params, state, epoch)
            errors = self.rdf_errors(g, g_err)
            du, info = ibi_update(self.r_bins, g, self.g_target, self.kT, self.correction, s.update, p)
            u_now = np.asarray(params["pair"]["u"], float)
            rdf_hist, tables = np.array(state.rdf), np.array(state.tables)
            rdf_hist[epoch], tables[epoch], tables[epoch + 1] = g, u_now, u_now + du
            state = dataclasses.replace(state, rdf=rdf_hist, tables=tables)
            new = {**params, "pair": {"u": jnp.asarray(u_now + du, params["pair"]["u"].dtype)}}
            peak = int(np.argmax(g))
            report = dict(**errors, pressure_gpa=p, T_mean_K=t_mean,
                          density_g_cm3=s.density_per_a3 * float(np.mean(self.masses)) * units.AMU_PER_A3_TO_G_CM3,
                          rdf_peak_g=float(g[peak]), rdf_peak_r_A=float(self.r_bins[peak]),
                          correction_min_meV=1e3 * float(np.min(u_now - u_now[-1])),
                          correction_max_meV=1e3 * float(np.max(u_now - u_now[-1])),
                          frames=n_frames, md_steps_per_s=rate, **info)
            self.progress(f"iteration {epoch + 1}: RDF error {errors['rdf_rmse']:.4f} "
                          f"(noise {errors['rdf_noise']:.4f})  P {p:+.3f} GPa  "
                          f"T {t_mean:.0f} K  "
                          f"peak g {report['rdf_peak_g']:.2f} at {report['rdf_peak_r_A']:.2f} Å  "
                          f"max |Δv| {info['update_max_meV']:.1f} meV")
            return new, state, report

        return loop.Step("ibi", "ibi", apply)


def selection() -> loop.Selection:
    """The correction an iteration sampled with, scored by the RDF error measured with it."""

    def select(epoch, start, end, row, rows) -> loop.Candidate:
        return loop.Candidate(start, epoch, row["rdf_rmse"], {})

    return select


def keeps_mean(s: IBISettings, rows: list[dict]) -> bool:
    """Whether ``kept_correction`` keeps a mean of tables after the iterations ``rows`` (else the
    table of one iteration: with ``average_last`` 0, or a run that stopped at the tolerance)."""
    return s.average_last > 0 and not (s.tolerance > 0 and rows[-1]["rdf_rmse"] <= s.tolerance)


def kept_correction(params, res: loop.FitResult, s: IBISettings) -> tuple[dict, str]:
    """(the corrected parameters to keep, what they are) after ``fit_ibi`` from ``params``.

    With ``s.average_last`` k > 0: the mean of the last k tables of the chain v_1 (the start) …
    v_{n+1} (after the n-th, last update), which holds every sample's information. Near the fixed
    point v* the iteration is v_{m+1} − v* ≈ (1 − α)(v_m − v*) + α·ξ_m, with ξ_m the sampling
    noise of one iteration's g (variance σ²): one table is an exponential average of about
    (2 − α)/α samples (variance σ² α/(2 − α)), the mean of k tables one of about k samples
    (σ²/k once k ≫ (2 − α)/α), and a table that a lucky sample scored low is not preferred.
    The first tables carry the start's error, decaying as (1 − α)^m: k should leave them out.
    Without a sample of its own the mean is measured by the validation. With k = 0, or when the
    run stopped at the tolerance: the loop's selection, the measured table with the lowest error
    (the one that met the tolerance)."""
    n = len(res.rows)
    if not keeps_mean(s, res.rows):
        return res.best_params, f"the table of iteration {res.best_epoch + 1}, whose sample had the lowest error"
    tables = np.asarray(res.states["ibi"].tables)[: n + 1]
    k = min(s.average_last, n + 1)
    u = jnp.asarray(tables[-k:].mean(axis=0), params["pair"]["u"].dtype)
    first = n + 2 - k  # 1-based position in the chain of the first table averaged
    return {**res.best_params, "pair": {"u": u}}, (f"the mean of the last {k} tables of the chain (tables "
                                                    f"{first}-{n + 1}, the last made by the last update)")


def model_trainer(settings: ModelSettings, target: RDFTarget, s: IBISettings, symbol: str,
                  progress: Callable[[str], None] = log.info) -> IBITrainer:
    """The trainer of a corrected model (``model.params.with_pair_correction``)."""
    if settings.pair_correction is None:
        raise ValueError("IBI needs a model with a pair correction (model.params.with_pair_correction)")
    return IBITrainer(energy_fn(settings), settings.dimenet.cutoff, settings.species, settings.pair_correction,
                      target, s, symbol, progress)


def fit_ibi(trainer: IBITrainer, params, checkpoint_path, log_csv=None, inputs: dict | None = None,
            progress: Callable[[str], None] = log.info,
            max_epochs_this_run: int | None = None) -> loop.FitResult:
    """IBI from ``params`` (with the trainer's table in ``params["pair"]``). The result's
    ``best_params`` hold the table of the iteration with the lowest error, its ``states["ibi"]``
    g(r) of every iteration run and the chain of tables (the one after the last update
    included); ``kept_correction`` gives the corrected potential to keep."""
    s, target = trainer.s, trainer.target
    dtype = params["pair"]["u"].dtype
    record = {"ibi": dataclasses.asdict(s), "correction": dataclasses.asdict(trainer.correction),
              "target": {"r": target.r.tolist(), "g": target.g.tolist()}, **(inputs or {})}
    step = trainer.step()
    # no patience: IBI's error is noisy and not monotone, it runs its iterations or to tolerance
    return loop.fit(params, {"ibi": trainer.init(dtype)}, lambda epoch: [step], selection(),
                    loop.LoopSettings(s.iterations, s.iterations + 1), checkpoint_path, record, log_csv=log_csv,
                    describe=lambda row: (f"RDF error {row['rdf_rmse']:.4f} (noise {row['rdf_noise']:.4f})  "
                                          f"P {row['pressure_gpa']:+.3f} GPa"),
                    progress=progress, max_epochs_this_run=max_epochs_this_run,
                    converged=lambda row: row["rdf_rmse"] <= s.tolerance)


def correction_curve(settings: ModelSettings, params, r) -> np.ndarray:
    """v(r) (eV) of a corrected model's table on ``r`` (Å)."""
    return np.asarray(pair_correction(settings.pair_correction, params["pair"], jnp.asarray(r)))

