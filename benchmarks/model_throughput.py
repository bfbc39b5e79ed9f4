"""DimeNet++ speed on hcp cells: energy+forces per call, NVT Langevin MD throughput,
trace+compile time and peak memory, for the paper-size model (or --demo).

    python benchmarks/model_throughput.py            # 64, 128, 256 atoms, paper hyperparameters
    python benchmarks/model_throughput.py --sizes 256 --steps 400

Each size runs in its own process so that peak memory (max RSS) is per size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SUPERCELLS = {64: (4, 2, 2), 128: (4, 2, 4), 256: (4, 4, 4)}  # of the 4-atom orthorhombic hcp cell


def one(n_atoms: int, steps: int, demo: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ase.build import bulk

    from fusedmlp.md.neighbors import NeighborGraph
    from fusedmlp.md.simulate import LangevinSettings, nvt_langevin
    from fusedmlp.model.potential import ModelSettings, energy_fn, init_params
    from fusedmlp.quantity import energy_forces_virial

    kw = dict(embed_size=16, out_embed_size=32, type_embed_size=8, int_embed_size=8,
              basis_embed_size=4, n_blocks=2) if demo else {}
    settings = ModelSettings.create(["Ti"], aggregation_scale=20.0, **kw)
    params = init_params(settings, jax.random.PRNGKey(0))
    # small random output weights: realistic magnitudes of forces, stable dynamics
    params["net"] = {k: ({"w": 1e-3 * jax.random.normal(jax.random.PRNGKey(1), v["w"].shape)}
                         if k.endswith("lin_out") else v) for k, v in params["net"].items()}
    atoms = bulk("Ti", "hcp", a=2.951, c=4.684, orthorhombic=True).repeat(SUPERCELLS[n_atoms])
    atoms.rattle(0.03, seed=0)
    pos = jnp.asarray(atoms.positions, jnp.float32)
    box = jnp.asarray(np.asarray(atoms.cell), jnp.float32)
    species = jnp.zeros(len(atoms), jnp.int32)
    energy = energy_fn(settings)
    ng = NeighborGraph(np.asarray(atoms.cell), settings.dimenet.cutoff, skin=1.0)
    nbrs = ng.allocate(pos)
    g = ng.graph(pos, nbrs)
    n_edges = int(g.mask.sum())
    triplets = int((g.mask.sum(1) * (g.mask.sum(1) - 1)).sum())

    @jax.jit
    def efv(p, r, nb):
        graph = ng.graph(r, nb)
        return energy_forces_virial(lambda x, b: energy(p, x, b, species, graph))(r, box)

    t = time.time()
    jax.block_until_ready(efv(params, pos, nbrs))
    compile_efv = time.time() - t
    t = time.time()
    reps = 10
    for _ in range(reps):
        jax.block_until_ready(efv(params, pos, nbrs))
    per_call = (time.time() - t) / reps

    def e_md(r, b, s, graph):
        return energy(params, r, b, s, graph)

    # warm-up run: sizes the capacities (reallocations recompile); the timed run reuses them
    md = LangevinSettings(temperature=300.0, timestep_fs=0.5, friction_per_ps=4.0, steps=steps, chunk=50)
    _, _, warm = nvt_langevin(e_md, pos, np.asarray(atoms.cell), species, 47.867, md, ng,
                              progress=lambda m: None)
    _, _, stats = nvt_langevin(e_md, pos, np.asarray(atoms.cell), species, 47.867, md, ng,
                               progress=lambda m: None)
    run_s = stats["wall_s"] - stats["first_chunk_s"]
    steps_per_s = (steps - md.chunk) / run_s
    return dict(atoms=n_atoms, edges=n_edges, triplets=triplets, capacity=stats["capacity"],
                energy_forces_s=per_call, compile_s=compile_efv,
                md_first_chunk_s=warm["first_chunk_s"], md_steps_per_s=steps_per_s,
                atom_steps_per_s=steps_per_s * n_atoms,
                reallocations=warm["reallocations"] + stats["reallocations"],
                mean_T=float(np.mean(stats["temperatures"])), max_neighbors=int(g.max_neighbors),
                peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], choices=sorted(SUPERCELLS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--demo", action="store_true", help="the demo model instead of the paper's")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.steps, args.demo)))
        return
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--steps", str(args.steps)]
        cmd += ["--demo"] if args.demo else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import jax
    print(f"DimeNet++ ({'demo' if args.demo else 'paper'} hyperparameters), float32, "
          f"JAX {jax.__version__} on {jax.devices()[0].platform}")
    head = ("atoms", "edges", "triplets", "max nbrs", "capacity", "E+F+W s/call", "compile s", "MD steps/s",
            "atom-steps/s", "MD 1st chunk s", "peak RSS GB", "mean T K")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([f"{r['atoms']}", f"{r['edges']}", f"{r['triplets']}", f"{r['max_neighbors']}",
                          f"{r['capacity']} ({r['reallocations']} realloc)",
                          f"{r['energy_forces_s']:.4f}", f"{r['compile_s']:.1f}",
                          f"{r['md_steps_per_s']:.2f}", f"{r['atom_steps_per_s']:.0f}",
                          f"{r['md_first_chunk_s']:.1f}", f"{r['peak_rss_gb']:.2f}", f"{r['mean_T']:.0f}"]))


if __name__ == "__main__":
    main()
