"""Multi-fidelity trainer: one shared network, one energy head per level of theory (Messerly et
al., Mach. Learn.: Sci. Technol. 6, 035066, 2025).

    L = Σ_levels l [ w_U^l ⟨(U_l − U_ref)²⟩_l + w_F^l ⟨|F_l − F_ref|²⟩_l + w_W^l ⟨(W_l − W_ref)²⟩_l ]
        + λ Σ d²   (``correction_l2``; d: the correction heads' output columns, ``head_form: correction``)

Each level's terms are the bottom-up trainer's (``dft.loss_terms``) over that level's
configurations, each predicted at its own head (forces and virials are derivatives of that head's
energy). A term whose weight is 0, or a label a level lacks (its mask), is left out exactly: its
mask is cleared before the loss, so it contributes no gradient at all (MACE masks a missing label
with weight 0 the same way rather than dropping the configuration). The paper's setting is low-level
energies and forces plus high-level energies only.

Batches are stratified: every step takes ``batch_size`` configurations of each level, each level in
its own seeded order and wrapping around, so that a level with a few dozen energies is in every
step instead of once in a while among hundreds of low-level configurations. An epoch is a fixed
number of steps (``steps_per_epoch``), so models trained on different amounts of data (the seed
paper's comparison) take the same number of optimizer steps.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..compilation import Program
from ..model.batch import GraphData, batch_predictor, error_metrics, indexed_predictor, take
from ..model.params import correction_norm2, trainable, with_trainable
from ..model.settings import ModelSettings
from . import loop
from .dft import DFTTrainerSettings, loss_terms
from .steps import DFTStepState

LABELS = ("energy", "forces", "virial")


@dataclasses.dataclass(frozen=True)
class LevelSettings:
    """One level of theory: which of its training configurations are used, how many per step,
    and the weight of each of its loss terms (0: not trained on)."""

    name: str
    train_size: int | None = None  # training structures whose labels at this level are used (None: all)
    batch_size: int = 4
    energy_weight: float = 10.0  # eV⁻² (per atom with energy_per_atom)
    forces_weight: float = 1.0  # (eV/Å)⁻²
    virial_weight: float = 1.0  # eV⁻² (per atom with virial_per_atom)

    def weight(self, label: str) -> float:
        return getattr(self, f"{label}_weight")


@dataclasses.dataclass(frozen=True)
class MultiFidelitySettings:
    levels: tuple[LevelSettings, ...]  # one head each, in this order
    epochs: int = 20
    steps_per_epoch: int = 25
    lr_start: float = 3e-3
    lr_end: float = 3e-4
    energy_per_atom: bool = True
    virial_per_atom: bool = True
    patience: int = 50
    seed: int = 0  # batch order and the choice of each level's training subset
    # ridge on the correction heads' output columns (head_form "correction"): the prior that the
    # levels differ little, so that a few energies cannot buy their fit with large spurious forces
    correction_l2: float = 0.0

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(lv.name for lv in self.levels)

    def level_loss(self, level: LevelSettings) -> DFTTrainerSettings:
        """The bottom-up loss settings of one level's terms."""
        return DFTTrainerSettings(energy_weight=level.energy_weight, forces_weight=level.forces_weight,
                                  virial_weight=level.virial_weight, energy_per_atom=self.energy_per_atom,
                                  virial_per_atom=self.virial_per_atom)


def _level_seed(seed: int, name: str, *more: int) -> np.random.Generator:
    # a level's random stream depends on its name, not on its position in the list
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *more])


def training_sets(level_of: np.ndarray, used: dict, train_idx, mfs: MultiFidelitySettings) -> dict[str, np.ndarray]:
    """Training configurations of each level: those of the training split with a label the level
    trains on, and of those the first ``train_size`` of a seeded order (so that smaller training
    sets are subsets of larger ones, as a learning curve needs)."""
    out = {}
    train_idx = np.asarray(train_idx)
    for k, lv in enumerate(mfs.levels):
        has = used["energy"] | used["forces"] | used["virial"]
        idx = train_idx[(level_of[train_idx] == k) & has[train_idx]]
        if lv.train_size is not None:
            if lv.train_size > len(idx):
                raise ValueError(f"level {lv.name!r}: train_size {lv.train_size} exceeds its {len(idx)} "
                                 "labelled training configurations")
            idx = np.sort(_level_seed(mfs.seed, lv.name).permutation(idx)[:lv.train_size])
        if len(idx) == 0:
            raise ValueError(f"level {lv.name!r} has no labelled training configurations")
        out[lv.name] = idx
    return out


def used_labels(data: GraphData, level_of: np.ndarray, mfs: MultiFidelitySettings) -> dict[str, np.ndarray]:
    """Per configuration and label: the label is there (its mask) and its level trains on it
    (weight > 0). Everything else is cleared, so it cannot reach the loss or its gradient."""
    out = {}
    for label in LABELS:
        weight = np.array([lv.weight(label) > 0 for lv in mfs.levels] + [False])  # -1: no level
        out[label] = np.asarray(getattr(data, f"{label}_mask"), bool) & weight[level_of]
    return out


def _stream(indices: np.ndarray, seed: int, name: str, start: int, count: int) -> np.ndarray:
    """Elements ``start .. start + count − 1`` of a level's endless sequence of seeded
    permutations of ``indices`` (a function of its arguments only: a resumed run sees the same)."""
    n = len(indices)
    out, q = [], start
    while len(out) < count:
        cycle, offset = divmod(q, n)
        perm = _level_seed(seed, name, 1, cycle).permutation(indices)
        take_n = min(count - len(out), n - offset)
        out.extend(perm[offset:offset + take_n])
        q += take_n
    return np.asarray(out, np.int64)


class MultiFidelityTrainer(NamedTuple):
    init: Callable  # params -> DFTStepState
    epoch: Callable  # (params, state, epoch) -> (params, state, mean loss)
    evaluate: Callable  # (params, {level: indices}) -> {"loss": total, level: metrics}
    batch: Callable  # (epoch, step) -> indices of that step's batch
    loss_batch: Callable  # indices -> (batch arrays ordered by level, static level slices)
    loss: Callable  # (params, batch arrays, slices) -> (total, (per-level (le, lf, lw), overflow))


def multifidelity_trainer(settings: ModelSettings, data: GraphData, level_of: np.ndarray,
                          train: dict[str, np.ndarray], mfs: MultiFidelitySettings,
                          dtype=jnp.float32) -> MultiFidelityTrainer:
    """``level_of`` (B,) is each configuration's index in ``mfs.levels`` (−1: not used);
    ``train`` the training configurations of each level (``training_sets``)."""
    used = used_labels(data, level_of, mfs)
    sizes = [min(lv.batch_size, len(train[lv.name])) for lv in mfs.levels]
    bounds = np.cumsum([0] + sizes)
    n_steps = mfs.epochs * mfs.steps_per_epoch
    decay = mfs.lr_end / mfs.lr_start if mfs.lr_start > 0 else 1.0
    optimizer = optax.adam(optax.exponential_decay(mfs.lr_start, max(n_steps, 1), decay))
    predict = batch_predictor(settings, data.capacity)  # each configuration at its level's head
    level_loss = [mfs.level_loss(lv) for lv in mfs.levels]

    def batch_arrays(idx):
        b = take(data, idx, dtype)
        for label in LABELS:
            b[f"{label}_mask"] = jnp.asarray(used[label][idx])
        return b

    def total_loss(params, batch, slices):
        """Σ over levels of the level's bottom-up loss on its part of the batch (static slices),
        plus the ridge on the correction columns."""
        pred = predict(params, batch)
        total, parts = 0.0, []
        for (lo, hi), ts in zip(slices, level_loss):
            if hi == lo:
                parts.append((0.0, 0.0, 0.0))
                continue
            part = {k: v[lo:hi] for k, v in batch.items()}
            value, terms = loss_terms(tuple(x[lo:hi] for x in pred), part, jnp.ones(hi - lo, dtype), ts)
            total = total + value
            parts.append(terms)
        if mfs.correction_l2 > 0:  # training only: the validation loss (``evaluate``) is the data's
            total = total + mfs.correction_l2 * correction_norm2(settings, params["net"])
        return total, (parts, pred[3])

    train_slices = tuple((int(bounds[k]), int(bounds[k + 1])) for k in range(len(sizes)))

    def update(params, opt_state, batch):
        def loss(net):
            return total_loss(with_trainable(params, net), batch, train_slices)
        (value, (_, overflow)), grads = jax.value_and_grad(loss, has_aux=True)(trainable(params))
        updates, opt_state = optimizer.update(grads, opt_state, trainable(params))
        return with_trainable(params, optax.apply_updates(trainable(params), updates)), opt_state, value, jnp.any(overflow)

    update = Program(update)

    def batch(epoch: int, step: int) -> np.ndarray:
        q = epoch * mfs.steps_per_epoch + step
        return np.concatenate([_stream(train[lv.name], mfs.seed, lv.name, q * n, n)
                               for lv, n in zip(mfs.levels, sizes)])

    def init(params) -> DFTStepState:
        return DFTStepState(optimizer.init(trainable(params)), jnp.zeros((), jnp.int32))

    def epoch(params, state: DFTStepState, epoch_number: int):
        opt_state, losses = state.opt_state, []
        for s in range(mfs.steps_per_epoch):
            params, opt_state, value, overflow = update(params, opt_state, batch_arrays(batch(epoch_number, s)))
            if bool(overflow):
                raise RuntimeError("graph capacity overflow in training: edges were enumerated "
                                   "exactly on the host, so this is a bug")
            losses.append(float(value))
        return params, DFTStepState(opt_state, state.step + mfs.steps_per_epoch), float(np.mean(losses))

    predict_indices = indexed_predictor(predict, data, dtype)

    def evaluate(params, sets: dict[str, np.ndarray]) -> dict:
        """Each level's errors on its configurations ``sets[level]`` (every label the data have,
        also those the level does not train on) and the training loss on them (only those it
        trains on); ``loss`` is the total over the levels, what the trainer minimises."""
        out, total = {}, 0.0
        for k, lv in enumerate(mfs.levels):
            idx = np.asarray(sets.get(lv.name, []), np.int64)
            if len(idx) == 0:
                continue
            u, f, w = predict_indices(params, idx)
            f_pad = np.zeros_like(data.forces[idx])
            for j, fj in enumerate(f):
                f_pad[j, :len(fj)] = fj
            value, _ = loss_terms((jnp.asarray(u, dtype), jnp.asarray(f_pad, dtype), jnp.asarray(w, dtype), None),
                                  batch_arrays(idx), jnp.ones(len(idx), dtype), level_loss[k])
            out[lv.name] = {**error_metrics(data, idx, u, f, w), "loss": float(value)}
            total += float(value)
        out["loss"] = total
        return out

    def loss_batch(idx):
        """Configurations ``idx`` as a training batch: ordered by level, with the level slices
        ``total_loss`` takes (the training loss of any set of configurations, for tests)."""
        idx = np.asarray(idx)
        counts = [int(np.sum(level_of[idx] == k)) for k in range(len(mfs.levels))]
        order = np.concatenate([idx[level_of[idx] == k] for k in range(len(mfs.levels))])
        b = np.cumsum([0] + counts)
        return batch_arrays(order), tuple((int(b[k]), int(b[k + 1])) for k in range(len(counts)))

    return MultiFidelityTrainer(init, epoch, evaluate, batch, loss_batch, total_loss)


def _row(metrics: dict, prefix: str) -> dict:
    row = {f"{prefix}_loss": metrics["loss"]}
    for level, m in metrics.items():
        if level != "loss":
            row[f"{prefix}_{level}_energy_rmse_meV_atom"] = 1e3 * m["energy_rmse"]
            row[f"{prefix}_{level}_forces_rmse_meV_A"] = 1e3 * m["forces_rmse"]
    return row


def fit_multifidelity(settings: ModelSettings, params, data: GraphData, level_of: np.ndarray, split: dict,
                      mfs: MultiFidelitySettings, checkpoint_path, log_csv=None, dtype=jnp.float32,
                      inputs: dict | None = None, progress=print, max_epochs_this_run=None) -> loop.FitResult:
    """Multi-fidelity training with ``training.loop``: one epoch step, the parameters with the
    lowest validation loss (the training loss on the validation configurations of every level)
    kept. ``split`` holds configuration indices of ``data``."""
    used = used_labels(data, level_of, mfs)
    train = training_sets(level_of, used, split["train"], mfs)
    trainer = multifidelity_trainer(settings, data, level_of, train, mfs, dtype)
    has = used["energy"] | used["forces"] | used["virial"]
    val = {lv.name: np.asarray(split["val"])[(level_of[split["val"]] == k) & has[split["val"]]]
           for k, lv in enumerate(mfs.levels)}
    select_on = val if any(len(v) for v in val.values()) else train

    def apply(p, state, epoch):
        p, state, value = trainer.epoch(p, state, epoch)
        return p, state, {"train_loss": value}

    def select(epoch, start, end, row, rows) -> loop.Candidate:
        metrics = trainer.evaluate(end, select_on)
        return loop.Candidate(end, epoch + 1, metrics["loss"], _row(metrics, "val"))

    def describe(row):
        levels = "  ".join(f"{lv.name}: E {row.get(f'val_{lv.name}_energy_rmse_meV_atom', np.nan):.1f} meV/atom "
                           f"F {row.get(f'val_{lv.name}_forces_rmse_meV_A', np.nan):.0f} meV/Å" for lv in mfs.levels)
        return f"train {row['train_loss']:.4g}  val {row['val_loss']:.4g}  | {levels}"

    progress("training configurations per level: " + ", ".join(f"{k} {len(v)}" for k, v in train.items()))
    step = loop.Step("multi-fidelity epoch", "mf", apply)
    record = {"trainer": dataclasses.asdict(mfs), "inputs": inputs or {}}
    return loop.fit(params, {"mf": trainer.init(params)}, lambda epoch: [step], select,
                    loop.LoopSettings(mfs.epochs, mfs.patience), checkpoint_path, record, log_csv=log_csv,
                    describe=describe, progress=progress, max_epochs_this_run=max_epochs_this_run)
