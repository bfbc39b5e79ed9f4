"""Top-down (experimental) training with DiffTRe: the EXP update steps of ``training.loop`` and
the schemes that compose them with DFT steps (``sequential``: EXP only; ``fused``: EXP and DFT).

One EXP step is one state point's update: run an NVT trajectory with the current parameters
(continuing from that state point's previous final state) or, while the effective sample size of
its latest frames stays at or above ``reuse_ess``, reuse those (Thaler & Zavadlav 2021), reweight
the frames, and take one Adam step on its loss. An epoch visits every state point once. A scheme
with a DFT step either puts one DFT epoch after the EXP updates (``switching: epoch``) or
interleaves DFT batches after every EXP update (``switching: batch``), or before them where its
``steps`` list ``dft`` first; EXP and DFT steps keep their own optimizer states. With
``switching: joint`` there is one optimizer, the DFT trainer's, and one loss: each EXP update
takes a few Adam steps at the DFT rate, each on the state point's EXP loss plus ``dft_weight``
times one DFT batch's loss relative to the start model's, so the loss weights, not two
optimizers' step sizes, set where the trade settles.

Model selection (``exp_selection``): the parameters an epoch ends with are scored by their EXP
loss, reweighted to them from every state point's latest frames, and their DFT validation loss,
each relative to the start, as a weighted sum of logarithms; the best are kept, and training
stops after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import units
from ..md.neighbors import NeighborGraph, frame_graphs
from ..md.settings import Dynamics
from ..md.simulate import MDSettings, Simulator, lattice_site_momenta
from ..model.energy import energy_fn
from ..model.params import trainable, with_trainable
from ..model.settings import ModelSettings
from ..observables.born_directions import BornFit, born_directions, fit_init, fit_pool, fit_slopes, fit_update
from ..observables.reweighting import Frames, effective_sample_size, make_frames, reweighting_weights
from .difftre import Reweighter, StatePoint
from . import loop
from .steps import Penalty, dft_batch_step, dft_epoch_step, dft_penalty, dft_state

log = logging.getLogger(__name__)

_SHORT = {"pressure": "P", "pressure_a": "Pa", "pressure_c": "Pc",  # progress lines' names
          "pressure_slope": "dP/dT", "pressure_a_slope": "dPa/dT", "pressure_c_slope": "dPc/dT"}
STEPS = ("exp", "dft")  # the update steps a top-down scheme composes (config `schemes.<name>.steps`)


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
    # reuse a state point's trajectory while its effective sample size under the current
    # parameters stays at or above this (1: a fresh trajectory for every update, the paper's)
    reuse_ess: float = 1.0
    selection_window: int = 1  # epochs whose scores are averaged for model selection

    @property
    def dynamics(self) -> Dynamics:
        """Langevin dynamics of the trajectories (``md.settings``)."""
        return Dynamics(timestep_fs=self.timestep_fs, thermostat_kind="langevin",
                        friction_per_ps=self.friction_per_ps, seed=self.seed)

    def md(self, temperature: float) -> MDSettings:
        dyn = self.dynamics
        steps = dyn.steps(self.trajectory_ps)
        every = dyn.steps(self.record_every_fs * units.FS)
        return dyn.md(temperature, steps=steps - steps % every, record_every=every,
                      chunk=max(every, 500 - 500 % every))

    @property
    def skip_frames(self) -> int:
        return int(round(self.equilibration_ps / (self.record_every_fs * units.FS)))

    @property
    def frames_kept(self) -> int:
        """Frames of one trajectory that enter the reweighting (after the equilibration)."""
        md = self.md(300.0)
        recorded = md.steps // md.record_every
        return recorded - min(self.skip_frames, recorded - 2)


@dataclasses.dataclass(frozen=True)
class SchemeSettings:
    steps: tuple = ("exp", "dft")  # update steps of an epoch, in order
    switching: str = "epoch"  # epoch | batch | joint: how a DFT step enters the EXP updates
    # batch switching: DFT batches after each EXP update; joint: sub-steps (one batch each) of it
    dft_batches_per_update: int = 4
    dft_selection_weight: float = 1.0
    # joint switching: the EXP loss (GPa²-weighted, as the state points' targets) that a rise of
    # the DFT loss by its start value costs
    dft_weight: float = 100.0

    def __post_init__(self):
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown or "exp" not in self.steps:
            raise ValueError(f"steps {list(self.steps)}: expected an 'exp' step and steps among {list(STEPS)}")
        if self.switching not in ("epoch", "batch", "joint"):
            raise ValueError(f"switching {self.switching!r}: expected epoch, batch or joint")
        if self.dft_weight < 0:
            raise ValueError(f"dft_weight {self.dft_weight}: expected >= 0")

    @property
    def joint(self) -> bool:
        """One optimizer on the EXP loss plus the weighted DFT loss (joint switching)."""
        return "dft" in self.steps and self.switching == "joint"

    def dft_batches_per_epoch(self, n_state_points: int) -> int | None:
        """DFT batches an epoch takes with batch or joint switching (a dose beside or inside each
        state point's update); None where the DFT step is one pass over the data (epoch
        switching) or absent."""
        if "dft" not in self.steps or self.switching == "epoch":
            return None
        return n_state_points * self.dft_batches_per_update


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["positions", "momenta", "started", "frame_capacity", "graph_capacity",
                                "frame_positions", "frame_momenta", "u_ref", "served", "born_fit",
                                "born_current"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Walker:
    """One state point's sampling: where its next trajectory starts, the graph capacities its
    frames and MD used (they only grow, so a resumed run pads, and sums, exactly as the
    uninterrupted one), and its latest trajectory's kept frames with their sampling energies
    (what a reused trajectory and the end-of-epoch score reweight). Where the frames sample the
    Born stiffness along strain directions: the least-squares statistics of the directional
    stiffnesses on their control variates (``observables.born_directions``) over its earlier
    trajectories and, apart, over the latest one (added after its first update): its own frames
    are corrected with the slopes of every trajectory but that one (``ExpTrainer.born_slopes``)."""

    positions: jnp.ndarray  # (N, 3)
    momenta: jnp.ndarray  # (N, 3); drawn from the seed while ``started`` is false
    started: np.ndarray  # () bool
    frame_capacity: np.ndarray  # () int
    graph_capacity: np.ndarray  # () int
    frame_positions: jnp.ndarray  # (F, N, 3) kept frames of the latest trajectory
    frame_momenta: jnp.ndarray  # (F, N, 3)
    u_ref: jnp.ndarray  # (F,) their energies under the parameters that sampled them
    served: np.ndarray  # () updates the latest trajectory has served (0: none yet)
    born_fit: BornFit  # earlier trajectories; D directions (0 where the frames carry none)
    born_current: BornFit  # the latest trajectory


class ExpState(NamedTuple):
    opt_state: optax.OptState
    walkers: tuple  # one Walker per state point


class ExpTrainer:
    """DiffTRe updates over a set of state points for one model."""

    def __init__(self, settings: ModelSettings, state_points: list[StatePoint], ts: ExpTrainerSettings,
                 progress: Callable[[str], None] = log.debug, optimizer: optax.GradientTransformation | None = None):
        """``optimizer``: the updates' optimizer (default: Adam at the ``ts`` rates, decaying
        over one update per state point and epoch)."""
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
        if optimizer is None:
            epochs = max(ts.epochs * len(state_points), 1)
            schedule = optax.exponential_decay(ts.lr_start, epochs, ts.lr_end / ts.lr_start)
            optimizer = optax.adam(schedule, b1=ts.b1, b2=ts.b2)
        self.optimizer = optimizer

    def init(self, params, dtype) -> ExpState:
        zero, f = np.asarray(0), self.ts.frames_kept

        def walker(sp):
            n = np.shape(sp.positions)
            fit = fit_init(_direction_count(sp))
            return Walker(jnp.asarray(sp.positions, dtype), jnp.zeros(n, dtype), np.asarray(False), zero, zero,
                          jnp.zeros((f,) + n, dtype), jnp.zeros((f,) + n, dtype), jnp.zeros(f, dtype), zero,
                          fit, fit)

        return ExpState(self.optimizer.init(trainable(params)), tuple(walker(sp) for sp in self.sps))

    def frames(self, k: int, walkers: tuple) -> Frames:
        """The kept frames of state point k's latest trajectory (graphs rebuilt on the host, at
        the capacity the state points sharing its programs use)."""
        sp, w = self.sps[k], walkers[k]
        shared = [walkers[j] for j, other in enumerate(self.sims) if other is self.sims[k]]
        pos = np.asarray(w.frame_positions)
        graphs = frame_graphs(pos, sp.box, self.cutoff, extra=6,
                              min_capacity=max(int(v.frame_capacity) for v in shared))
        frames = make_frames(pos, np.asarray(w.frame_momenta), sp.masses, sp.box, graphs, np.asarray(w.u_ref), sp)
        return self.with_born_slopes(k, frames, walkers)[0]

    def with_born_slopes(self, k: int, frames: Frames, walkers: tuple) -> tuple[Frames, int | None]:
        """State point k's ``frames`` with their control-variate slopes (``born_slopes``) and the
        frame directions those are fitted on (None where the frames carry no directions)."""
        if not (frames.directional and len(walkers[k].born_fit.count)):
            return frames, None
        slopes, fitted = self.born_slopes(k, walkers)
        return dataclasses.replace(frames, fixed=dict(frames.fixed, born_slopes=slopes)), fitted

    def born_slopes(self, k: int, walkers: tuple) -> tuple[np.ndarray, int]:
        """The control-variate slopes (D, 3) for state point k's latest frames and the frame
        directions they are fitted on: every trajectory of the state points that share k's
        structure and strain directions but k's latest, whose frames they correct (fitted on
        those, they would bias the estimate: the regression estimator's O(1/n)). Its earlier
        trajectories and the others' are independent of its frames' directions, so the estimate
        stays unbiased, and the state points, visited in turn, lend each other their fits."""
        sp = self.sps[k]
        fits = [walkers[k].born_fit] + [
            f for j, other in enumerate(self.sps) if j != k and self.sims[j] is self.sims[k]
            and _direction_key(other) == _direction_key(sp) for f in (walkers[j].born_fit, walkers[j].born_current)]
        pooled = fit_pool(fits)
        return np.asarray(fit_slopes(pooled), np.float32), int(np.sum(pooled.count))

    def ess(self, k: int, params, frames: Frames) -> float:
        """Effective sample size (fraction) of state point k's frames under ``params``."""
        u = jnp.asarray(self.rews[k].energies(params, frames))
        return effective_sample_size(reweighting_weights(u, jnp.asarray(frames.u_ref), self.sps[k].temperature))

    def trajectory(self, k: int, params, walkers: tuple, epoch: int) -> tuple[Frames, Walker, dict]:
        sp, sim, w = self.sps[k], self.sims[k], walkers[k]
        # State points that share a simulator and reweighter share their graph capacities: one
        # compiled shape each (the third-order reweighting gradient is costly to compile).
        shared = [walkers[j] for j, other in enumerate(self.sims) if other is sim]
        capacity = max(int(v.graph_capacity) for v in shared)
        frame_capacity = max(int(v.frame_capacity) for v in shared)
        seed = int(np.random.default_rng([self.ts.seed, epoch, k]).integers(2**31))
        # the first trajectory starts at the lattice sites (or a given liquid's momenta); later
        # ones continue the last
        if bool(w.started):
            momenta = w.momenta
        elif sp.momenta is not None:
            momenta = jnp.asarray(sp.momenta, w.positions.dtype)
        else:
            momenta = lattice_site_momenta(sp.masses, sp.temperature, seed)
        traj = sim.run(w.positions, sp.box, params=params, momenta=momenta, seed=seed,
                       progress=self.progress, temperature=sp.temperature, capacity=capacity)
        skip = min(self.ts.skip_frames, len(traj.positions) - 2)
        pos, mom_f = traj.positions[skip:], traj.momenta[skip:]
        graphs = frame_graphs(pos, sp.box, self.cutoff, extra=6, min_capacity=frame_capacity)
        # (the control variates' slopes are attached by the step, from the walkers it returns)
        frames = make_frames(pos, mom_f, sp.masses, sp.box, graphs, np.zeros(len(pos)), sp)
        # θ̂ = the sampling parameters: the weights are exactly uniform at θ̂
        frames = dataclasses.replace(frames, u_ref=self.rews[k].energies(params, frames))
        dtype = w.positions.dtype
        if len(pos) != self.ts.frames_kept:
            raise RuntimeError(f"state point {sp.name}: kept {len(pos)} frames, expected {self.ts.frames_kept}")
        walker = Walker(jnp.asarray(traj.final["positions"], dtype), jnp.asarray(traj.final["momenta"], dtype),
                        np.asarray(True), np.asarray(graphs.neighbors.shape[-1]), np.asarray(traj.stats["capacity"]),
                        jnp.asarray(pos, dtype), jnp.asarray(mom_f, dtype), jnp.asarray(frames.u_ref, dtype),
                        np.asarray(0), fit_pool([w.born_fit, w.born_current]), fit_init(len(w.born_fit.count)))
        return frames, walker, traj.stats

    def update(self, k: int, params, opt_state, frames: Frames, penalty: Penalty | None = None, epoch: int = 0):
        """One Adam step on state point k's loss, or, with a ``penalty``, one step per penalty
        term on the loss plus that term. The reweighting gradient of the EXP loss (about 13
        energy+forces calls per frame) is computed once and held over the sub-steps: a
        linearisation over steps at the DFT rate, renewed every update. Returns the new
        parameters, optimizer state and a report (loss, predictions, ESS of the frames under the
        new parameters, the penalty's mean)."""
        sp, rew = self.sps[k], self.rews[k]
        loss, pred, _, grads, q = rew.evaluate_with_quantities(params, frames, sp)
        net, grads, values = trainable(params), trainable(grads), []
        for i in range(penalty.substeps if penalty is not None else 1):
            g = grads
            if penalty is not None:
                extra_grads, value = penalty.gradient(with_trainable(params, net), epoch, i)
                g = jax.tree_util.tree_map(jnp.add, grads, extra_grads)
                values.append(value)
            updates, opt_state = self.optimizer.update(g, opt_state, net)
            net = optax.apply_updates(net, updates)
        new = with_trainable(params, net)
        w = reweighting_weights(jnp.asarray(rew.energies(new, frames)), jnp.asarray(frames.u_ref),
                                sp.temperature)
        extra = {} if penalty is None else {penalty.report: float(np.mean(values))}
        return new, opt_state, dict(loss=loss, pred=pred, ess=effective_sample_size(w), extra=extra, quantities=q)

    def step(self, k: int, progress: Callable[[str], None], penalty: Penalty | None = None) -> loop.Step:
        """The loop step of state point k: frames (the latest trajectory's while its effective
        sample size under the current parameters is at least ``reuse_ess``, else a new
        trajectory) and an update on them (with ``penalty``: a second loss, joint switching)."""
        sp, ts = self.sps[k], self.ts

        def apply(params, state: ExpState, epoch: int):
            walker, frames, report, fresh = state.walkers[k], None, {}, False
            if ts.reuse_ess < 1.0 and int(walker.served) > 0:
                frames = self.frames(k, state.walkers)
                report[f"{sp.name}_ess_before"] = ess = self.ess(k, params, frames)
                if ess < ts.reuse_ess:
                    frames = None
            if frames is None:
                frames, walker, stats = self.trajectory(k, params, state.walkers, epoch)
                fresh = True
                report[f"{sp.name}_md_steps_per_s"] = stats["steps"] / stats["wall_s"]
            walker = dataclasses.replace(walker, served=np.asarray(int(walker.served) + 1))
            walkers = state.walkers[:k] + (walker,) + state.walkers[k + 1:]
            frames, fitted = self.with_born_slopes(k, frames, walkers)
            if fitted is not None:
                # frame directions the slopes are fitted on, and whether they correct anything yet
                report[f"{sp.name}_born_fit_frames"] = fitted
                report[f"{sp.name}_born_slopes"] = bool(np.any(frames.fixed["born_slopes"] != 0))
            params, opt_state, rep = self.update(k, params, state.opt_state, frames, penalty, epoch)
            q = rep["quantities"]
            if fresh and frames.directional and q is not None and "born_directional" in q:
                # the new frames join the control variates' fit: once per trajectory, at the
                # parameters that sampled it
                walker = dataclasses.replace(walker, born_current=fit_update(
                    walker.born_current, q["born_directional"], frames.fixed["born_index"], q["born_stress"]))
            report.update({f"{sp.name}_loss": rep["loss"], f"{sp.name}_ess": rep["ess"],
                           f"{sp.name}_trajectory_updates": int(walker.served)}, **rep["extra"])
            scalars = scalar_predictions(rep["pred"])
            report.update({f"{sp.name}_{n}": v for n, v in scalars.items()})
            progress(f"epoch {epoch + 1} {sp.name}: " + "".join(f"{_shown(n, v)}  " for n, v in scalars.items())
                + f"loss {rep['loss']:.4g}  ESS {rep['ess']:.3f}"
                + ("" if int(walker.served) == 1 else f"  (trajectory reused, update {int(walker.served)})"))
            walkers = state.walkers[:k] + (walker,) + state.walkers[k + 1:]
            return params, ExpState(opt_state, walkers), report

        return loop.Step(f"exp {sp.name}", "exp", apply)

    def score_step(self) -> loop.Step:
        """Measures, changes nothing: every state point's loss and predictions at the parameters
        the epoch ends with, reweighted from its latest frames (the selection scores those
        parameters by quantities measured with them), and the frames' effective sample size."""

        def apply(params, state: ExpState, epoch: int):
            report, total = {}, 0.0
            for k, sp in enumerate(self.sps):
                loss, pred, ess, _ = self.rews[k].evaluate(params, self.frames(k, state.walkers), sp,
                                                           gradient=False)
                total += loss
                report.update({f"{sp.name}_loss_end": loss, f"{sp.name}_ess_end": ess})
                # the kept parameters' own observables: those of the update above were measured
                # mid-epoch, before the steps that follow it (a DFT epoch can move the pressure
                # by a GPa)
                report.update({f"{sp.name}_{n}_end": v for n, v in scalar_predictions(pred).items()})
            report["exp_loss_end"] = total
            return params, state, report

        return loop.Step("exp score", "exp", apply)


def _direction_key(sp: StatePoint) -> tuple:
    """What a state point's strain directions depend on (``observables.born_directions``)."""
    return sp.symmetry, tuple(sp.stiffness_constants)


def _direction_count(sp: StatePoint) -> int:
    """Strain directions the frames of ``sp`` sample the Born stiffness along (0: none, or the
    full tensor)."""
    if sp.born_directions and sp.needs_born and sp.stiffness_constants:
        return born_directions(sp.symmetry, sp.stiffness_constants).count
    return 0


def _shown(name: str, value: float) -> str:
    """One prediction on a progress line, with its unit."""
    if name.startswith("C"):
        return f"{name} {value:.1f} GPa"
    return f"{_SHORT.get(name, name)} {value:+.3f} " + ("MPa/K" if name.endswith("_slope") else "GPa")


def scalar_predictions(pred: dict) -> dict:
    """The scalar observables of a state point's predictions (the log's columns; an RDF is not)."""
    return {n: v for n, v in pred.items() if np.ndim(v) == 0}


def scheme_steps(exp: ExpTrainer, scheme: SchemeSettings, dft_trainer, progress,
                 dft_reference: float | None = None) -> Callable[[int], list]:
    """The steps of one epoch: every state point's EXP update, with the DFT step after all of them
    (epoch switching), a few DFT batches after each (batch switching), or a few DFT batches'
    loss, relative to ``dft_reference``, inside each (joint switching)."""
    n = scheme.dft_batches_per_update
    if scheme.joint:
        steps = [exp.step(k, progress, dft_penalty(dft_trainer, k * n, n, scheme.dft_weight, dft_reference,
                                                   report="dft_train_loss"))
                 for k in range(len(exp.sps))]
        return lambda epoch: steps + [exp.score_step()]
    exp_steps = [exp.step(k, progress) for k in range(len(exp.sps))]
    if "dft" not in scheme.steps:
        steps = exp_steps
    else:
        # the parameters an epoch ends with are the ones scored and kept: `steps` says whether
        # they come from the DFT step (exp, dft: the paper) or from the EXP updates (dft, exp)
        dft_first = scheme.steps.index("dft") < scheme.steps.index("exp")
        if scheme.switching == "epoch":
            dft = [dft_epoch_step(dft_trainer, report="dft_train_loss")]
            steps = dft + exp_steps if dft_first else exp_steps + dft
        else:
            steps = []
            for k, e in enumerate(exp_steps):
                d = dft_batch_step(dft_trainer, k * n, n, report="dft_train_loss")
                steps += [d, e] if dft_first else [e, d]
    steps = steps + [exp.score_step()]
    return lambda epoch: steps


def exp_selection(state_points, dft_trainer, val_idx, params0, weight: float, window: int) -> loop.Selection:
    """Score the parameters an epoch ends with by quantities measured with them: the EXP loss
    reweighted to them (``score_step``) and their DFT validation loss, each relative to the
    start (the first epoch's EXP loss, measured before each update, and the start model's
    validation loss), as log(EXP rel.) + ``weight`` · log(DFT rel.). Logarithms make the trade
    the same wherever training is: a fraction of the EXP loss is worth that fraction of the DFT
    loss. A sum of the ratios instead prices a step by the start's EXP loss, which the pressure
    dominates: once that is gone, halving the EXP loss is worth less than a few per cent on the
    DFT loss, and selection keeps an epoch whose lattice is still off. A single epoch's EXP
    loss carries the noise of its trajectories: the score is the mean over the last ``window``
    epochs."""
    val_idx = val_idx if dft_trainer is not None and len(val_idx) else []
    dft_ref = dft_trainer.evaluate(params0, val_idx)["loss"] if len(val_idx) else None

    def select(epoch, start, end, row, rows) -> loop.Candidate:
        # the losses measured before each update, on frames sampled near those parameters
        out = dict(exp_loss=sum(row[f"{sp.name}_loss"] for sp in state_points))
        exp_ref = rows[0]["exp_loss"] if rows else out["exp_loss"]
        out["exp_loss_rel"] = row["exp_loss_end"] / exp_ref
        score = np.log(out["exp_loss_rel"])
        if dft_ref is not None:
            val = dft_trainer.evaluate(end, val_idx)
            out.update(val_loss=val["loss"], val_loss_rel=val["loss"] / dft_ref,
                       val_energy_rmse_meV_atom=1e3 * val["energy_rmse"],
                       val_forces_rmse_meV_A=1e3 * val["forces_rmse"])
            score += weight * np.log(out["val_loss_rel"])
        out["score"] = float(score)
        recent = [r["score"] for r in rows[-(window - 1):]] if window > 1 else []
        out["score_mean"] = float(np.mean(recent + [score]))
        return loop.Candidate(end, epoch + 1, out["score_mean"], out)

    return select


def fit_top_down(settings: ModelSettings, params0, state_points: list[StatePoint],
                 ts: ExpTrainerSettings, scheme: SchemeSettings, checkpoint_path,
                 dft=None, log_csv=None, inputs: dict | None = None,
                 progress: Callable[[str], None] = log.info,
                 max_epochs_this_run: int | None = None) -> loop.FitResult:
    """Train ``params0`` on the state points (and, with a DFT step, on DFT data).

    ``dft``: ``(trainer, train_idx, val_idx)`` with a ``training.dft.DFTTrainer``; required for a
    scheme with a DFT step, optional otherwise (then only used to report and select on the
    validation loss). ``inputs`` (checksums of the start model and data, the state points) join the
    settings in the checkpoint's key.
    """
    if "dft" in scheme.steps and dft is None:
        raise ValueError(f"scheme steps {list(scheme.steps)} need a DFT trainer")
    exp = ExpTrainer(settings, state_points, ts, progress=lambda m: progress("  MD " + m),
                     optimizer=dft[0].optimizer if scheme.joint else None)
    dtype = jax.tree_util.tree_leaves(params0)[0].dtype
    states = {"exp": exp.init(params0, dtype)}
    dft_reference = None
    if scheme.joint:
        # the penalty's unit: the start model's loss on the training data
        dft_reference = dft[0].evaluate(params0, dft[1])["loss"]
        progress(f"joint switching: DFT training loss of the start model {dft_reference:.4g}, weight "
                 f"{scheme.dft_weight:g} per unit of it")
    elif "dft" in scheme.steps:
        states["dft"] = dft_state(dft[0], params0)
    record = dict(exp=dataclasses.asdict(ts), scheme=dataclasses.asdict(scheme),
                  state_points=[sp.name for sp in state_points], inputs=inputs or {})

    def describe(row):
        return (f"EXP loss {row['exp_loss']:.4g} (during), {row['exp_loss_end']:.4g} (end)"
                + (f"  DFT val {row['val_loss']:.4g}" if "val_loss" in row else "")
                + f"  score {row['score']:.4g} (mean {row['score_mean']:.4g})"
                + "".join(f"  {sp.name} P {row[f'{sp.name}_pressure_end']:+.3f} GPa (end)" for sp in state_points
                          if f"{sp.name}_pressure_end" in row))

    return loop.fit(params0, states, scheme_steps(exp, scheme, dft[0] if dft else None, progress, dft_reference),
                    exp_selection(state_points, dft[0] if dft else None, dft[2] if dft else [], params0,
                                  scheme.dft_selection_weight, ts.selection_window),
                    loop.LoopSettings(ts.epochs, ts.patience), checkpoint_path, record, log_csv=log_csv,
                    describe=describe, progress=progress, max_epochs_this_run=max_epochs_this_run)
