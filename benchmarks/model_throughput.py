"""DimeNet++ speed on hcp Ti cells: energy+forces+virial per call, trace+compile time and peak
memory per system size, and MD throughput in each ensemble (NVE, NVT Langevin, NVT Nose–Hoover,
NPT with hexagonal coupling), for the paper-size model (or --demo), compared with the
300 atom-steps/s of chemtrain.

    python benchmarks/model_throughput.py                     # 256, 128, 64 atoms; MD on 256 atoms
    python benchmarks/model_throughput.py --quick             # 256 atoms, NVT and NPT, 20 steps
    python benchmarks/model_throughput.py --sizes 64 --md-steps 0   # E+F+W only
    python benchmarks/model_throughput.py --ensembles nve npt --md-steps 100
    python benchmarks/model_throughput.py --quick --against HEAD~1   # and a git revision, side by side

Each size and the MD runs go in their own process, so that peak memory (max RSS) is per job.
MD throughput is the steady state of the MD driver (``fusedmlp.md.simulate``): a run of
--md-steps steps in one jitted chunk traces and compiles, then the same run again on the compiled
chunk is timed, including the driver's per-step neighbour checks and its per-chunk progress line
(one extra energy+forces+virial). Random output weights (scaled down so that forces
have realistic magnitudes) stand in for a trained model: the cost does not depend on the values.
``--against`` measures each size and ensemble with the package of another revision (a temporary
git worktree) right after this checkout's, with the same parameters, and prints the ratios. That
revision's own copy of this script runs its workers, so revisions from before a rename in the
package (issue 17's baseline of 2026-12-02, aeb8f2a) are measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from revisions import source_trees

# The workers' environment, taken before this process imports the package (which adds XLA flags
# of its own): each revision's package then sets its own.
_ENV = dict(os.environ)
SUPERCELLS = {64: (4, 2, 2), 128: (4, 2, 4), 256: (4, 4, 4)}  # of the 4-atom orthorhombic hcp cell
ENSEMBLES = ("nve", "nvt-langevin", "nvt-nh", "npt")
CHEMTRAIN_ATOM_STEPS_PER_S = 300.0  # chemtrain's reported DimeNet++ MD throughput
TI_MASS = 47.867


def _settings(demo: bool):
    from fusedmlp.model.settings import ModelSettings

    kw = dict(embed_size=16, out_embed_size=32, type_embed_size=8, int_embed_size=8,
              basis_embed_size=4, n_blocks=2) if demo else {}
    return ModelSettings.create(["Ti"], aggregation_scale=20.0, **kw)


def make_params(demo: bool, path: str) -> None:
    """Random parameters, saved for the worker processes (initialising the paper-size model
    op by op takes ~20 s of CPU; once is enough)."""
    import jax
    import numpy as np

    from fusedmlp.model.params import init_params

    params = init_params(_settings(demo), jax.random.PRNGKey(0))
    # small random output weights: realistic magnitudes of forces, stable dynamics
    params["net"] = {k: ({"w": 1e-3 * jax.random.normal(jax.random.PRNGKey(1), v["w"].shape)}
                         if k.endswith("lin_out") else v) for k, v in params["net"].items()}
    flat = {"scale": params["scale"], "shift": params["shift"]}
    flat.update({f"net/{m}/{n}": v for m, leaves in params["net"].items() for n, v in leaves.items()})
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def _load_params(path: str) -> dict:
    import jax.numpy as jnp
    import numpy as np

    params: dict = {"net": {}}
    with np.load(path) as z:
        for key in z.files:
            if key.startswith("net/"):
                module, name = key[4:].rsplit("/", 1)
                params["net"].setdefault(module, {})[name] = jnp.asarray(z[key])
            else:
                params[key] = jnp.asarray(z[key])
    return params


def _system(n_atoms: int, demo: bool, params_path: str):
    import jax.numpy as jnp
    import numpy as np
    from ase.build import bulk

    from fusedmlp.model.energy import energy_fn

    settings = _settings(demo)
    params = _load_params(params_path)
    atoms = bulk("Ti", "hcp", a=2.951, c=4.684, orthorhombic=True).repeat(SUPERCELLS[n_atoms])
    atoms.rattle(0.03, seed=0)
    species = jnp.zeros(len(atoms), jnp.int32)
    e = energy_fn(settings)

    def energy(r, b, graph):  # the MD interface: energy(positions, box, graph)
        return e(params, r, b, species, graph)

    return settings, atoms, energy, np.asarray(atoms.cell)


def _real_triplets(positions, box, cutoff: float) -> int:
    from fusedmlp.model.graph import neighbor_table

    counts = neighbor_table(np.asarray(positions, float), np.asarray(box, float), cutoff)[2].sum(1)
    return int(np.sum(counts * (counts - 1)))


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def one_size(n_atoms: int, demo: bool, skin: float, params_path: str) -> dict:
    """Energy, forces and virial of one configuration: compile time and time per call."""
    import jax
    import jax.numpy as jnp

    from fusedmlp.md.neighbors import NeighborGraph
    from fusedmlp.model.graph import triplet_slots
    from fusedmlp.quantity import energy_forces_virial

    settings, atoms, energy, box_np = _system(n_atoms, demo, params_path)
    pos = jnp.asarray(atoms.positions, jnp.float32)
    box = jnp.asarray(box_np, jnp.float32)
    ng = NeighborGraph(settings.dimenet.cutoff, skin=skin)
    nbrs = ng.allocate(pos, box)
    g = ng.graph(pos, box, nbrs)
    counts = g.mask.sum(1)

    @jax.jit
    def efv(r, b, nb):
        return energy_forces_virial(lambda x, bx: energy(x, bx, ng.graph(x, bx, nb)))(r, b)

    t = time.time()
    jax.block_until_ready(efv(pos, box, nbrs))
    compile_s = time.time() - t
    reps = 5
    t = time.time()
    for _ in range(reps):
        jax.block_until_ready(efv(pos, box, nbrs))
    return dict(atoms=n_atoms, edges=int(counts.sum()), triplets=int((counts * (counts - 1)).sum()),
                max_neighbors=int(g.max_neighbors), capacity=nbrs.capacity, backend=nbrs.kind,
                edge_capacity=nbrs.edge_capacity,
                triplet_slots=triplet_slots(n_atoms, nbrs.capacity, nbrs.groups),
                efv_s=(time.time() - t) / reps, compile_s=compile_s, peak_rss_gb=_rss_gb())


def md_settings(ensemble: str, steps: int, chunk: int):
    from fusedmlp.md.ensembles import Barostat, Thermostat
    from fusedmlp.md.simulate import MDSettings

    thermostat = {"nve": Thermostat("none", temperature=300.0),
                  "nvt-langevin": Thermostat("langevin", temperature=300.0, friction_per_ps=4.0),
                  "nvt-nh": Thermostat("nose-hoover", temperature=300.0, tau_fs=50.0),
                  "npt": Thermostat("langevin", temperature=300.0, friction_per_ps=4.0)}[ensemble]
    barostat = (Barostat(pressure_gpa=0.0, tau_ps=0.5, coupling="hexagonal", every=10)
                if ensemble == "npt" else None)
    return MDSettings(thermostat=thermostat, barostat=barostat, timestep_fs=1.0, steps=steps,
                      record_every=0, chunk=chunk, seed=0)


def one_md(n_atoms: int, ensemble: str, steps: int, demo: bool, skin: float, extra: int,
           params_path: str) -> dict:
    """MD in one ensemble: a first run of ``steps`` steps in one chunk (traces and compiles), then
    the same run again on the compiled chunk: its wall time gives the steady-state throughput."""
    import jax.numpy as jnp
    import numpy as np

    from fusedmlp.md.neighbors import NeighborGraph
    from fusedmlp.model.graph import triplet_slots
    from fusedmlp.md.simulate import Simulator, kinetic_temperature

    settings, atoms, energy, box_np = _system(n_atoms, demo, params_path)
    s = md_settings(ensemble, steps, steps)
    ng = NeighborGraph(settings.dimenet.cutoff, skin=skin, extra=extra)
    sim = Simulator(lambda params, r, b, g: energy(r, b, g), np.full(len(atoms), TI_MASS), s, ng)
    pos = jnp.asarray(atoms.positions, jnp.float32)
    t = time.time()
    first = sim.run(pos, box_np, progress=lambda msg: None)
    first_s = time.time() - t
    # from the first run's capacity: the compiled chunk is reused
    timed = sim.run(pos, box_np, progress=lambda msg: None, capacity=first.stats["capacity"])
    steps_per_s = steps / timed.stats["wall_s"]
    final = timed.final
    temp = float(kinetic_temperature(jnp.asarray(final["momenta"]), jnp.asarray(timed.masses), sim.dof))
    return dict(atoms=n_atoms, ensemble=s.ensemble, label=ensemble, steps=steps, first_run_s=first_s,
                steps_per_s=steps_per_s, atom_steps_per_s=steps_per_s * n_atoms,
                backend=timed.stats["neighbor_backend"], capacity=timed.stats["capacity"],
                edge_capacity=timed.stats["edge_capacity"],
                # per real triplet of the run's last configuration
                slots_per_triplet=triplet_slots(n_atoms, timed.stats["capacity"], timed.stats["groups"])
                / _real_triplets(final["positions"], final["box"], settings.dimenet.cutoff),
                reallocations=[first.stats["reallocations"], timed.stats["reallocations"]],
                final_T=temp, volume_change=float(np.linalg.det(final["box"]) / np.linalg.det(box_np) - 1.0),
                peak_rss_gb=_rss_gb())


def _slots(r: dict) -> str:
    # a revision from before the triplet row groups (``--against``) computes N·K² slots
    if "triplet_slots" in r:
        return f"{r['triplet_slots']} ({r['triplet_slots'] / r['triplets']:.2f})"
    return f"{r['atoms'] * r['capacity'] ** 2} ({r['atoms'] * r['capacity'] ** 2 / r['triplets']:.2f})"


def _edge_capacity(r: dict) -> str:
    # a revision from before the edge lists (``--against``) runs every slot of its graph
    return str(r.get("edge_capacity", "all slots"))


_ENSEMBLE_NAMES = {"nve": "NVE", "nvt-langevin": "NVT Langevin", "nvt-nh": "NVT Nose-Hoover",
                   "npt": "NPT hexagonal (SCR)"}


def _worker(src: Path) -> Path:
    """The script whose worker mode measures the package in ``src``: the revision's own copy of
    this benchmark, so that a revision from before a rename in the package is measured as its own
    benchmark measured it (same cells, parameters and timing, its own imports)."""
    script = src.parent / "benchmarks" / Path(__file__).name
    if not script.is_file():
        sys.exit(f"{src.parent} has no {script.relative_to(src.parent)} to measure its package with")
    return script


def _subprocess(args: list[str], src: Path) -> dict:
    env = {**_ENV, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, str(_worker(src)), *args], capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{' '.join(args)} with {src} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 128, 64], choices=sorted(SUPERCELLS),
                    help="system sizes for the energy+forces+virial timing (none: skip)")
    ap.add_argument("--md-atoms", type=int, default=256, choices=sorted(SUPERCELLS))
    ap.add_argument("--ensembles", nargs="*", default=list(ENSEMBLES), choices=ENSEMBLES)
    ap.add_argument("--md-steps", type=int, default=30,
                    help="MD steps per run and ensemble (one jitted chunk, run twice); 0: no MD")
    ap.add_argument("--skin", type=float, default=1.0, help="neighbour list skin, Å")
    ap.add_argument("--extra", type=int, default=10,
                    help="MD graph capacity over the largest neighbour count of the start: at 300 K "
                         "the count within 5 Å grows by ~7 in hcp Ti, and growing the capacity in the "
                         "first run would compile it twice")
    ap.add_argument("--quick", action="store_true",
                    help="about two minutes on a small CPU: 256 atoms only, NVT Langevin and NPT, "
                         "20 MD steps")
    ap.add_argument("--demo", action="store_true", help="the demo model instead of the paper's")
    ap.add_argument("--against", help="a git revision to measure beside this checkout")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--one-md", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.md_steps = [n for n in args.sizes if n == 256], 20
        args.ensembles = [e for e in args.ensembles if e in ("nvt-langevin", "npt")]
    if args.one:
        print(json.dumps(one_size(args.one, args.demo, args.skin, args.params)))
        return
    if args.one_md:
        print(json.dumps(one_md(args.md_atoms, args.one_md, args.md_steps, args.demo, args.skin, args.extra,
                                args.params)))
        return
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp, source_trees(args.against) as trees:
        params_path = str(Path(tmp) / "params.npz")
        make_params(args.demo, params_path)
        common = ["--skin", str(args.skin), "--params", params_path] + (["--demo"] if args.demo else [])
        sizes = [(code, _subprocess(["--one", str(n), *common], src))
                 for n in args.sizes for code, src in trees.items()]
        mds = [(code, _subprocess(["--one-md", e, "--md-atoms", str(args.md_atoms), "--md-steps",
                                   str(args.md_steps), "--extra", str(args.extra), *common], src))
               for e in (args.ensembles if args.md_steps else []) for code, src in trees.items()]

    import jax
    print(f"DimeNet++ ({'demo' if args.demo else 'paper'} hyperparameters), float32, "
          f"JAX {jax.__version__} on {jax.devices()[0].platform}, skin {args.skin} Å, hcp Ti")
    if sizes:
        print("\nenergy + forces + virial, one configuration")
        head = ("code", "atoms", "edges", "triplets", "triplet slots (per triplet)", "max nbrs", "capacity",
                "edge capacity", "neighbours", "E+F+W s/call", "compile s", "peak RSS GB")
        print(" | ".join(head))
        for code, r in sizes:
            print(" | ".join([code, f"{r['atoms']}", f"{r['edges']}", f"{r['triplets']}", _slots(r),
                              f"{r['max_neighbors']}",
                              f"{r['capacity']}", _edge_capacity(r), r["backend"], f"{r['efv_s']:.4f}",
                              f"{r['compile_s']:.1f}",
                              f"{r['peak_rss_gb']:.2f}"]))
    if mds:
        print(f"\nMD, {args.md_atoms} atoms, 1 fs, 300 K, {args.md_steps} steps (first run: trace, compile "
              f"and run; steps/s: the same run again, compiled)")
        head = ("code", "ensemble", "neighbours", "capacity", "edge capacity", "triplet slots per triplet (end)",
                "first run s", "steps/s", "atom-steps/s", "vs chemtrain 300", "realloc", "final T K", "ΔV/V",
                "peak RSS GB")
        print(" | ".join(head))
        for code, r in mds:
            per = f"{r['slots_per_triplet']:.2f}" if "slots_per_triplet" in r else "-"
            print(" | ".join([code, _ENSEMBLE_NAMES[r["label"]], r["backend"], f"{r['capacity']}", _edge_capacity(r),
                              per, f"{r['first_run_s']:.1f}", f"{r['steps_per_s']:.2f}", f"{r['atom_steps_per_s']:.0f}",
                              f"{r['atom_steps_per_s'] / CHEMTRAIN_ATOM_STEPS_PER_S:.2f}x",
                              "+".join(map(str, r["reallocations"])), f"{r['final_T']:.0f}",
                              f"{r['volume_change']:+.4f}",
                              f"{r['peak_rss_gb']:.2f}"]))
    if args.against:
        print(f"\nthis checkout against {args.against}")
        for (_, new), (_, old) in zip(sizes[::2], sizes[1::2]):
            print(f"E+F+W, {new['atoms']} atoms: {old['efv_s'] / new['efv_s']:.2f}x the speed")
        for (_, new), (_, old) in zip(mds[::2], mds[1::2]):
            print(f"MD {_ENSEMBLE_NAMES[new['label']]}: {new['steps_per_s'] / old['steps_per_s']:.2f}x the steps/s")
    print(f"\ntotal {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
