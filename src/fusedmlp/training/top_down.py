"""Top-down (experimental) training with DiffTRe, alone (``sequential``) or fused with the
bottom-up DFT trainer (``fused``).

One EXP epoch visits every state point once: run a fresh NVT trajectory with the current
parameters (continuing from the state point's previous final state), reweight its frames,
and take one Adam step on that state point's loss. The fused scheme alternates one EXP epoch and
one DFT epoch (``switching: epoch``) or interleaves DFT batches between EXP updates
(``switching: batch``); each trainer keeps its own optimizer state.

Model selection: the parameters at the start of an epoch are scored by the sum of the state
points' losses measured from that epoch's trajectories plus ``dft_selection_weight`` times their
DFT validation loss; the best are kept, and training stops after ``patience`` epochs without
improvement. A checkpoint after every epoch holds everything needed to continue.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import units
from ..md.ensembles import Thermostat
from ..md.neighbors import NeighborGraph, frame_graphs
from ..md.simulate import MDSettings, Simulator
from ..model.potential import ModelSettings, energy_fn, trainable, with_trainable
from ..tables import write_table
from . import checkpoint
from .difftre import (Frames, Reweighter, StatePoint, effective_sample_size, make_frames,
                      reweighting_weights)
from .pretrain import TrainingInterrupted, format_eta

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExpTrainerSettings:
    epochs: int = 6
    lr_start: float = 1e-3
    lr_end: float = 1e-4
    b1: float = 0.1
    b2: float = 0.4
    patience: int = 100
    timestep_fs: float = 1.0
    friction_per_ps: float = 4.0
    trajectory_ps: float = 2.0  # per update, including the equilibration
    equilibration_ps: float = 0.5  # discarded at the start of every trajectory
    record_every_fs: float = 20.0
    batch_frames: int = 16
    seed: int = 0

    def md(self, temperature: float) -> MDSettings:
        steps = _steps(self.trajectory_ps, self.timestep_fs)
        every = _steps(self.record_every_fs * units.FS, self.timestep_fs)
        return MDSettings(thermostat=Thermostat("langevin", temperature=temperature,
                                                friction_per_ps=self.friction_per_ps),
                          timestep_fs=self.timestep_fs, steps=steps - steps % every,
                          record_every=every, chunk=max(every, 500 - 500 % every), seed=self.seed)

    @property
    def skip_frames(self) -> int:
        return int(round(self.equilibration_ps / (self.record_every_fs * units.FS)))


def _steps(ps: float, timestep_fs: float) -> int:
    return max(1, int(round(ps / (timestep_fs * units.FS))))


@dataclasses.dataclass(frozen=True)
class SchemeSettings:
    scheme: str = "fused"  # sequential | fused
    switching: str = "epoch"  # epoch | batch
    dft_batches_per_update: int = 4  # batch switching: DFT batches after each EXP update
    dft_selection_weight: float = 1.0

    def __post_init__(self):
        if self.scheme not in ("sequential", "fused"):
            raise ValueError(f"scheme {self.scheme!r}: expected sequential or fused")
        if self.switching not in ("epoch", "batch"):
            raise ValueError(f"switching {self.switching!r}: expected epoch or batch")


@dataclasses.dataclass
class TopDownResult:
    best_params: dict
    best_epoch: int  # epochs of training behind the selected parameters (0: the start model)
    rows: list[dict]
    stopped_early: bool


class ExpTrainer:
    """DiffTRe updates over a set of state points for one model."""

    def __init__(self, settings: ModelSettings, state_points: list[StatePoint], ts: ExpTrainerSettings,
                 progress: Callable[[str], None] = log.debug):
        self.sps, self.ts, self.progress = state_points, ts, progress
        energy = energy_fn(settings)
        self.cutoff = settings.dimenet.cutoff
        # state points with the same atoms share one compiled simulator and reweighter (the
        # temperature is a run-time argument), so a new state point costs no compilation
        self.sims, self.rews, shared = [], [], {}
        for sp in state_points:
            key = (tuple(np.asarray(sp.species).tolist()), tuple(np.asarray(sp.masses).tolist()))
            if key not in shared:
                spc = jnp.asarray(sp.species)

                def md_energy(params, r, box, graph, spc=spc):
                    return energy(params, r, box, spc, graph)

                shared[key] = (Simulator(md_energy, sp.masses, ts.md(sp.temperature),
                                         NeighborGraph(self.cutoff, skin=1.0)),
                               Reweighter(md_energy, ts.batch_frames))
            self.sims.append(shared[key][0])
            self.rews.append(shared[key][1])
        epochs = max(ts.epochs * len(state_points), 1)
        schedule = optax.exponential_decay(ts.lr_start, epochs, ts.lr_end / ts.lr_start)
        self.optimizer = optax.adam(schedule, b1=ts.b1, b2=ts.b2)

    def init(self, params):
        return self.optimizer.init(trainable(params))

    def md_start(self, dtype) -> dict:
        """Where each state point's trajectories start: positions, and no momenta yet."""
        return {f"sp{k}_positions": jnp.asarray(sp.positions, dtype) for k, sp in enumerate(self.sps)}

    def trajectory(self, k: int, params, md_state: dict, epoch: int) -> tuple[Frames, dict]:
        sp, sim = self.sps[k], self.sims[k]
        mom = md_state.get(f"sp{k}_momenta")
        # Graph capacities only grow, and state points that share a simulator and reweighter
        # share them: one compiled shape each (the third-order reweighting gradient is costly to
        # compile). They are kept in the MD state, so a resumed run pads (and sums) exactly as
        # the uninterrupted run did.
        shared = [j for j, other in enumerate(self.sims) if other is sim]
        sim.ng.capacity = max([sim.ng.capacity] + [int(md_state.get(f"sp{j}_graph_capacity", 0)) for j in shared])
        frame_capacity = max(int(md_state.get(f"sp{j}_capacity", 0)) for j in shared)
        traj = sim.run(md_state[f"sp{k}_positions"], sp.box, params=params, momenta=mom,
                       seed=int(np.random.default_rng([self.ts.seed, epoch, k]).integers(2**31)),
                       progress=self.progress, temperature=sp.temperature)
        skip = min(self.ts.skip_frames, len(traj.positions) - 2)
        pos, mom_f = traj.positions[skip:], traj.momenta[skip:]
        graphs = frame_graphs(pos, sp.box, self.cutoff, extra=6, min_capacity=frame_capacity)
        frames = make_frames(pos, mom_f, sp.masses, sp.box, graphs, np.zeros(len(pos)), sp)
        frames.u_ref = self.rews[k].energies(params, frames)  # θ̂: weights exactly uniform at θ̂
        dtype = md_state[f"sp{k}_positions"].dtype
        new_state = dict(md_state)
        new_state[f"sp{k}_positions"] = jnp.asarray(traj.final["positions"], dtype)
        new_state[f"sp{k}_momenta"] = jnp.asarray(traj.final["momenta"], dtype)
        new_state[f"sp{k}_capacity"] = np.asarray(graphs.neighbors.shape[-1])
        new_state[f"sp{k}_graph_capacity"] = np.asarray(sim.ng.capacity)
        return frames, new_state, traj.stats

    def update(self, k: int, params, opt_state, frames: Frames):
        """One Adam step on state point k; returns the new parameters, optimizer state and a
        report (loss, predictions, ESS of the frames under the new parameters)."""
        sp, rew = self.sps[k], self.rews[k]
        loss, pred, _, grads = rew.evaluate(params, frames, sp)
        net = trainable(params)
        updates, opt_state = self.optimizer.update(trainable(grads), opt_state, net)
        new = with_trainable(params, optax.apply_updates(net, updates))
        w = reweighting_weights(jnp.asarray(rew.energies(new, frames)), jnp.asarray(frames.u_ref),
                                sp.temperature)
        return new, opt_state, dict(loss=loss, pred=pred, ess=effective_sample_size(w))


def fit_top_down(settings: ModelSettings, params0, state_points: list[StatePoint],
                 ts: ExpTrainerSettings, scheme: SchemeSettings, checkpoint_path,
                 dft=None, log_csv=None, progress: Callable[[str], None] = log.info,
                 max_epochs_this_run: int | None = None) -> TopDownResult:
    """Train ``params0`` on the state points (and, for ``fused``, on DFT data).

    ``dft``: ``(trainer, train_idx, val_idx)`` with a ``training.dft.DFTTrainer``; required for the
    fused scheme, optional otherwise (then only used to report and select on the validation loss).
    """
    exp = ExpTrainer(settings, state_points, ts, progress=lambda m: progress("  MD " + m))
    if scheme.scheme == "fused" and dft is None:
        raise ValueError("the fused scheme needs a DFT trainer")
    dtype = jax.tree_util.tree_leaves(params0)[0].dtype
    params = params0
    exp_opt = exp.init(params)
    dft_state = dft[0].init(params) if dft is not None else None
    md_state = exp.md_start(dtype)
    best, best_score, best_epoch, bad, rows, start = params0, math.inf, 0, 0, [], 0
    checkpoint_path = Path(checkpoint_path)
    record = dict(exp=dataclasses.asdict(ts), scheme=dataclasses.asdict(scheme),
                  state_points=[sp.name for sp in state_points])
    templates = {"params": params, "exp_opt": exp_opt, "best": best, "md": _md_template(md_state, exp)}
    if dft_state is not None:
        templates["dft_opt"] = dft_state.opt_state
    if checkpoint_path.exists():
        trees, rec = checkpoint.load(checkpoint_path, templates)
        if rec.get("settings") != record:
            raise ValueError(f"{checkpoint_path}: checkpoint was written with other settings; "
                             "delete it to start afresh")
        params, exp_opt, best, md_state = trees["params"], trees["exp_opt"], trees["best"], trees["md"]
        if dft_state is not None:
            dft_state = dft_state._replace(params=params, opt_state=trees["dft_opt"],
                                           step=jnp.asarray(rec["dft_step"], jnp.int32))
        best_score, best_epoch, bad, rows, start = (rec["best_score"], rec["best_epoch"], rec["bad"],
                                                    rec["rows"], rec["epoch"])
        progress(f"resuming from {checkpoint_path} after epoch {start}")
        if rec.get("finished"):
            return TopDownResult(best, best_epoch, rows, rec.get("stopped_early", False))

    def dft_val(p):
        if dft is None or not len(dft[2]):
            return {}
        return dft[0].evaluate(p, dft[2])

    stopped_early = False
    t_run = time.time()
    val_start = dft_val(params)
    for epoch in range(start, ts.epochs):
        t0 = time.time()
        theta_start = params
        row = dict(epoch=epoch + 1)
        exp_loss, dft_losses = 0.0, []
        for k, sp in enumerate(state_points):
            frames, md_state, stats = exp.trajectory(k, params, md_state, epoch)
            params, exp_opt, rep = exp.update(k, params, exp_opt, frames)
            exp_loss += rep["loss"]
            row[f"{sp.name}_loss"] = rep["loss"]
            row[f"{sp.name}_ess"] = rep["ess"]
            row[f"{sp.name}_md_steps_per_s"] = stats["steps"] / stats["wall_s"]
            for name, value in rep["pred"].items():
                if np.ndim(value) == 0:
                    row[f"{sp.name}_{name}"] = value
            progress(f"epoch {epoch + 1} {sp.name}: " + "  ".join(
                f"{n} {v:.1f}" if n != "pressure" else f"P {v:+.3f}"
                for n, v in rep["pred"].items() if np.ndim(v) == 0)
                + f" GPa  loss {rep['loss']:.4g}  ESS {rep['ess']:.3f}")
            if scheme.scheme == "fused" and scheme.switching == "batch":
                for b in range(scheme.dft_batches_per_update):
                    dft_state = dft_state._replace(params=params)
                    dft_state, value = dft[0].step(dft_state, epoch, k * scheme.dft_batches_per_update + b)
                    params = dft_state.params
                    dft_losses.append(value)
        if scheme.scheme == "fused" and scheme.switching == "epoch":
            dft_state = dft_state._replace(params=params)
            dft_state, value = dft[0].epoch(dft_state, epoch)
            params = dft_state.params
            dft_losses.append(value)
        if not all(math.isfinite(v) for v in [exp_loss, *dft_losses]):
            raise FloatingPointError(f"epoch {epoch + 1}: loss is not finite; lower the learning rate")
        # score the parameters this epoch's trajectories were run with
        score = exp_loss + scheme.dft_selection_weight * val_start.get("loss", 0.0)
        row.update(exp_loss=exp_loss, dft_train_loss=float(np.mean(dft_losses)) if dft_losses else float("nan"),
                   score_of_start=score)
        if val_start:
            row.update(val_loss_of_start=val_start["loss"],
                       val_energy_rmse_meV_atom=1e3 * val_start["energy_rmse"],
                       val_forces_rmse_meV_A=1e3 * val_start["forces_rmse"])
        if score < best_score:
            best, best_score, best_epoch, bad = theta_start, score, epoch, 0
        else:
            bad += 1
        val_start = dft_val(params)
        dt = time.time() - t0
        row.update(seconds=dt, best_epoch=best_epoch)
        rows.append(row)
        stopped_early = bad >= ts.patience
        finished = stopped_early or epoch + 1 == ts.epochs
        trees = {"params": params, "exp_opt": exp_opt, "best": best, "md": md_state}
        if dft_state is not None:
            trees["dft_opt"] = dft_state.opt_state
        checkpoint.save(checkpoint_path, trees, dict(
            epoch=epoch + 1, best_score=best_score, best_epoch=best_epoch, bad=bad, rows=rows,
            settings=record, finished=finished, stopped_early=stopped_early,
            dft_step=int(dft_state.step) if dft_state is not None else 0))
        if log_csv is not None:
            write_table(rows, csv_path=log_csv)
        done = epoch + 1 - start
        eta = (time.time() - t_run) / done * (ts.epochs - epoch - 1)
        progress(f"epoch {epoch + 1}/{ts.epochs}  EXP loss {exp_loss:.4g}"
                 + (f"  DFT val {val_start['loss']:.4g}" if val_start else "")
                 + f"  score(start) {score:.4g}  {dt:.0f} s/epoch, ETA {format_eta(eta)}")
        if stopped_early:
            progress(f"early stop: no improvement for {ts.patience} epochs; best: parameters at the "
                     f"start of epoch {best_epoch + 1}")
            break
        if max_epochs_this_run is not None and done >= max_epochs_this_run:
            raise TrainingInterrupted(f"stopped after {done} epochs (max_epochs_this_run)")
    return TopDownResult(best, best_epoch, rows, stopped_early)


def _md_template(md_state: dict, exp: ExpTrainer) -> dict:
    """Checkpoint template: positions, momenta and graph capacities of every state point."""
    out = dict(md_state)
    for k in range(len(exp.sps)):
        out.setdefault(f"sp{k}_momenta", jnp.zeros_like(md_state[f"sp{k}_positions"]))
        out.setdefault(f"sp{k}_capacity", np.asarray(0))
        out.setdefault(f"sp{k}_graph_capacity", np.asarray(0))
    return out
