"""Bottom-up trainer: weighted MSE on energies, forces and virials (Röcken & Zavadlav 2024).

    L = w_U ⟨(U − U_ref)²⟩ + w_F ⟨|F − F_ref|²⟩ + w_W ⟨(W − W_ref)²⟩_(virial mask)

with energies and virials optionally per atom (the paper uses totals of equal-size cells),
Adam with an exponentially decaying learning rate, mini-batches, validation every epoch and
the best validation parameters kept. ``dft_trainer`` returns init/epoch/evaluate functions in
the optax style, so the fused scheme can interleave its epochs with the experimental trainer's.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..compilation import Program
from ..model.batch import GraphData, batch_predictor, error_metrics, indexed_predictor, take
from ..model.params import trainable, with_trainable
from ..model.settings import ModelSettings


@dataclasses.dataclass(frozen=True)
class DFTTrainerSettings:
    epochs: int = 400
    batch_size: int = 30
    lr_start: float = 1e-3
    lr_end: float = 1e-5
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    virial_weight: float = 0.1
    energy_per_atom: bool = True
    virial_per_atom: bool = True
    patience: int = 50
    seed: int = 0
    head: int = 0


# --- loss -----------------------------------------------------------------------------------------------

def loss_terms(pred, batch, weight, ts: DFTTrainerSettings):
    """Mean squared errors of energy, forces and virial over the valid labels of a batch.

    ``weight`` (B,) is 1 for real configurations and 0 for batch padding.
    """
    u, f, w, _ = pred
    n = batch["n_atoms"]
    e_scale = n if ts.energy_per_atom else 1.0
    w_scale = n if ts.virial_per_atom else 1.0
    me = weight * batch["energy_mask"]
    mf = weight * batch["forces_mask"]
    mw = weight * batch["virial_mask"]
    le = jnp.sum(me * ((u - batch["energy"]) / e_scale) ** 2) / jnp.maximum(jnp.sum(me), 1.0)
    fsq = jnp.sum(jnp.where(batch["atom_mask"][..., None], (f - batch["forces"]) ** 2, 0.0), axis=(1, 2))
    lf = jnp.sum(mf * fsq) / jnp.maximum(jnp.sum(mf * 3 * n), 1.0)
    wsq = jnp.mean(((w - batch["virial"]) / w_scale[:, None, None]) ** 2, axis=(1, 2))
    lw = jnp.sum(mw * wsq) / jnp.maximum(jnp.sum(mw), 1.0)
    total = ts.energy_weight * le + ts.forces_weight * lf + ts.virial_weight * lw
    return total, (le, lf, lw)


# --- the trainer ------------------------------------------------------------------------------------------

class DFTState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jnp.ndarray


class DFTTrainer(NamedTuple):
    init: Callable  # params -> DFTState
    epoch: Callable  # (state, epoch_number) -> (state, mean train loss)
    evaluate: Callable  # (params, indices) -> metrics dict
    predict: Callable  # (params, indices) -> (U, F list, W)
    step: Callable  # (state, epoch_number, batch_number) -> (state, loss): one batch of an epoch
    n_batches: int
    # (params, epoch_number, batch_number) -> (loss, gradient of the trainable parameters): one
    # batch's loss and its gradient, for a scheme that adds it to another loss (joint switching)
    gradient: Callable
    optimizer: optax.GradientTransformation  # the Adam of ``step``, at the trainer's rates


def dft_trainer(settings: ModelSettings, data: GraphData, train_idx, ts: DFTTrainerSettings,
                dtype=jnp.float32, steps_per_epoch: int | None = None) -> DFTTrainer:
    """``steps_per_epoch``: the Adam steps the caller takes per epoch of ``ts.epochs``, which the
    learning rate decays over (default: one pass over ``train_idx``; a scheme that interleaves a
    few batches with other updates takes a different number)."""
    train_idx = np.asarray(train_idx)
    bsz = min(ts.batch_size, len(train_idx))
    n_batches = int(np.ceil(len(train_idx) / bsz))
    decay = (ts.lr_end / ts.lr_start) if ts.lr_start > 0 else 1.0
    schedule = optax.exponential_decay(ts.lr_start, decay_rate=decay,
                                       transition_steps=max(ts.epochs * (steps_per_epoch or n_batches), 1))
    optimizer = optax.adam(schedule)
    predict = batch_predictor(settings, data.capacity, ts.head)

    def loss(net, params, batch, weight):
        pred = predict(with_trainable(params, net), batch)
        total, parts = loss_terms(pred, batch, weight, ts)
        return total, (parts, pred[3])

    def value_and_gradient(params, batch, weight):
        (value, (_, overflow)), grads = jax.value_and_grad(loss, has_aux=True)(
            trainable(params), params, batch, weight)
        return value, grads, jnp.any(overflow)

    def update(state: DFTState, batch, weight):
        value, grads, overflow = value_and_gradient(state.params, batch, weight)
        updates, opt_state = optimizer.update(grads, state.opt_state, trainable(state.params))
        net = optax.apply_updates(trainable(state.params), updates)
        return DFTState(with_trainable(state.params, net), opt_state, state.step + 1), value, overflow

    update = Program(update)
    batch_gradient = Program(value_and_gradient)

    def init(params) -> DFTState:
        return DFTState(params, optimizer.init(trainable(params)), jnp.zeros((), jnp.int32))

    def batches(epoch: int):
        # The order depends only on (seed, epoch): a resumed run sees the same batches.
        order = np.random.default_rng([ts.seed, epoch]).permutation(train_idx)
        for b in range(n_batches):
            idx = order[b * bsz:(b + 1) * bsz]
            if len(idx) == 0:
                break
            weight = np.r_[np.ones(len(idx)), np.zeros(bsz - len(idx))]
            idx = np.r_[idx, np.full(bsz - len(idx), idx[0])]  # pad: one compiled shape
            yield idx, weight

    def check(overflow):
        if bool(overflow):
            raise RuntimeError("graph capacity overflow in training: edges were enumerated "
                               "exactly on the host, so this is a bug")

    def apply(state, idx, weight):
        state, value, overflow = update(state, take(data, idx, dtype), jnp.asarray(weight, dtype))
        check(overflow)
        return state, float(value)

    def epoch(state: DFTState, epoch_number: int):
        losses = []
        for idx, weight in batches(epoch_number):
            state, value = apply(state, idx, weight)
            losses.append(value)
        return state, float(np.mean(losses)) if losses else float("nan")

    def batch(epoch_number: int, batch_number: int):
        for b, (idx, weight) in enumerate(batches(epoch_number)):
            if b == batch_number % n_batches:
                return idx, weight
        raise IndexError(batch_number)

    def step(state: DFTState, epoch_number: int, batch_number: int):
        return apply(state, *batch(epoch_number, batch_number))

    def gradient(params, epoch_number: int, batch_number: int):
        idx, weight = batch(epoch_number, batch_number)
        value, grads, overflow = batch_gradient(params, take(data, idx, dtype), jnp.asarray(weight, dtype))
        check(overflow)
        return float(value), grads

    predict_indices = indexed_predictor(predict, data, dtype)

    def evaluate(params, indices) -> dict:
        """Errors and the training loss of configurations ``indices``: the loss is ``loss_terms``
        itself on the whole set (forces padded back to the batch layout), so validation scores
        exactly what training minimises."""
        u, f, w = predict_indices(params, indices)
        indices = np.asarray(indices)
        f_pad = np.zeros_like(data.forces[indices])
        for k, fk in enumerate(f):
            f_pad[k, :len(fk)] = fk
        total, _ = loss_terms((jnp.asarray(u, dtype), jnp.asarray(f_pad, dtype), jnp.asarray(w, dtype), None),
                              take(data, indices, dtype), jnp.ones(len(indices), dtype), ts)
        return {**error_metrics(data, indices, u, f, w), "loss": float(total)}

    return DFTTrainer(init, epoch, evaluate, predict_indices, step, n_batches, gradient, optimizer)
