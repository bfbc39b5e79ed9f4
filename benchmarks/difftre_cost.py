"""Cost of one DiffTRe update per frame: the Born terms, and the loss with its reweighting
gradient for the elastic-constant + pressure loss, for the demo and the paper model on the DiffTRe
state-point cells (hcp Ti, 36 and 150 atoms), with the full Born tensor of every frame
(``difftre.born_directions: 0``, the former estimator) and with strain directions per frame
(``observables.born_directions``) side by side; and the noise the directional estimator adds,
next to the thermal noise of the same frames.

    python benchmarks/difftre_cost.py                 # both models, both estimators; noise
    python benchmarks/difftre_cost.py --quick         # demo model only
    python benchmarks/difftre_cost.py --models paper --directions 1 --frames 700 --single   # memory at 700 frames

Every cost is also given in units of one energy+forces+virial evaluation of the same cell, batched
as the frames are, measured in the same process. Trace+compile time of a program is its first
call minus a steady call (``--single``, for memory runs: one call each, whose cost includes the
compile, and no compile time). Frames are batched as the model's configuration says
(``difftre.batch_frames`` of ``config/config.yaml`` for the demo model, ``config/paper.yaml`` for
the paper model) unless ``--batch`` is given. Each (model, estimator) runs in its own process, so
peak memory (max RSS) is per job. Random output weights
stand in for a trained model (``model_throughput``): the cost does not depend on the values.

The noise: NVT frames of the 36-atom cell at 323 K with the reference EAM (a physical thermal
sample); over windows of F consecutive frames, the thermal standard deviation of the exact
constants (across windows) against the standard deviation the directional estimator adds (across
its D assignments of directions to the same frames), without and with the control variates of
the normal Born stresses, their slopes fitted on the earlier windows as the trainer fits them
on the trajectories other than the one they correct (``--noise-frames 7000`` for 175 windows of 40 frames;
``--noise-seed`` for another trajectory).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

CELLS = {"demo": (3, 3, 2), "paper": (5, 5, 3)}  # of the 2-atom hcp cell: 36 and 150 atoms
A, COVERA, TI_MASS = 2.951, 1.5873, 47.867
TARGETS = {"C11": 160.0, "C33": 180.0, "C44": 46.0, "C12": 90.0, "C13": 66.0, "pressure": 0.0}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def config_batch(model: str) -> int:
    """``difftre.batch_frames`` of the model's configuration (the demo's or the paper's)."""
    import yaml

    path = Path(__file__).parents[1] / "config" / ("config.yaml" if model == "demo" else "paper.yaml")
    return int(yaml.safe_load(path.read_text())["difftre"]["batch_frames"])


def one(model: str, directions: int, n_frames: int, batch: int, params_path: str, single: bool = False) -> dict:
    """Cost of one update on ``n_frames`` rattled frames with ``directions`` per frame (0: full)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from fusedmlp import units
    from fusedmlp.md.neighbors import frame_graphs
    from fusedmlp.model.energy import energy_fn
    from fusedmlp.observables.reweighting import make_frames
    from fusedmlp.quantity import energy_forces_virial
    from fusedmlp.structures import crystal
    from fusedmlp.training.difftre import Reweighter, StatePoint
    from model_throughput import _load_params, _settings

    settings = _settings(model == "demo")
    params = _load_params(params_path)
    atoms = crystal("Ti", "hcp", A, COVERA, CELLS[model])
    n = len(atoms)
    rng = np.random.default_rng(0)
    pos = atoms.positions[None] + rng.normal(scale=0.08, size=(n_frames, n, 3))
    mom = rng.normal(scale=np.sqrt(units.mass_to_internal(TI_MASS) * units.kT(323.0)), size=pos.shape)
    box = np.asarray(atoms.cell)
    spc = jnp.zeros(n, jnp.int32)
    e = energy_fn(settings)

    def energy(p, r, b, g):
        return e(p, r, b, spc, g)

    sp = StatePoint("323K", 323.0, atoms.positions, box, np.zeros(n, int), np.full(n, TI_MASS),
                    dict(TARGETS), {k: 1.0 for k in TARGETS}, born_directions=directions)
    graphs = frame_graphs(pos, box, settings.dimenet.cutoff, extra=6)
    fr = make_frames(pos.astype(np.float32), mom, sp.masses, box.astype(np.float32), graphs,
                     np.zeros(n_frames), sp)
    rew = Reweighter(energy, batch)

    # the unit: energy+forces+virial of a batch of frames, as the frames are batched
    efv = jax.jit(jax.vmap(lambda r, g: energy_forces_virial(lambda x, bx: energy(params, x, bx, g))(
        r, jnp.asarray(box, jnp.float32))))
    k = min(batch, n_frames)
    r_batch = jnp.asarray(fr.positions[:k])
    g_batch = jax.tree_util.tree_map(lambda x: x[:k], fr.graphs)
    jax.block_until_ready(efv(r_batch, g_batch))
    t = time.time()
    for _ in range(3):
        jax.block_until_ready(efv(r_batch, g_batch))
    efv_s = (time.time() - t) / 3 / k

    def timed(f):
        t = time.time()
        f()
        first = time.time() - t
        if single:
            return float("nan"), first / n_frames
        t = time.time()
        f()
        steady = time.time() - t
        return first - steady, steady / n_frames

    born_compile, born_s = timed(lambda: jax.block_until_ready(rew.quantities(params, fr, True)))
    fr = dataclasses.replace(fr, u_ref=rew.energies(params, fr))
    update_compile, update_s = timed(lambda: jax.block_until_ready(rew.evaluate(params, fr, sp)[3]))
    return dict(model=model, atoms=n, directions=directions, frames=n_frames, batch=batch,
                capacity=int(graphs.neighbors.shape[-1]), efv_s=efv_s, born_s=born_s,
                born_compile_s=born_compile, update_s=update_s, update_compile_s=update_compile,
                peak_rss_gb=_rss_gb())


def noise(windows: list[int], n_frames: int, seed: int = 0) -> list[dict]:
    """Thermal vs estimator standard deviation of the constants (GPa) over windows of frames."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fusedmlp import units
    from fusedmlp.elastic import reduce_stiffness
    from fusedmlp.md.ensembles import Thermostat
    from fusedmlp.md.neighbors import NeighborGraph, frame_graphs
    from fusedmlp.md.simulate import MDSettings, Simulator
    from fusedmlp.observables.born_directions import MIN_FIT_FRAMES, born_directions, fit_init, fit_slopes, fit_update
    from fusedmlp.observables.reweighting import BatchedQuantities, directional_quantities
    from fusedmlp.observables.stress import kinetic_tensor, stress_fluctuation
    from fusedmlp.reference import zhou2004
    from fusedmlp.reference.eam import graph_energy_fn
    from fusedmlp.structures import crystal

    jax.config.update("jax_enable_x64", True)
    p = zhou2004("Ti")
    u = graph_energy_fn(p)
    atoms = crystal("Ti", "hcp", A, COVERA, CELLS["demo"])
    box = np.asarray(atoms.cell)
    n = len(atoms)
    every = 10  # 20 fs at 2 fs
    s = MDSettings(thermostat=Thermostat("langevin", temperature=323.0, friction_per_ps=4.0), timestep_fs=2.0,
                   steps=(n_frames + 50) * every, record_every=every, chunk=5000, seed=seed)
    sim = Simulator(lambda params, r, b, g: u(r, b, g), np.full(n, TI_MASS), s, NeighborGraph(p.cutoff, skin=1.0))
    tr = sim.run(jnp.asarray(atoms.positions), box, progress=lambda m: None)
    pos, mom = tr.positions[50:], tr.momenta[50:]
    graphs = frame_graphs(pos, box, p.cutoff, extra=6)
    bq = BatchedQuantities(lambda params, r, b, g: u(r, b, g), 50)
    from fusedmlp.observables.reweighting import Frames
    fr = Frames(pos, box, graphs, np.zeros(len(pos)), {})
    q = {k: np.asarray(v) for k, v in bq.quantities(None, fr, True).items()}
    mass = units.mass_to_internal(TI_MASS)
    kin = np.asarray(jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(mom), mass))
    names = ["C11", "C33", "C44", "C12", "C13"]
    dirs = born_directions("hexagonal", names)
    y_all = np.einsum("di,fij,dj->fd", dirs.vectors, q["born_stiffness"], dirs.vectors)
    # the directional stiffnesses by the directional program, for the frames of one window, as a check
    dq = jax.jit(jax.vmap(directional_quantities(lambda params, r, b, g: u(r, b, g)), (None, 0, None, 0, 0)))
    k = min(8, len(pos))
    check = np.asarray(dq(None, jnp.asarray(pos[:k]), jnp.asarray(box), jax.tree_util.tree_map(lambda x: x[:k], graphs),
                          jnp.asarray(np.repeat(dirs.vectors[None], k, 0)))["born_directional"])
    assert np.allclose(check, y_all[:k], rtol=1e-8, atol=1e-10), "directional program ≠ full tensor"
    v = abs(np.linalg.det(box))

    adiabatic = jax.jit(lambda s, b, k, e: stress_fluctuation(s, b, k, e, v, n, 323.0)["adiabatic"])

    def constants(sel, born):
        c = adiabatic(jnp.asarray(q["born_stress"][sel]), born, jnp.asarray(kin[sel]), jnp.asarray(q["energy"][sel]))
        r = reduce_stiffness(units.ev_per_a3_to_gpa(np.asarray(c)), "hexagonal")
        return np.array([float(r[c]) for c in names])

    out = []
    for f in windows:
        # (directions per frame, control variates) -> σ added per window; per p: the fit
        exact, added = [], {(p, cv): [] for p in (1, 2) for cv in (False, True)}
        fit = {p: fit_init(dirs.count) for p in (1, 2)}
        # windows in time order, as a state point's trajectories: the control variates' slopes
        # are fitted on the earlier windows' frames under the trainer's assignment (offset 0)
        for start in range(0, len(pos) - f + 1, f):
            sel = slice(start, start + f)
            stress = jnp.asarray(q["born_stress"][sel])
            exact.append(constants(sel, jnp.asarray(q["born_stiffness"][sel])))
            slopes = {p: fit_slopes(fit[p]) for p in (1, 2)}
            est = {k: [] for k in added}
            for o in range(dirs.count):
                for p in (1, 2):
                    idx = dirs.assign(f, p, o)
                    y = jnp.asarray(np.take_along_axis(y_all[sel], idx, axis=1))
                    est[p, False].append(constants(sel, dirs.mean_stiffness(y, idx)))
                    est[p, True].append(constants(sel, dirs.mean_stiffness(y, idx, None, stress, slopes[p])))
            fitted = {p: np.all(np.asarray(fit[p].count) >= MIN_FIT_FRAMES) for p in (1, 2)}
            for key, values in est.items():
                if not key[1] or fitted[key[0]]:
                    added[key].append(np.std(values, axis=0))
            for p in (1, 2):
                idx = dirs.assign(f, p)
                fit[p] = fit_update(fit[p], np.take_along_axis(y_all[sel], idx, axis=1), idx, q["born_stress"][sel])
        rms = {f"{p}{'cv' if cv else ''}": np.sqrt(np.mean(np.square(v), axis=0)).tolist()
               for (p, cv), v in added.items()}
        out.append(dict(frames=f, windows=len(exact), thermal=np.std(exact, axis=0, ddof=1).tolist(),
                        added=rms, windows_cv=len(added[1, True]),
                        mean=np.mean(exact, axis=0).tolist(), names=names))
    return out


def _subprocess(args: list[str]) -> dict | None:
    """The JSON line a worker prints; None (and its error on stderr) if it failed."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        print(f"{' '.join(args)} failed (exit status {out.returncode}; -9: killed, e.g. out of memory):\n"
              f"{out.stderr[-2000:]}", file=sys.stderr, flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--models", nargs="*", default=["demo", "paper"], choices=sorted(CELLS))
    ap.add_argument("--directions", type=int, nargs="*", default=[0, 1],
                    help="strain directions per frame (0: the full Born tensor, the former estimator)")
    ap.add_argument("--frames", type=int, nargs="*", default=None,
                    help="frames per update (default: 20 for the demo model; for the paper model two of its "
                         "configured batches (16 with config/paper.yaml), at least the 9 Born directions the "
                         "targets read)")
    ap.add_argument("--batch", type=int, default=None,
                    help="frames per batch (default: the model's configuration, at most --frames)")
    ap.add_argument("--single", action="store_true",
                    help="one call per program (memory runs): cost includes compile, no compile time")
    ap.add_argument("--noise-frames", type=int, default=800, help="EAM frames for the noise (0: skip)")
    ap.add_argument("--noise-seed", type=int, default=0, help="seed of the EAM trajectory for the noise")
    ap.add_argument("--quick", action="store_true", help="demo model only, no noise")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--noise", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        model, d, f, b = args.one
        print(json.dumps(one(model, int(d), int(f), int(b), args.params, args.single)))
        return
    if args.noise:
        print(json.dumps(noise([20, 40, 90, 200], args.noise_frames, args.noise_seed)))
        return
    if args.quick:
        args.models, args.noise_frames = ["demo"], 0
    t_start = time.time()
    from model_throughput import make_params

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            params_path = str(Path(tmp) / f"{model}.npz")
            make_params(model == "demo", params_path)
            for f in args.frames or [20 if model == "demo" else max(2 * config_batch(model), 9)]:
                b = min(args.batch or config_batch(model), f)
                for d in args.directions:
                    r = _subprocess(["--one", model, str(d), str(f), str(b), "--params", params_path]
                                    + ["--single"] * args.single)
                    if r is None:
                        continue
                    rows.append(r)
                    print(f"  {model} {d} directions {f} frames: update {r['update_s'] / r['efv_s']:.1f} E+F/frame",
                          file=sys.stderr, flush=True)
    noise_rows = (_subprocess(["--noise", "--noise-frames", str(args.noise_frames), "--noise-seed",
                               str(args.noise_seed)]) or []) if args.noise_frames else []

    import jax
    print(f"DiffTRe update cost, JAX {jax.__version__} on {jax.devices()[0].platform}, float32 models with random "
          f"weights, hcp Ti, targets {', '.join(TARGETS)}")
    print("\nper frame; 'E+F' = one energy+forces+virial evaluation of the same cell, batched alike, same process")
    head = ("model", "atoms", "Born", "frames", "batch", "E+F ms", "Born terms ms", "= E+F", "update ms", "= E+F",
            "compile Born s", "compile update s", "peak RSS GB")
    print(" | ".join(head))
    for r in rows:
        born = "full 6×6" if r["directions"] == 0 else f"{r['directions']} dir/frame"
        print(" | ".join([r["model"], str(r["atoms"]), born, str(r["frames"]), str(r["batch"]),
                          f"{1e3 * r['efv_s']:.1f}", f"{1e3 * r['born_s']:.1f}", f"{r['born_s'] / r['efv_s']:.1f}",
                          f"{1e3 * r['update_s']:.1f}", f"{r['update_s'] / r['efv_s']:.1f}",
                          f"{r['born_compile_s']:.1f}", f"{r['update_compile_s']:.1f}", f"{r['peak_rss_gb']:.2f}"]))
    if noise_rows:
        print(f"\nnoise of the adiabatic constants (GPa), reference EAM, 36 atoms, 323 K, frames every 20 fs "
              f"({args.noise_frames} frames, seed {args.noise_seed}): thermal σ of the exact estimate over windows "
              "of F frames | σ the directional estimator adds over its assignments (rms over windows) with 1 "
              "and 2 directions per frame, without | with control variates, their slopes fitted on the earlier "
              "windows (rms over the windows after every direction has the frames the slopes need)")
        print(" | ".join(["F", "windows"] + [f"{c} thermal | 1 dir | 1 + c.v. | 2 dir | 2 + c.v."
                                             for c in noise_rows[0]["names"]]))
        for r in noise_rows:
            a = r["added"]
            print(" | ".join([str(r["frames"]), f"{r['windows']} ({r['windows_cv']})"]
                             + [" | ".join(f"{v:.2f}" for v in row) for row
                                in zip(r["thermal"], a["1"], a["1cv"], a["2"], a["2cv"])]))
    print(f"\ntotal {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
