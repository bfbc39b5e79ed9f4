"""Chunked, jitted MD with neighbour-list overflow handling and progress reports.

A run advances in chunks of steps scanned inside one jitted call. After every chunk the
neighbour structures are checked; if the list or the graph overflowed (or a host Verlet table
went stale) the chunk is discarded, capacities are reallocated and the chunk is recomputed from
the state before it. A non-finite position or a runaway temperature stops the run with an error.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import simulate, space as jmd_space

from .. import units
from ..space import wrap_positions
from .neighbors import NeighborGraph

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LangevinSettings:
    temperature: float  # K
    timestep_fs: float = 0.5
    friction_per_ps: float = 4.0
    steps: int = 1000
    chunk: int = 100
    seed: int = 0
    max_temperature_factor: float = 5.0  # "runaway" above this multiple of the target


def kinetic_temperature(momentum, mass, n_atoms: int):
    """T from the kinetic energy with 3N − 3 degrees of freedom (K)."""
    ke = 0.5 * jnp.sum(momentum**2 / mass)
    return 2.0 * ke / ((3 * n_atoms - 3) * units.KB)


def nvt_langevin(energy: Callable, positions, box, species, mass_u: float, s: LangevinSettings,
                 ng: NeighborGraph, progress: Callable[[str], None] = log.info, record_every: int = 0):
    """Run NVT Langevin MD; returns (final state, list of recorded positions, statistics)."""
    box_j = jnp.asarray(box, positions.dtype)
    _, shift = jmd_space.periodic_general(box_j.T, fractional_coordinates=False)
    mass = units.mass_to_internal(mass_u)
    n = positions.shape[0]
    kT = units.kT(s.temperature)

    def make(capacity, length):  # new capacity or chunk length: new shapes, recompile
        def u(r, neighbor, **kw):
            return energy(r, box_j, species, ng.graph(r, neighbor))

        init_fn, step_fn = simulate.nvt_langevin(u, shift, s.timestep_fs * units.FS, kT,
                                                 gamma=s.friction_per_ps)

        @jax.jit
        def chunk_arrays(state, nb_arrays):
            def body(carry, _):
                st, nba, bad = carry
                nb = ng.join(nba)
                st = step_fn(st, neighbor=nb)
                nb = ng.update(st.position, nb)
                bad = bad | ng.exceeded(st.position, nb)
                return (st, ng.split(nb), bad), kinetic_temperature(st.momentum, mass, n)

            (st, nba, bad), temps = jax.lax.scan(body, (state, nb_arrays, jnp.asarray(False)), None,
                                                 length=length)
            return st, nba, bad, temps

        def chunk(state, nbrs):
            st, nba, bad, temps = chunk_arrays(state, ng.split(nbrs))
            return st, ng.join(nba), bad, temps

        return init_fn, chunk

    positions = jnp.asarray(wrap_positions(positions, box), positions.dtype)
    nbrs = ng.allocate(positions)
    length = s.chunk
    init_fn, chunk = make(ng.capacity, length)
    state = init_fn(jax.random.PRNGKey(s.seed), positions, mass=mass, neighbor=nbrs)
    frames, temps, done, reallocations, retries, last_bad = [], [], 0, 0, 0, -1
    t0 = time.time()
    compile_s = None
    while done < s.steps:
        tc = time.time()
        new_state, new_nbrs, bad, chunk_temps = chunk(state, nbrs)
        bad = bool(bad)
        if compile_s is None:
            compile_s = time.time() - tc
        if bad:
            # Discard the chunk; size the graph for where the atoms went, rebuild the list from
            # the state before the chunk, and recompute. If that keeps failing (a host Verlet
            # table going stale within one chunk), shorten the chunk.
            reallocations += 1
            retries = retries + 1 if last_bad == done else 1
            last_bad = done
            if retries > 8:
                raise RuntimeError(f"neighbour structures still overflow after {retries - 1} "
                                   f"reallocations at step {done}; atoms too close or too fast?")
            ng.grow(new_state.position, new_nbrs)
            nbrs = ng.allocate(state.position)
            if retries > 2:
                length = max(1, length // 2)
            init_fn, chunk = make(ng.capacity, length)
            continue
        if not bool(jnp.all(jnp.isfinite(new_state.position))):
            raise FloatingPointError(f"MD blew up between steps {done} and {done + length}: "
                                     "non-finite positions (time step too large or a bad potential?)")
        t_now = float(chunk_temps[-1])
        if t_now > s.max_temperature_factor * s.temperature:
            raise FloatingPointError(f"runaway temperature {t_now:.0f} K at step {done + length} "
                                     f"(target {s.temperature:g} K)")
        state, nbrs = new_state, new_nbrs
        done += length
        temps.append(np.asarray(chunk_temps))
        if record_every and done % record_every == 0:
            frames.append(np.asarray(state.position))
        elapsed = time.time() - t0
        rate = done / elapsed
        progress(f"step {done}/{s.steps}  T {np.mean(chunk_temps):.0f} K  {rate:.1f} steps/s  "
                 f"ETA {(s.steps - done) / rate:.0f} s")
    stats = dict(steps=done, wall_s=time.time() - t0, first_chunk_s=compile_s,
                 reallocations=reallocations, capacity=ng.capacity,
                 temperatures=np.concatenate(temps) if temps else np.zeros(0))
    return state, frames, stats
