"""Configurations for a reference dataset, and their labels at any level of theory.

Mirrors the composition of a DFT training set for a metal (as in the fused-training paper):
per crystal structure, relaxed cells of several sizes, homogeneously strained cells (their
virial is used), randomly perturbed cells, and snapshots of short Langevin MD at several
temperatures including the melt. The configurations are generated once with one level of theory
and can be labelled at any other, so several fidelities share the same structures.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses, atomic_numbers
from jax_md import space as jmd_space

from .. import units
from ..data.dataset import Dataset, from_configs
from ..md.ensembles import integrator
from ..md.settings import Dynamics
from ..quantity import strained
from ..space import wrap_positions
from ..structures import LatticeParameters, crystal, relax_lattice
from .eam import ReferenceCalculator

log = logging.getLogger(__name__)

KINDS = ("equilibrium", "strained", "perturbed", "md")


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
    structure: str  # hcp | bcc | fcc
    a: float  # initial guess for the relaxation, Å
    covera: float | None = None
    supercells: tuple[tuple[int, int, int], ...] = ((2, 2, 2),)


@dataclasses.dataclass(frozen=True)
class MDRun:
    structure: str
    supercell: tuple[int, int, int]
    temperature: float  # K
    label: str | None = None  # config_type prefix; defaults to the structure (e.g. "liquid")
    # volume per atom relative to the relaxed crystal: a melt near its own zero-pressure density
    # (about 1.1-1.2 for a metal) rather than compressed into the crystal's box
    volume_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    element: str
    phases: dict[str, PhaseSpec]
    strained_per_phase: int = 16
    max_strain: float = 0.04
    perturbed_per_phase: int = 16
    perturb_sigma: tuple[float, float] = (0.02, 0.12)  # Å, uniform range of Gaussian widths
    perturb_strain: float = 0.02
    md_runs: tuple[MDRun, ...] = ()
    timestep_fs: float = 1.0
    friction_per_ps: float = 5.0
    equilibration_steps: int = 500
    snapshots_per_run: int = 10
    snapshot_interval: int = 50
    seed: int = 0

    @property
    def dynamics(self) -> Dynamics:
        """Langevin dynamics of the MD runs (``md.settings``; the config ``md`` section's
        ``timestep_fs`` and ``friction_per_ps``)."""
        return Dynamics(timestep_fs=self.timestep_fs, thermostat_kind="langevin",
                        friction_per_ps=self.friction_per_ps)

    @staticmethod
    def from_config(cfg: dict) -> "SamplingSettings":
        s = cfg["sampling"]
        phases = {name: PhaseSpec(structure=name, a=p["a"], covera=p.get("covera"),
                                  supercells=tuple(tuple(c) for c in p["supercells"]))
                  for name, p in s["phases"].items()}
        md = s["md"]
        runs = tuple(MDRun(structure=r["structure"], supercell=tuple(r["supercell"]),
                           temperature=float(t), label=r.get("label"),
                           volume_scale=float(r.get("volume_scale", 1.0)))
                     for r in md["runs"] for t in r["temperatures"])
        return SamplingSettings(
            element=cfg["element"], phases=phases,
            strained_per_phase=s["strained"]["per_phase"], max_strain=s["strained"]["max_strain"],
            perturbed_per_phase=s["perturbed"]["per_phase"],
            perturb_sigma=tuple(s["perturbed"]["sigma"]),
            perturb_strain=s["perturbed"]["max_strain"],
            md_runs=runs, timestep_fs=md["timestep_fs"], friction_per_ps=md["friction_per_ps"],
            equilibration_steps=md["equilibration_steps"], snapshots_per_run=md["snapshots"],
            snapshot_interval=md["interval_steps"], seed=s["seed"])


def _random_strain(rng, amplitude):
    e = rng.uniform(-amplitude, amplitude, size=(3, 3))
    return 0.5 * (e + e.T)


def sample_configurations(settings: SamplingSettings, calc: ReferenceCalculator,
                          progress: Callable[[str], None] = log.info) -> Dataset:
    """Generate the unlabelled configurations (labels masked out); see the module docstring."""
    rng = np.random.default_rng(settings.seed)
    z = atomic_numbers[settings.element]
    configs: list[dict] = []
    lattice: dict[str, LatticeParameters] = {}

    def add(kind, label, positions, box, note):
        configs.append(dict(positions=wrap_positions(positions, box), box=box,
                            species=np.full(len(positions), z), config_type=f"{label}/{kind}",
                            source=f"reference-sampling:{note}"))

    for name, ph in settings.phases.items():
        lp = relax_lattice(calc.potential_energy, settings.element, ph.structure, ph.a, ph.covera)
        lattice[name] = lp
        progress(f"{name}: relaxed a = {lp.a:.5f} Å" + (f", c/a = {lp.covera:.5f}" if lp.covera else "")
                 + f", E = {lp.energy_per_atom:.5f} eV/atom")
        cells = [crystal(settings.element, ph.structure, lp.a, lp.covera, sc) for sc in ph.supercells]
        for sc, at in zip(ph.supercells, cells):
            add("equilibrium", name, at.positions, np.asarray(at.cell), f"{name} {sc}")
        for k in range(settings.strained_per_phase):
            j = rng.integers(len(cells))
            eps = _random_strain(rng, settings.max_strain)
            pos, box = strained(cells[j].positions, np.asarray(cells[j].cell), eps)
            add("strained", name, pos, box, f"{name} {ph.supercells[j]} strain {k}")
        for k in range(settings.perturbed_per_phase):
            j = rng.integers(len(cells))
            eps = _random_strain(rng, settings.perturb_strain)
            sigma = rng.uniform(*settings.perturb_sigma)
            pos, box = strained(cells[j].positions, np.asarray(cells[j].cell), eps)
            pos = pos + rng.normal(scale=sigma, size=pos.shape)
            add("perturbed", name, pos, box, f"{name} {ph.supercells[j]} sigma {sigma:.3f}")

    for run in settings.md_runs:
        if run.structure not in lattice:
            raise ValueError(f"MD run on {run.structure!r}, which is not among the sampled phases "
                             f"{sorted(lattice)}")
        lp = lattice[run.structure]
        at = crystal(settings.element, settings.phases[run.structure].structure,
                     lp.a * run.volume_scale ** (1 / 3), lp.covera, run.supercell)
        t0 = time.time()
        frames = _langevin_snapshots(calc, at.positions, np.asarray(at.cell),
                                     atomic_masses[z], run.temperature, settings,
                                     seed=int(rng.integers(2**31)))
        label = run.label or run.structure
        volume = "" if run.volume_scale == 1.0 else f" V/V0 {run.volume_scale:g}"
        for k, pos in enumerate(frames):
            add("md", label, pos, np.asarray(at.cell), f"{run.structure} {run.supercell}{volume} "
                                                       f"{run.temperature:g} K frame {k}")
        progress(f"MD {label} {run.structure}{list(run.supercell)}{volume} at {run.temperature:g} K: "
                 f"{len(frames)} snapshots in {time.time() - t0:.1f} s")

    # Seeded random order, so that a file-order split (the paper's default) sees every kind.
    configs = [configs[i] for i in rng.permutation(len(configs))]
    meta = {"generator": "reference-sampling", "settings": dataclasses.asdict(settings),
            "relaxed_lattice": {k: dataclasses.asdict(v) for k, v in lattice.items()}}
    return from_configs(configs, metadata=meta)


def _langevin_snapshots(calc: ReferenceCalculator, positions, box, mass_u, temperature,
                        s: SamplingSettings, seed: int) -> list[np.ndarray]:
    """Short NVT Langevin run in a fixed box (jax-md's ``nvt_langevin`` through
    ``md.ensembles.integrator``, without neighbour lists), returning wrapped snapshots."""
    box_j = jnp.asarray(box)
    shifts = calc.shifts(box)
    energy = lambda r: calc.energy(r, box_j, shifts)  # noqa: E731 — wraps internally
    _, shift_fn = jmd_space.free()
    dyn = s.dynamics
    init, step = integrator(dyn.thermostat(temperature), energy, shift_fn, dyn.timestep_ps)
    state = init(jax.random.PRNGKey(seed), jnp.asarray(positions),
                 mass=units.mass_to_internal(mass_u))

    @jax.jit
    def advance(state, n):
        return jax.lax.fori_loop(0, n, lambda _, st: step(st), state)

    state = advance(state, s.equilibration_steps)
    frames = []
    for _ in range(s.snapshots_per_run):
        state = advance(state, s.snapshot_interval)
        pos = np.asarray(state.position)
        if not np.all(np.isfinite(pos)):
            raise FloatingPointError(f"reference MD at {temperature} K blew up (non-finite positions)")
        frames.append(wrap_positions(pos, box))
    return frames


def label(configs: Dataset, calc: ReferenceCalculator, fidelity: str,
          virial_kinds: Sequence[str] = ("equilibrium", "strained", "perturbed"),
          progress: Callable[[str], None] = log.info) -> Dataset:
    """Energies, forces and virials of every configuration at the level of ``calc``.

    The reference potential gives exact virials everywhere; only configuration kinds in
    ``virial_kinds`` keep theirs, mirroring a DFT set whose MD snapshots have no usable stress.
    """
    n = len(configs)
    energy = np.zeros(n)
    forces = np.zeros_like(configs.positions)
    virial = np.zeros((n, 3, 3))
    t0 = time.time()
    for i in range(n):
        c = configs.config(i)
        energy[i], forces[configs.atoms_slice(i)], virial[i] = calc(c["positions"], c["box"])
        if (i + 1) % 100 == 0 or i + 1 == n:
            progress(f"labelled {i + 1}/{n} configurations ({time.time() - t0:.1f} s)")
    kinds = np.array([t.split("/")[-1] for t in configs.config_type])
    return configs.with_labels(energy, forces, virial, fidelity,
                               virial_mask=np.isin(kinds, list(virial_kinds)),
                               metadata={"fidelity": fidelity,
                                         "labels": f"reference potential {fidelity}",
                                         "virial_kinds": list(virial_kinds)})
