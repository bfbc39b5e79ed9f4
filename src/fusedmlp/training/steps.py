"""Bottom-up update steps and selections for ``training.loop``: a whole DFT epoch, a few DFT
batches (interleaved with DiffTRe updates), the DFT loss as a penalty inside another step's
update, and model selection on the DFT validation loss.

The DFT step's state is the optimizer state and step count of its own Adam; the parameters come
from the loop, so a DFT step continues from whatever the previous step (DiffTRe or DFT) left.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import numpy as np
import optax

from .dft import DFTState, DFTTrainer
from .loop import Candidate, Step


class DFTStepState(NamedTuple):
    opt_state: optax.OptState
    step: object  # () int32: Adam steps taken, the learning-rate schedule's count


def dft_state(trainer: DFTTrainer, params) -> DFTStepState:
    st = trainer.init(params)
    return DFTStepState(st.opt_state, st.step)


def dft_epoch_step(trainer: DFTTrainer, report: str, state: str = "dft") -> Step:
    """One pass over the training data in mini-batches (order fixed by seed and epoch)."""

    def apply(params, s: DFTStepState, epoch: int):
        st, value = trainer.epoch(DFTState(params, s.opt_state, s.step), epoch)
        return st.params, DFTStepState(st.opt_state, st.step), {report: value}

    return Step("dft epoch", state, apply)


def dft_batch_step(trainer: DFTTrainer, first: int, count: int, report: str, state: str = "dft") -> Step:
    """Batches ``first .. first + count − 1`` of the epoch's order (wrapping around)."""

    def apply(params, s: DFTStepState, epoch: int):
        st, values = DFTState(params, s.opt_state, s.step), []
        for b in range(first, first + count):
            st, value = trainer.step(st, epoch, b)
            values.append(value)
        return st.params, DFTStepState(st.opt_state, st.step), {report: float(np.mean(values))}

    return Step(f"dft batches {first}-{first + count - 1}", state, apply)


class Penalty(NamedTuple):
    """A loss another step adds to its own, one term per sub-step: ``gradient(params, epoch, i)
    -> (gradient of the trainable parameters, value)`` of term ``i < substeps``; ``report``
    names the mean value in the epoch's log."""

    gradient: Callable
    substeps: int
    report: str


def dft_penalty(trainer: DFTTrainer, first: int, count: int, weight: float, reference: float,
                report: str) -> Penalty:
    """The DFT loss as a penalty (joint switching): term i is ``weight`` times the loss of batch
    ``first + i`` of the epoch's order (wrapping around) relative to ``reference`` (the start
    model's loss), for ``count`` sub-steps."""
    if not reference > 0:
        raise ValueError(f"reference DFT loss {reference}: expected > 0")
    scale = weight / reference

    def gradient(params, epoch: int, i: int):
        value, grads = trainer.gradient(params, epoch, first + i)
        return jax.tree_util.tree_map(lambda g: scale * g, grads), value

    return Penalty(gradient, count, report)


def validation_selection(trainer: DFTTrainer, indices):
    """Pre-training selection: the parameters after the epoch, scored by the DFT loss on
    ``indices`` (the validation split)."""

    def select(epoch, start, end, row, rows) -> Candidate:
        val = trainer.evaluate(end, indices)
        return Candidate(end, epoch + 1, val["loss"], dict(
            val_loss=val["loss"], val_energy_rmse_meV_atom=1e3 * val["energy_rmse"],
            val_forces_rmse_meV_A=1e3 * val["forces_rmse"], val_virial_rmse_meV_atom=1e3 * val["virial_rmse"]))

    return select
