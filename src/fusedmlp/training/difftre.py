"""Differentiable trajectory reweighting (DiffTRe; Thaler & Zavadlav, Nat. Commun. 12, 6884, 2021).

A trajectory sampled with parameters θ̂ gives ensemble averages at nearby θ by reweighting its
frames,

    w_i = softmax_i(−β [U_θ(x_i) − U_θ̂(x_i)]),     ⟨O⟩_θ = Σ_i w_i O_θ(x_i),

and the gradient of a loss of such averages flows through the weights and through observables
that depend on θ themselves (Born stress and stiffness). The effective sample size
exp(−Σ w ln w)/F says how far θ has moved from the trajectory's θ̂.

The gradient is computed in two passes so memory stays bounded by one batch of frames: the
per-frame quantities q_i(θ) (energy, Born terms) are evaluated in batches; the loss, a function of
all q_i through the weighted averages, gives the cotangents ∂L/∂q_i; and ∂L/∂θ = Σ_i (∂q_i/∂θ)ᵀ
∂L/∂q_i is accumulated batch by batch with vector–Jacobian products. When all frames fit in one
batch, one compiled program computes the loss and its gradient directly (the forward pass of the
second pass is then not repeated); the state point enters it as arguments (``StateSpec``), so
state points with the same atoms and targets share it.

Observables and targets are configuration: a state point names targets (``C11`` … ``C66`` of the
stress-fluctuation tensor, reduced by the crystal's symmetry, ``pressure``, or an ``rdf`` table);
each target has a weight, and the state point's loss is Σ_k weight_k (pred_k − target_k)².
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import elastic, units
from ..compilation import Program
from ..observables.stress import born_terms, frame_pressure, kinetic_tensor, stress_fluctuation
from ..observables.structure import rdf_frames

VOIGT_NAMES = ("11", "22", "33", "44", "55", "66")
SYMMETRIES = {"hexagonal": ("C11", "C33", "C44", "C12", "C13"), "cubic": ("C11", "C12", "C44"),
              "none": tuple(f"C{i}{j}" for i in range(1, 7) for j in range(i, 7))}


@dataclasses.dataclass
class StatePoint:
    """One thermodynamic state with experimental targets (GPa for stresses and constants)."""

    name: str
    temperature: float  # K
    positions: np.ndarray  # (N, 3) starting positions, Å
    box: np.ndarray  # (3, 3) fixed box (rows = lattice vectors)
    species: np.ndarray  # (N,) model species indices
    masses: np.ndarray  # (N,) u
    targets: dict  # name -> value; "rdf" -> (r, g) arrays
    weights: dict  # name -> loss weight
    symmetry: str = "hexagonal"

    def __post_init__(self):
        if self.symmetry not in SYMMETRIES:
            raise ValueError(f"state point {self.name}: symmetry {self.symmetry!r}, expected one of "
                             f"{tuple(SYMMETRIES)}")
        allowed = set(SYMMETRIES[self.symmetry]) | {"pressure", "rdf"}
        unknown = set(self.targets) - allowed
        if unknown:
            raise ValueError(f"state point {self.name}: unknown targets {sorted(unknown)} for "
                             f"{self.symmetry} symmetry; expected some of {sorted(allowed)}")
        missing = set(self.targets) - set(self.weights)
        if missing:
            raise ValueError(f"state point {self.name}: no loss weight for {sorted(missing)}")
        extra = set(self.weights) - set(self.targets)
        if extra:
            raise ValueError(f"state point {self.name}: loss weights {sorted(extra)} have no target")

    @property
    def elastic_targets(self) -> list[str]:
        return [k for k in self.targets if k.startswith("C")]

    @property
    def needs_born(self) -> bool:
        return bool(self.elastic_targets) or "pressure" in self.targets

    def spec(self, dtype=None) -> "StateSpec":
        dtype = np.asarray(self.positions).dtype if dtype is None else dtype
        targets = {k: np.asarray(v[1] if k == "rdf" else v, dtype) for k, v in self.targets.items()}
        return StateSpec(np.asarray(self.temperature, dtype), np.asarray(abs(np.linalg.det(self.box)), dtype),
                         targets, {k: np.asarray(v, dtype) for k, v in self.weights.items()},
                         self.symmetry, len(self.positions))


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["temperature", "volume", "targets", "weights"],
                   meta_fields=["symmetry", "n_atoms"])
@dataclasses.dataclass(frozen=True)
class StateSpec:
    """What the loss needs of a state point, as arrays (traced in compiled programs): the
    temperature (K), volume (Å³), target values (the RDF target as g on its bins) and weights."""

    temperature: jnp.ndarray
    volume: jnp.ndarray
    targets: dict
    weights: dict
    symmetry: str
    n_atoms: int

    @property
    def elastic_targets(self) -> list[str]:
        return [k for k in self.targets if k.startswith("C")]

    @property
    def needs_born(self) -> bool:
        return bool(self.elastic_targets) or "pressure" in self.targets


def _spec(sp) -> StateSpec:
    return sp.spec() if isinstance(sp, StatePoint) else sp


def reweighting_weights(u, u_ref, temperature: float):
    """w_i = softmax(−β[U_θ − U_θ̂]) over frames."""
    return jax.nn.softmax(-(u - u_ref) / units.kT(temperature))


def effective_sample_size(w) -> float:
    """exp(−Σ w ln w) / F: 1 for uniform weights."""
    w = np.asarray(w, float)
    nz = w[w > 0]
    return float(np.exp(-np.sum(nz * np.log(nz))) / len(w))


def reduce_stiffness(c, symmetry: str) -> dict:
    """Named constants of a 6×6 stiffness (jax-traceable)."""
    if symmetry == "hexagonal":
        return elastic.hexagonal(c)
    if symmetry == "cubic":
        return elastic.cubic(c)
    return {f"C{i + 1}{j + 1}": 0.5 * (c[i, j] + c[j, i]) for i in range(6) for j in range(i, 6)}


def predictions(q: dict, fixed: dict, weights, sp: StatePoint | StateSpec) -> dict:
    """Reweighted observables of one state point (GPa; ``rdf`` as an array)."""
    out = {}
    sp = _spec(sp)
    volume = sp.volume
    if sp.needs_born:
        # momenta do not depend on θ: their plain mean is the exact reweighted expectation, and
        # leaving it out of the weights removes noise from the gradient
        kin = jnp.broadcast_to(jnp.mean(fixed["kinetic"], axis=0), fixed["kinetic"].shape)
        p = frame_pressure(q["born_stress"], kin, volume, weights)
        out["pressure"] = units.ev_per_a3_to_gpa(jnp.mean(p[:3]))
    if sp.elastic_targets:
        c = stress_fluctuation(q["born_stress"], q["born_stiffness"], volume, sp.n_atoms,
                               sp.temperature, weights)
        out.update(reduce_stiffness(units.ev_per_a3_to_gpa(c), sp.symmetry))
    if "rdf" in sp.targets:
        out["rdf"] = jnp.tensordot(weights, fixed["rdf"], axes=1)
    return out


def state_loss(pred: dict, sp: StatePoint | StateSpec):
    total = 0.0
    sp = _spec(sp)
    for name, target in sp.targets.items():
        if name == "rdf":
            total = total + sp.weights[name] * jnp.mean((pred["rdf"] - target) ** 2)
        else:
            total = total + sp.weights[name] * (pred[name] - target) ** 2
    return total


def reweighted_loss(q: dict, u_ref, fixed: dict, sp: StatePoint | StateSpec):
    """(loss, (predictions, weights)) of per-frame quantities ``q`` sampled at U_θ̂ = ``u_ref``."""
    sp = _spec(sp)
    w = reweighting_weights(q["energy"], u_ref, sp.temperature)
    pred = predictions(q, fixed, w, sp)
    return state_loss(pred, sp), (pred, w)


def frame_quantities(energy: Callable, with_born: bool) -> Callable:
    """``q(params, positions, box, graph) -> dict`` per frame for ``energy(params, r, box, graph)``."""

    def q(params, positions, box, graph):
        def u(r, b, graph):
            return energy(params, r, b, graph)

        out = {"energy": u(positions, box, graph)}
        if with_born:
            out["born_stress"], out["born_stiffness"] = born_terms(u)(positions, box, graph=graph)
        return out

    return q


@dataclasses.dataclass
class Frames:
    """Recorded frames of one state point with what does not depend on θ."""

    positions: np.ndarray  # (F, N, 3)
    box: np.ndarray  # (3, 3)
    graphs: object  # stacked Graph (F leading)
    u_ref: np.ndarray  # (F,) U_θ̂ of the sampling parameters
    fixed: dict  # kinetic tensors, per-frame RDFs


def make_frames(positions, momenta, masses_u, box, graphs, u_ref, sp: StatePoint) -> Frames:
    mass = units.mass_to_internal(np.asarray(masses_u, float))
    kin = np.asarray(jax.vmap(kinetic_tensor, (0, None))(jnp.asarray(momenta), jnp.asarray(mass)))
    fixed = {"kinetic": kin}
    if "rdf" in sp.targets:
        r_target = np.asarray(sp.targets["rdf"][0])
        dr = r_target[1] - r_target[0]
        r_max = r_target[-1] + 0.5 * dr
        r, g = rdf_frames(positions, box, r_max, len(r_target))
        if not np.allclose(r, r_target, atol=1e-6 * r_max):
            raise ValueError(f"state point {sp.name}: the rdf target must be on uniform bin centres "
                             "starting at Δr/2")
        fixed["rdf"] = np.asarray(g)
    return Frames(np.asarray(positions), np.asarray(box), graphs, np.asarray(u_ref), fixed)


class Reweighter:
    """Per-frame quantities, reweighted predictions, loss and gradient for one energy function."""

    def __init__(self, energy: Callable, batch_frames: int = 16):
        self.batch = batch_frames
        self._q = {b: Program(jax.vmap(frame_quantities(energy, b), (None, 0, None, 0)))
                   for b in (False, True)}

        def vjp_batch(params, positions, box, graphs, cot, with_born):
            _, pull = jax.vjp(lambda p: jax.vmap(frame_quantities(energy, with_born),
                                                 (None, 0, None, 0))(p, positions, box, graphs), params)
            return pull(cot)[0]

        self._vjp = Program(vjp_batch, static_argnums=(5,))

        def loss_and_grad(params, positions, box, graphs, u_ref, fixed, spec):
            """Loss, (predictions, weights) and gradient over all frames at once."""
            q_of = jax.vmap(frame_quantities(energy, spec.needs_born), (None, 0, None, 0))
            return jax.value_and_grad(lambda p: reweighted_loss(q_of(p, positions, box, graphs), u_ref,
                                                                fixed, spec), has_aux=True)(params)

        self._one_pass = Program(loss_and_grad)

    def _batches(self, n: int):
        for s in range(0, n, self.batch):
            idx = np.arange(s, min(s + self.batch, n))
            yield idx, np.r_[idx, np.full(self.batch - len(idx), idx[0])]  # one compiled shape

    def _take(self, fr: Frames, padded):
        return (jnp.asarray(fr.positions[padded]), jnp.asarray(fr.box),
                jax.tree_util.tree_map(lambda x: x[padded], fr.graphs))

    def quantities(self, params, fr: Frames, with_born: bool) -> dict:
        parts = []
        for idx, padded in self._batches(len(fr.positions)):
            q = self._q[with_born](params, *self._take(fr, padded))
            parts.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[:len(idx)], q))
        return {k: jnp.asarray(np.concatenate([p[k] for p in parts])) for k in parts[0]}

    def energies(self, params, fr: Frames) -> np.ndarray:
        return np.asarray(self.quantities(params, fr, False)["energy"])

    def evaluate(self, params, fr: Frames, sp: StatePoint, gradient: bool = True):
        """(loss, predictions, ESS, gradient or None) of state point ``sp`` at ``params``."""
        dtype = jnp.asarray(fr.positions).dtype
        spec = sp.spec(dtype)
        if gradient and len(fr.positions) <= self.batch:
            (value, (pred, w)), grads = self._one_pass(
                params, jnp.asarray(fr.positions), jnp.asarray(fr.box), fr.graphs, jnp.asarray(fr.u_ref, dtype),
                {k: jnp.asarray(v, dtype) for k, v in fr.fixed.items()}, spec)
            return float(value), _to_host(pred), effective_sample_size(w), grads
        q = self.quantities(params, fr, sp.needs_born)
        u_ref = jnp.asarray(fr.u_ref, q["energy"].dtype)

        def loss_of(q):
            return reweighted_loss(q, u_ref, fr.fixed, spec)

        if not gradient:
            value, (pred, w) = loss_of(q)
            return float(value), _to_host(pred), effective_sample_size(w), None
        (value, (pred, w)), cot = jax.value_and_grad(loss_of, has_aux=True)(q)
        grads = None
        for idx, padded in self._batches(len(fr.positions)):
            c = jax.tree_util.tree_map(lambda x: jnp.zeros((self.batch,) + x.shape[1:], x.dtype)
                                       .at[:len(idx)].set(x[idx]), cot)
            g = self._vjp(params, *self._take(fr, padded), c, sp.needs_born)
            grads = g if grads is None else jax.tree_util.tree_map(jnp.add, grads, g)
        return float(value), _to_host(pred), effective_sample_size(w), grads


def _to_host(pred: dict) -> dict:
    return {k: (np.asarray(v) if np.ndim(v) else float(v)) for k, v in pred.items()}
