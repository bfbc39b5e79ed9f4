"""Chunked, jitted MD for any energy function, with recorded frames, progress and restarts.

A ``Simulator`` (``run`` for one-off runs) advances a system in chunks of steps scanned inside
one jitted call and records a frame
(positions, momenta, box, potential energy, temperature) every ``record_every`` steps. After
every chunk the neighbour value is checked; if the list or the graph overflowed (or a host
table went stale) the chunk is discarded, the list is allocated again from the state before it
with a larger graph capacity and the chunk is recomputed. The capacity a run starts from is an
argument of the run and the one it ended with is in its stats: the caller carries it to the next
run. Non-finite positions or a runaway temperature stop the run with an
error. With a checkpoint path the run saves its state and frames (atomically, at most every
``checkpoint_s`` seconds) and a rerun continues from there.

The energy function is ``energy(params, positions, box, graph) -> U`` (eV) for a ``Simulator``
and ``energy(positions, box, graph)`` for ``run``: the one energy used everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import simulate as jmd_simulate
from jax_md import space as jmd_space

from .. import units
from ..compilation import Program
from ..io import save_npz
from ..observables.stress import pressure_tensor
from ..quantity import energy_forces_virial
from .ensembles import Barostat, Thermostat, barostat_step, degrees_of_freedom, integrator, virial_step
from .neighbors import NeighborGraph

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MDSettings:
    thermostat: Thermostat = Thermostat()
    barostat: Barostat | None = None  # None: fixed box
    timestep_fs: float = 0.5
    steps: int = 1000
    record_every: int = 10  # steps between recorded frames (0: record nothing)
    chunk: int = 200  # steps per jitted call (rounded up to a multiple of record_every)
    seed: int = 0
    max_temperature_factor: float = 5.0  # runaway above this multiple of the target
    checkpoint_s: float = 120.0  # wall seconds between checkpoints

    @property
    def ensemble(self) -> str:
        if self.barostat is not None:
            return "NPT"
        return "NVE" if self.thermostat.kind == "none" else "NVT"


@dataclasses.dataclass
class Trajectory:
    """Recorded frames (F leading) and the final state of a run."""

    positions: np.ndarray  # (F, N, 3) unwrapped, Å
    momenta: np.ndarray  # (F, N, 3) eV ps/Å
    boxes: np.ndarray  # (F, 3, 3)
    energies: np.ndarray  # (F,) potential energy, eV
    temperatures: np.ndarray  # (F,) kinetic temperature, K
    times: np.ndarray  # (F,) ps since the start of the run
    masses: np.ndarray  # (N,) eV ps²/Å²
    final: dict  # positions, momenta, box of the last step
    stats: dict

    def velocities(self):
        return self.momenta / self.masses[None, :, None]


def lattice_site_momenta(masses_u, temperature: float, seed: int) -> np.ndarray:
    """Momenta (N, 3) for a crystal that starts at its lattice sites: Maxwell–Boltzmann at twice
    ``temperature``, without centre-of-mass motion. At the sites the potential energy is at its
    minimum; in a harmonic solid half of the kinetic energy flows into it within a vibration
    period, so the crystal is at ``temperature`` at once. From momenta at ``temperature`` it would
    sit near half of it, and a Langevin thermostat of friction γ closes the gap only as
    exp(−γt): after 0.2 ps at γ = 4/ps a 623 K run was at 514 K."""
    m = units.mass_to_internal(np.asarray(masses_u, float))[:, None]
    p = np.random.default_rng(seed).normal(size=(len(m), 3)) * np.sqrt(m * units.kT(2.0 * temperature))
    return p - m * p.sum(0) / m.sum()


def kinetic_temperature(momenta, masses, dof: int):
    """T = 2K/(dof k_B) (K)."""
    m = jnp.reshape(masses, (-1, 1))
    return jnp.sum(momenta**2 / m) / (dof * units.KB)


def _state_arrays(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


def _restore(template, arrays):
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(leaves) != len(arrays) or any(np.shape(a) != np.shape(b) for a, b in zip(leaves, arrays)):
        raise ValueError("checkpoint does not match this system or ensemble")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a, b.dtype) for a, b in zip(arrays, leaves)])


def _chunk_key(nbrs) -> tuple:
    """What a compiled chunk specialises on: the static shapes of the neighbour value."""
    return nbrs.capacity, nbrs.kind, nbrs.width, nbrs.edge_capacity, nbrs.groups


class Simulator:
    """Compiled MD for one energy function, system size and ensemble; reusable across runs.

    ``energy(params, positions, box, graph) -> U``: ``params`` are an argument of the compiled
    step (not baked in), so a trainer that changes them between runs does not recompile.
    Compiled chunks are cached by (graph capacity, list kind, list width, edge capacity, row
    groups) of the neighbour value: runs of any length, recording interval, temperature or
    pressure share one.
    """

    def __init__(self, energy: Callable, masses, s: MDSettings, ng: NeighborGraph):
        # NPT: the description of this simulator's lists also checks cell deformation
        self.s = s
        self.ng = ng = dataclasses.replace(ng, variable_box=True) if s.barostat is not None else ng
        self.masses_u = np.asarray(masses, float)
        self.n = len(self.masses_u)
        self.dof = degrees_of_freedom(s.thermostat, self.n)
        self.record = max(0, s.record_every)
        if s.steps % (self.record or 1):
            raise ValueError(f"steps {s.steps} is not a multiple of record_every {self.record}")
        # One compiled chunk serves every run: a call advances a traced number of frames (at most
        # ``frames``) of a traced number of steps each, so runs of other lengths, recording
        # intervals, temperatures or pressures do not recompile.
        self.per_call = max(1, s.chunk)
        # frame slots per call (a simulator built without recording runs one frame per call)
        self.frames = max(1, self.per_call // self.record) if self.record else 1
        _, shift = jmd_space.free()  # unwrapped positions; periodicity lives in the neighbour list

        def u(r, neighbor, box, params, **kw):
            return energy(params, r, box, ng.graph(r, box, neighbor))

        self.u = u
        self.efv = Program(energy_forces_virial(lambda r, b, neighbor, params: u(r, neighbor, b, params)))
        init_fn, self.step_fn = integrator(s.thermostat, u, shift, s.timestep_fs * units.FS)
        self.virial_step = virial_step(
            s.thermostat, lambda r, neighbor, box, params: self.efv(r, box, neighbor=neighbor, params=params)[1:],
            shift, s.timestep_fs * units.FS) if s.barostat is not None else None
        self.init_fn = Program(init_fn)
        self.baro = barostat_step(s.barostat, s.timestep_fs * units.FS) if s.barostat is not None else None
        self._cache: dict = {}

    def _allocate(self, positions, box, capacity: int = 0, width: int = 0, edge_capacity: int = 0,
                  groups: tuple[int, ...] = ()):
        """``ng.allocate``, at the shapes of a compiled chunk that holds the new value: one at
        least as wide, with a capacity at most one quantum (``ng.quantum``) above the one needed,
        row-group capacities at most one group quantum above, and an edge capacity at most one
        quantum per atom above (and at least half a quantum per atom above the edges the
        configuration has). Capacities and width follow the configuration a value is built from
        (a liquid's counts differ from run to run, an NPT box's with its volume), and each new set
        is a new compilation (seconds to tens of seconds), while a wider table costs a few more
        candidates per search and one quantum of capacity at most ~15 % of a step (4 of ~28
        slots). A run that needs more than that compiles its own chunk. (A jax-md list's width and
        capacities are its own: only its row groups may differ from the chunk's.)"""
        nbrs = self.ng.allocate(positions, box, capacity=capacity, width=width, edge_capacity=edge_capacity,
                                groups=groups)
        q, qg, n = self.ng.quantum, self.ng.group_quantum, self.n
        # The edge capacity of a value keeps ``ng.edge_extra`` per atom over its mean count for a
        # crystal that starts at its lattice sites and fills up as it warms; a run from a warm
        # configuration (a production after its equilibration) needs less: a chunk with half a
        # quantum per atom over the edges it has now serves it.
        least_edges = min(nbrs.edge_capacity, int(nbrs.edge_peak) + n * q // 2)
        if _chunk_key(nbrs) not in self._cache:
            def fits(c, k, w, e, g):
                if k != nbrs.kind or len(g) != len(nbrs.groups):
                    return False
                if not all(a <= b <= a + qg for a, b in zip(nbrs.groups[1:], g[1:])):
                    return False
                if k in ("images", "host"):
                    return (nbrs.capacity <= c <= nbrs.capacity + q and w >= nbrs.width
                            and least_edges <= e <= nbrs.edge_capacity + n * q)
                return (c, w, e) == (nbrs.capacity, nbrs.width, nbrs.edge_capacity)

            chunks = sorted(key for key in self._cache if fits(*key))
            if chunks:
                c, _, w, e, g = chunks[0]
                # at that edge capacity exactly: it may be below what ``allocate`` would size
                nbrs = dataclasses.replace(self.ng.allocate(positions, box, capacity=c, width=w, groups=g),
                                           edge_capacity=e)
        return nbrs

    def _chunk(self, nbrs):
        key = _chunk_key(nbrs)
        if key not in self._cache:
            groups = f", triplet row groups {list(key[4])}" if key[4] else ""
            log.info(f"{self.s.ensemble}: new MD program (graph capacity {key[0]}, {key[1]} list of width {key[2]}, "
                     f"{key[3]} edges{groups})")
            self._cache[key] = self._make()
        return self._cache[key]

    def _make(self):
        s, ng, u, efv, baro = self.s, self.ng, self.u, self.efv, self.baro
        step_fn, dof, with_virial = self.step_fn, self.dof, self.virial_step

        def one_step(params, mass, kT, p0, carry):
            st, bx, nb, key, step = carry
            kw = dict(neighbor=nb, box=bx, params=params, kT=kT)
            if with_virial is None:
                st, w = step_fn(st, **kw), None
            else:
                # the step before a cell update also returns the virial where it ends (a strain
                # derivative: the box's shape and dtype, so the other branch needs no trace of it)
                st, w = jax.lax.cond((step + 1) % s.barostat.every == 0, lambda st: with_virial(st, **kw),
                                     lambda st: (step_fn(st, **kw), jnp.zeros_like(bx)), st)
            nb = ng.update(st.position, bx, nb)  # overflow is recorded in nb
            step = step + 1
            if baro is not None:
                def scale(args):
                    st, bx, nb, key = args
                    key, sub = jax.random.split(key)
                    virial = efv(st.position, bx, neighbor=nb, params=params)[2] if w is None else w
                    dt = st.position.dtype  # the barostat's float64 constants must not promote the state
                    r, p, bx_new = baro(sub, st.position, st.momentum, mass[:, None], virial, bx, kT, p0)
                    r, p, bx = r.astype(dt), p.astype(dt), bx_new.astype(bx.dtype)
                    nb = ng.update(r, bx, nb)
                    f = -jax.grad(u)(r, nb, bx, params)
                    st = st.set(position=r, momentum=p, force=f)
                    if hasattr(st, "chain"):
                        # the chain's next half step uses its stored kinetic energy: it must be
                        # that of the rescaled momenta
                        st = st.set(chain=st.chain.set(kinetic_energy=jmd_simulate.kinetic_energy(st)))
                    return st, bx, nb, key

                st, bx, nb, key = jax.lax.cond(step % s.barostat.every == 0, scale, lambda a: a,
                                               (st, bx, nb, key))
            return st, bx, nb, key, step

        def chunk(params, mass, kT, p0, every, n_frames, carry):
            """``n_frames`` frames of ``every`` steps each; the frame slots beyond ``n_frames``
            do nothing (their records are dropped by the caller)."""
            body = lambda i, c: one_step(params, mass, kT, p0, c)  # noqa: E731

            def record(carry):
                st, bx, nb = carry[:3]
                return (st.position, st.momentum, bx, u(st.position, nb, bx, params),
                        kinetic_temperature(st.momentum, mass, dof))

            def frame(carry, k):
                def advance(c):
                    c = jax.lax.fori_loop(0, every, body, c)
                    return c, record(c)

                def idle(c):
                    return c, tuple(jnp.zeros(x.shape, x.dtype) for x in jax.eval_shape(record, c))

                return jax.lax.cond(k < n_frames, advance, idle, carry)

            return jax.lax.scan(frame, carry, jnp.arange(self.frames))

        return Program(chunk)

    def run(self, positions, box, params=None, momenta=None, checkpoint: str | Path | None = None,
            progress: Callable[[str], None] = log.info, seed: int | None = None,
            temperature: float | None = None, steps: int | None = None, record_every: int | None = None,
            pressure_gpa: float | None = None, capacity: int = 0) -> Trajectory:
        """Run from ``positions`` (N, 3) in ``box`` (rows = lattice vectors); ``momenta``
        continues from a previous state (else Maxwell–Boltzmann at the temperature).
        ``temperature``, ``seed``, ``steps``, ``record_every`` (0: record nothing) and the
        barostat's ``pressure_gpa`` override the settings' without recompiling.

        ``capacity``: graph slots per atom to start from at least (0: sized by the first
        allocation). The run grows it after an overflow and reports the final one in
        ``stats["capacity"]``; passing that to the next run keeps the compiled chunk."""
        s, ng = self.s, self.ng
        record = self.record if record_every is None else max(0, int(record_every))
        total = s.steps if steps is None else int(steps)
        if total % (record or 1):
            raise ValueError(f"steps {total} is not a multiple of record_every {record}")
        dtype = jnp.asarray(positions).dtype
        positions = jnp.asarray(positions, dtype)
        box = jnp.asarray(box, dtype)
        barostat = s.barostat
        if barostat is not None:
            if pressure_gpa is not None:
                barostat = dataclasses.replace(barostat, pressure_gpa=float(pressure_gpa))
            barostat.check_box(np.asarray(box))
        elif pressure_gpa is not None:
            raise ValueError("a target pressure needs a barostat (MDSettings.barostat)")
        p0 = jnp.asarray(units.gpa_to_ev_per_a3(barostat.pressure_gpa) if barostat is not None else 0.0, dtype)
        n = self.n
        mass = jnp.asarray(units.mass_to_internal(self.masses_u), dtype)
        mass_col = mass[:, None]
        target_t = s.thermostat.temperature if temperature is None else float(temperature)
        kT = jnp.asarray(units.kT(target_t), dtype)
        nbrs = self._allocate(positions, box, capacity=capacity)
        key = jax.random.PRNGKey(s.seed if seed is None else seed)
        # what this run does, overrides included: a checkpoint resumes only the same run
        this_run = dataclasses.replace(s, steps=total, seed=s.seed if seed is None else seed, record_every=record,
                                       barostat=barostat,
                                       thermostat=dataclasses.replace(s.thermostat, temperature=target_t))
        key, k_init = jax.random.split(key)
        state = self.init_fn(k_init, positions, mass=mass_col, neighbor=nbrs, box=box, params=params, kT=kT,
                             **({} if momenta is None else {"momenta": jnp.asarray(momenta, dtype)}))
        if s.thermostat.kind != "langevin" and momenta is None:
            # a zero total momentum, conserved (the dof count assumes it)
            state = state.set(momentum=state.momentum - mass_col * jnp.sum(state.momentum, 0) / jnp.sum(mass))
        if s.thermostat.kind == "nose-hoover":
            # jax-md counts 3N degrees of freedom; the chain must thermostat the ones that move
            state = state.set(chain=state.chain.set(degrees_of_freedom=self.dof))
        done = 0
        frames: list[tuple] = []
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None and ckpt.exists():
            state, box, key, done, frames = _load_checkpoint(ckpt, state, n, this_run)
            nbrs = ng.allocate(state.position, box, capacity=nbrs.capacity, width=nbrs.width,
                               edge_capacity=nbrs.edge_capacity, groups=nbrs.groups)
            progress(f"resumed from {ckpt} at step {done}")
        # steps per call: whole frames when recording (at most the compiled number of frames),
        # else one frame of up to ``per_call`` steps
        full = record * min(self.frames, max(1, self.per_call // record)) if record else self.per_call
        length = min(full, total) if total else full
        reallocations, retries, last_bad, last_ckpt, tightened = 0, 0, -1, time.time(), False
        t0, first_call_s, start_step = time.time(), None, done
        while done < total:
            length = min(length, total - done)
            every, n_frames = (record, length // record) if record else (length, 1)
            carry = (state, box, nbrs, key, jnp.asarray(done))
            tc = time.time()
            (new_state, new_box, new_nbrs, new_key, _), out = self._chunk(nbrs)(
                params, mass, kT, p0, jnp.asarray(every), jnp.asarray(n_frames), carry)
            bad = bool(new_nbrs.did_buffer_overflow)
            if first_call_s is None:
                first_call_s = time.time() - tc
            if bad:
                # Discard the chunk; size the graph for where the atoms went, rebuild the list
                # from the state before the chunk, recompute. If that keeps failing, shorten it.
                reallocations += 1
                retries = retries + 1 if last_bad == done else 1
                last_bad = done
                if retries > 8:
                    raise RuntimeError(f"neighbour structures still overflow after {retries - 1} "
                                       f"reallocations at step {done}: atoms too close or too fast, "
                                       f"or the skin ({ng.skin} Å) too small for this temperature")
                nbrs = self._allocate(state.position, box, capacity=ng.grown_capacity(new_nbrs),
                                      width=ng.grown_width(new_nbrs), edge_capacity=ng.grown_edge_capacity(new_nbrs),
                                      groups=ng.grown_groups(new_nbrs))
                if retries > 2:
                    length = max(record or 1, (length // 2) // (record or 1) * (record or 1))
                continue
            if not bool(jnp.all(jnp.isfinite(new_state.position))):
                raise FloatingPointError(f"MD blew up between steps {done} and {done + length}: "
                                         "non-finite positions (time step too large or a bad potential?)")
            t_now = float(kinetic_temperature(new_state.momentum, mass, self.dof))
            if t_now > s.max_temperature_factor * max(target_t, 1.0):
                raise FloatingPointError(f"runaway temperature {t_now:.0f} K at step {done + length} "
                                         f"(target {target_t:g} K)")
            state, box, nbrs, key = new_state, new_box, new_nbrs, new_key
            done += length
            length = min(full, 2 * length)  # a shortened chunk grows back
            if not tightened and done < total:
                # row groups sized at the start (a density floor for a crystal at its lattice
                # sites) follow the counts of the first chunk for the rest of the run
                tightened, tight = True, ng.tight_groups(nbrs)
                if tight:
                    nbrs = self._allocate(state.position, box, capacity=nbrs.capacity, width=nbrs.width,
                                          edge_capacity=nbrs.edge_capacity, groups=tight)
            if record:
                frames.append(tuple(np.asarray(x)[:n_frames] for x in out))
            if ckpt is not None and (time.time() - last_ckpt > s.checkpoint_s or done == total):
                _save_checkpoint(ckpt, state, box, key, done, frames, n, this_run)
                last_ckpt = time.time()
            rate = (done - start_step) / (time.time() - t0)
            _, _, w = self.efv(state.position, box, neighbor=nbrs, params=params)
            p_gpa = units.ev_per_a3_to_gpa(float(jnp.trace(pressure_tensor(state.momentum, mass_col, w, box))) / 3)
            cell = ""
            if s.barostat is not None:
                cell = "  cell " + " ".join(f"{x:.4f}" for x in np.linalg.norm(np.asarray(box), axis=1))
            progress(f"{s.ensemble} step {done}/{total}  T {t_now:.0f} K  P {p_gpa:+.3f} GPa{cell}  "
                     f"{rate:.1f} steps/s  ETA {(total - done) / max(rate, 1e-9):.0f} s")
        stats = dict(steps=done, wall_s=time.time() - t0, first_call_s=first_call_s,
                     reallocations=reallocations, capacity=nbrs.capacity, width=nbrs.width,
                     edge_capacity=nbrs.edge_capacity, groups=list(nbrs.groups), neighbor_backend=nbrs.kind,
                     ensemble=s.ensemble)
        return _trajectory(frames, state, box, mass, this_run, stats)


def run(energy: Callable, positions, box, masses, s: MDSettings, ng: NeighborGraph,
        momenta=None, checkpoint: str | Path | None = None,
        progress: Callable[[str], None] = log.info, capacity: int = 0) -> Trajectory:
    """One run of ``energy(positions, box, graph)`` with per-atom ``masses`` (N,) in u."""
    sim = Simulator(lambda params, r, b, g: energy(r, b, g), masses, s, ng)
    return sim.run(positions, box, momenta=momenta, checkpoint=checkpoint, progress=progress,
                   capacity=capacity)


def _trajectory(frames, state, box, mass, s: MDSettings, stats) -> Trajectory:
    n = state.position.shape[0]
    if frames:
        cols = [np.concatenate([f[k] for f in frames]) for k in range(5)]
    else:
        cols = [np.zeros((0, n, 3)), np.zeros((0, n, 3)), np.zeros((0, 3, 3)), np.zeros(0), np.zeros(0)]
    times = (np.arange(len(cols[0])) + 1) * s.record_every * s.timestep_fs * units.FS
    final = dict(positions=np.asarray(state.position), momenta=np.asarray(state.momentum),
                 box=np.asarray(box))
    return Trajectory(*cols, times=times, masses=np.asarray(mass), final=final, stats=stats)


def _signature(n: int, s: MDSettings) -> str:
    return f"{n} atoms | {s!r}"


def _save_checkpoint(path: Path, state, box, key, done, frames, n, s: MDSettings) -> None:
    arrays = {f"state_{i}": a for i, a in enumerate(_state_arrays(state))}
    if frames:
        for k, name in enumerate(("positions", "momenta", "boxes", "energies", "temperatures")):
            arrays[f"frame_{name}"] = np.concatenate([f[k] for f in frames])
    save_npz(path, box=np.asarray(box), key=np.asarray(key), step=np.asarray(done),
             signature=np.asarray(_signature(n, s)), **arrays)


def _load_checkpoint(path: Path, template, n, s: MDSettings):
    with np.load(path) as z:
        if str(z["signature"]) != _signature(n, s):
            raise ValueError(f"{path}: MD checkpoint is from another run "
                             f"({str(z['signature'])[:200]}); delete it to start afresh")
        count = len([k for k in z.files if k.startswith("state_")])
        state = _restore(template, [z[f"state_{i}"] for i in range(count)])
        frames = []
        if "frame_positions" in z.files:
            frames = [tuple(z[f"frame_{k}"] for k in ("positions", "momenta", "boxes", "energies",
                                                       "temperatures"))]
        return state, jnp.asarray(z["box"]), jnp.asarray(z["key"]), int(z["step"]), frames
