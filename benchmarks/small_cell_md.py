"""MD throughput in a small cell, where the neighbour structure is a table over all lattice
images (``md.neighbors``, kind "images"): the IBI's and the demo's 54-atom liquid (bcc 3×3×3
melted at 2500 K and the IBI target's density), with the reference EAM (cutoff 6.97 Å, wider than
half the box) and with the demo-size model (random weights; the cost does not depend on them).

    python benchmarks/small_cell_md.py                   # this checkout
    python benchmarks/small_cell_md.py --against HEAD~1  # and a git revision, side by side

Each potential runs in its own process: a melt, then ``--steps`` NVT Langevin steps (2 fs) in
chunks of 500 on the compiled chunk, timed. ``--against`` runs the same measurement with the
package of another revision (a temporary git worktree) right after, so the two numbers share
the machine's state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from revisions import source_trees

POTENTIALS = ("eam", "model")
DENSITY = 0.04915  # atoms/Å³: ref_hard's liquid at 2500 K and zero pressure (the demo's IBI target)


def measure(potential: str, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ase.build import bulk

    from fusedmlp.md.ensembles import Thermostat
    from fusedmlp.md.neighbors import NeighborGraph
    from fusedmlp.md.simulate import MDSettings, Simulator
    from fusedmlp.reference.eam import graph_energy_fn, zhou2004

    atoms = bulk("Ti", "bcc", a=(2 / DENSITY) ** (1 / 3), cubic=True).repeat((3, 3, 3))
    box = np.asarray(atoms.cell)
    if potential == "eam":
        eam = zhou2004("Ti")
        u = graph_energy_fn(eam)
        energy, cutoff, params = (lambda p, r, b, g: u(r, b, g)), float(eam.cutoff), None
    else:
        from fusedmlp.model.energy import energy_fn
        from fusedmlp.model.params import init_params
        from fusedmlp.model.settings import ModelSettings

        settings = ModelSettings.create(["Ti"], aggregation_scale=20.0, embed_size=16, out_embed_size=32,
                                        type_embed_size=8, int_embed_size=8, basis_embed_size=4, n_blocks=2)
        params = init_params(settings, jax.random.PRNGKey(0))
        # small output weights: forces of realistic size, stable dynamics
        params["net"] = {k: ({"w": 1e-3 * jax.random.normal(jax.random.PRNGKey(1), v["w"].shape)}
                             if k.endswith("lin_out") else v) for k, v in params["net"].items()}
        e, species = energy_fn(settings), jnp.zeros(len(atoms), jnp.int32)
        energy, cutoff = (lambda p, r, b, g: e(p, r, b, species, g)), float(settings.dimenet.cutoff)
    s = MDSettings(thermostat=Thermostat("langevin", temperature=2500.0, friction_per_ps=4.0), timestep_fs=2.0,
                   steps=steps, record_every=10, chunk=500, seed=0)
    sim = Simulator(energy, np.full(len(atoms), 47.867), s, NeighborGraph(cutoff, skin=1.0))
    pos = jnp.asarray(atoms.positions, jnp.float32)
    t = time.time()
    melt = sim.run(pos, box, params=params, progress=lambda m: None, steps=500)
    first_s = time.time() - t
    run = sim.run(jnp.asarray(melt.final["positions"]), box, params=params, momenta=melt.final["momenta"],
                  progress=lambda m: None, capacity=melt.stats["capacity"])
    return dict(potential=potential, cutoff_A=cutoff, atoms=len(atoms), steps=steps,
                steps_per_s=steps / run.stats["wall_s"], first_run_s=first_s,
                backend=run.stats["neighbor_backend"], capacity=run.stats["capacity"],
                width=run.stats.get("width"), reallocations=run.stats["reallocations"],
                mean_T=float(np.mean(run.temperatures)))


def _run(potential: str, steps: int, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, __file__, "--worker", potential, "--steps", str(steps)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{potential} with {src} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--steps", type=int, default=2000, help="timed NVT steps per potential")
    ap.add_argument("--potentials", nargs="*", default=list(POTENTIALS), choices=POTENTIALS)
    ap.add_argument("--against", help="a git revision to measure beside this checkout")
    ap.add_argument("--worker", choices=POTENTIALS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(measure(a.worker, a.steps)))
        return
    with source_trees(a.against) as trees:
        rows = [(name, _run(p, a.steps, src)) for p in a.potentials for name, src in trees.items()]
    print(f"{'code':<16}{'potential':<10}{'atoms':>6}{'steps/s':>10}{'first run s':>13}  list (capacity, width)"
          f"  reallocations  mean T")
    for name, r in rows:
        print(f"{name:<16}{r['potential']:<10}{r['atoms']:>6}{r['steps_per_s']:>10.1f}{r['first_run_s']:>13.1f}  "
              f"{r['backend']} ({r['capacity']}, {r['width']}){'':>6}{r['reallocations']:>3}  {r['mean_T']:.0f} K")
    if a.against:
        for p in a.potentials:
            new, old = (r for _, r in rows if r["potential"] == p)
            print(f"{p}: {new['steps_per_s'] / old['steps_per_s']:.2f}x the steps/s of {a.against}")


if __name__ == "__main__":
    main()
