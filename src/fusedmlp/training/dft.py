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
from ..data.dataset import Dataset
from ..model.dimenet import species_index
from ..model.graph import build_graph, neighbor_table
from ..model.potential import ModelSettings, energy_fn, trainable, with_trainable
from ..quantity import energy_forces_virial


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


# --- data on the device ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GraphData:
    """Every configuration of a dataset, padded to common shapes, with its candidate edges."""

    positions: np.ndarray  # (B, N, 3)
    box: np.ndarray  # (B, 3, 3)
    species: np.ndarray  # (B, N) embedding rows
    atom_mask: np.ndarray  # (B, N)
    neighbors: np.ndarray  # (B, N, K) exact neighbours within the cutoff
    shifts: np.ndarray  # (B, N, K, 3) int8 lattice shifts
    neighbor_mask: np.ndarray  # (B, N, K)
    energy: np.ndarray
    forces: np.ndarray
    virial: np.ndarray
    energy_mask: np.ndarray
    forces_mask: np.ndarray
    virial_mask: np.ndarray
    n_atoms: np.ndarray
    capacity: int  # K, the largest neighbour count of any atom in the dataset

    def __len__(self):
        return len(self.n_atoms)


def prepare(ds: Dataset, settings: ModelSettings, progress: Callable[[str], None] | None = None) -> GraphData:
    """Pad configurations and enumerate their edges once (exactly, with periodic images)."""
    try:
        spc_all = species_index(ds.species, settings.species)
    except ValueError as exc:
        raise ValueError(f"dataset: {exc}") from None
    b, n_pad = len(ds), int(ds.n_atoms.max())
    tables = []
    for i in range(b):
        c = ds.config(i)
        tables.append(neighbor_table(c["positions"], c["box"], settings.dimenet.cutoff))
        if progress and (i + 1) % 500 == 0:
            progress(f"neighbours of {i + 1}/{b} configurations")
    k = max(t[0].shape[1] for t in tables)
    out = dict(positions=np.zeros((b, n_pad, 3)), species=np.zeros((b, n_pad), np.int32),
               atom_mask=np.zeros((b, n_pad), bool), forces=np.zeros((b, n_pad, 3)),
               neighbors=np.zeros((b, n_pad, k), np.int32), shifts=np.zeros((b, n_pad, k, 3), np.int8),
               neighbor_mask=np.zeros((b, n_pad, k), bool))
    off = ds.offsets
    for i, (nbr, shf, msk) in enumerate(tables):
        n, m = ds.n_atoms[i], nbr.shape[1]
        s = slice(off[i], off[i + 1])
        out["positions"][i, :n] = ds.positions[s]
        out["species"][i, :n] = spc_all[s]
        out["atom_mask"][i, :n] = True
        out["forces"][i, :n] = ds.forces[s]
        out["neighbors"][i, :n, :m] = nbr
        out["shifts"][i, :n, :m] = shf.astype(np.int8)
        out["neighbor_mask"][i, :n, :m] = msk
    return GraphData(box=ds.box.copy(), energy=ds.energy.copy(), virial=ds.virial.copy(),
                     energy_mask=ds.energy_mask.copy(), forces_mask=ds.forces_mask.copy(),
                     virial_mask=ds.virial_mask.copy(), n_atoms=ds.n_atoms.copy(), capacity=k, **out)


def take(data: GraphData, idx, dtype) -> dict:
    idx = np.asarray(idx)
    f = lambda a: jnp.asarray(a[idx])  # noqa: E731
    return dict(positions=jnp.asarray(data.positions[idx], dtype), box=jnp.asarray(data.box[idx], dtype),
                species=f(data.species), atom_mask=f(data.atom_mask), neighbors=f(data.neighbors),
                shifts=jnp.asarray(data.shifts[idx], dtype), neighbor_mask=f(data.neighbor_mask), energy=jnp.asarray(data.energy[idx], dtype),
                forces=jnp.asarray(data.forces[idx], dtype), virial=jnp.asarray(data.virial[idx], dtype),
                energy_mask=f(data.energy_mask), forces_mask=f(data.forces_mask),
                virial_mask=f(data.virial_mask), n_atoms=jnp.asarray(data.n_atoms[idx], dtype))


# --- predictions and loss ---------------------------------------------------------------------------------

def batch_predictor(settings: ModelSettings, capacity: int, head: int = 0):
    """``predict(params, batch) -> (U, F, W, overflow)`` for a padded batch."""
    energy = energy_fn(settings, head)
    cutoff = settings.dimenet.cutoff

    def one(params, pos, box, spc, amask, nbr, shf, nmask):
        graph = build_graph(pos, box, nbr, shf, nmask, cutoff, capacity)
        efv = energy_forces_virial(lambda p, b: energy(params, p, b, spc, graph, amask))
        u, f, w = efv(pos, box)
        return u, f, w, graph.overflow

    def predict(params, batch):
        return jax.vmap(one, in_axes=(None,) + (0,) * 7)(
            params, batch["positions"], batch["box"], batch["species"], batch["atom_mask"],
            batch["neighbors"], batch["shifts"], batch["neighbor_mask"])

    return predict


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


def dft_trainer(settings: ModelSettings, data: GraphData, train_idx, ts: DFTTrainerSettings,
                dtype=jnp.float32, steps_per_epoch: int | None = None) -> DFTTrainer:
    train_idx = np.asarray(train_idx)
    bsz = min(ts.batch_size, len(train_idx))
    n_batches = steps_per_epoch or int(np.ceil(len(train_idx) / bsz))
    decay = (ts.lr_end / ts.lr_start) if ts.lr_start > 0 else 1.0
    schedule = optax.exponential_decay(ts.lr_start, transition_steps=max(ts.epochs * n_batches, 1),
                                       decay_rate=decay)
    optimizer = optax.adam(schedule)
    predict = batch_predictor(settings, data.capacity, ts.head)

    def loss(net, params, batch, weight):
        pred = predict(with_trainable(params, net), batch)
        total, parts = loss_terms(pred, batch, weight, ts)
        return total, (parts, pred[3])

    def update(state: DFTState, batch, weight):
        (value, (parts, overflow)), grads = jax.value_and_grad(loss, has_aux=True)(
            trainable(state.params), state.params, batch, weight)
        updates, opt_state = optimizer.update(grads, state.opt_state, trainable(state.params))
        net = optax.apply_updates(trainable(state.params), updates)
        return DFTState(with_trainable(state.params, net), opt_state, state.step + 1), value, jnp.any(overflow)

    update = Program(update)

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

    def apply(state, idx, weight):
        state, value, overflow = update(state, take(data, idx, dtype), jnp.asarray(weight, dtype))
        if bool(overflow):
            raise RuntimeError("graph capacity overflow in training: edges were enumerated "
                               "exactly on the host, so this is a bug")
        return state, float(value)

    def epoch(state: DFTState, epoch_number: int):
        losses = []
        for idx, weight in batches(epoch_number):
            state, value = apply(state, idx, weight)
            losses.append(value)
        return state, float(np.mean(losses)) if losses else float("nan")

    def step(state: DFTState, epoch_number: int, batch_number: int):
        for b, (idx, weight) in enumerate(batches(epoch_number)):
            if b == batch_number % n_batches:
                return apply(state, idx, weight)
        raise IndexError(batch_number)

    jit_predict = Program(predict)

    def predict_indices(params, indices, chunk: int = 32):
        indices = np.asarray(indices)
        us, fs, ws = [], [], []
        for s in range(0, len(indices), chunk):
            idx = indices[s:s + chunk]
            pad = chunk - len(idx)
            u, f, w, overflow = jit_predict(params, take(data, np.r_[idx, np.full(pad, idx[0])], dtype))
            assert not bool(jnp.any(overflow))
            us.append(np.asarray(u)[:len(idx)])
            ws.append(np.asarray(w)[:len(idx)])
            fs.extend(np.asarray(f)[k, :data.n_atoms[i]] for k, i in enumerate(idx))
        return np.concatenate(us), fs, np.concatenate(ws)

    def evaluate(params, indices) -> dict:
        u, f, w = predict_indices(params, indices)
        return error_metrics(data, np.asarray(indices), u, f, w, ts)

    return DFTTrainer(init, epoch, evaluate, predict_indices, step, n_batches)


def error_metrics(data: GraphData, idx, u, f, w, ts: DFTTrainerSettings | None = None) -> dict:
    """RMSE/MAE of energy per atom, force components and virial per atom (eV units), and the
    loss value of these predictions (if trainer settings are given)."""
    n = data.n_atoms[idx]
    em, fm, wm = data.energy_mask[idx], data.forces_mask[idx], data.virial_mask[idx]
    de = ((u - data.energy[idx]) / n)[em]
    df = np.concatenate([fi - data.forces[i, :len(fi)] for fi, i, keep in zip(f, idx, fm) if keep]
                        or [np.zeros((0, 3))]).ravel()
    dw = ((w - data.virial[idx]) / n[:, None, None])[wm].ravel()

    def rmse(x):
        return float(np.sqrt(np.mean(x**2))) if x.size else float("nan")

    def mae(x):
        return float(np.mean(np.abs(x))) if x.size else float("nan")

    out = {"energy_rmse": rmse(de), "energy_mae": mae(de), "forces_rmse": rmse(df),
           "forces_mae": mae(df), "virial_rmse": rmse(dw), "virial_mae": mae(dw),
           "n_energy": int(em.sum()), "n_forces": int(df.size), "n_virial": int(wm.sum())}
    if ts is not None:
        e_scale = n if ts.energy_per_atom else np.ones_like(n)
        w_scale = n if ts.virial_per_atom else np.ones_like(n)
        le = np.mean(((u - data.energy[idx]) / e_scale)[em] ** 2) if em.any() else 0.0
        lf = np.mean(df**2) if df.size else 0.0
        lw = np.mean(((w - data.virial[idx]) / w_scale[:, None, None])[wm] ** 2) if wm.any() else 0.0
        out["loss"] = float(ts.energy_weight * le + ts.forces_weight * lf + ts.virial_weight * lw)
    return out
