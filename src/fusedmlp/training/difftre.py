"""Differentiable trajectory reweighting (DiffTRe; Thaler & Zavadlav, Nat. Commun. 12, 6884, 2021).

A trajectory sampled with parameters θ̂ gives ensemble averages at nearby θ by reweighting its
frames (``observables.reweighting``),

    w_i = softmax_i(−β [U_θ(x_i) − U_θ̂(x_i)]),     ⟨O⟩_θ = Σ_i w_i O_θ(x_i),

and the gradient of a loss of such averages flows through the weights and through observables
that depend on θ themselves (Born stress and stiffness).

The gradient is computed in two passes so memory stays bounded by one batch of frames: the
per-frame quantities q_i(θ) (energy, Born terms) are evaluated in batches; the loss, a function of
all q_i through the weighted averages, gives the cotangents ∂L/∂q_i; and ∂L/∂θ = Σ_i (∂q_i/∂θ)ᵀ
∂L/∂q_i is accumulated batch by batch with vector–Jacobian products. With the Born stiffness
sampled along strain directions (``StatePoint.born_directions``, ``observables.born_directions``)
q_i holds the directional stiffnesses and the product is a reverse pass over forward passes
(``reweighting.directional_gradient``). With the full tensor, when all frames fit in one batch,
one compiled program computes the loss and its gradient directly (the forward pass of the second
pass is then not repeated); the state point enters it as arguments (``StateSpec``), so state
points with the same atoms and targets share it.

Observables and targets are configuration: a state point names targets (``C11`` … ``C66`` of the
stress-fluctuation tensor, reduced by the crystal's symmetry, adiabatic or isothermal as the state
point's ``elastic_constants`` says; ``pressure``; the normal pressures ``pressure_a`` (in the xy
plane, the mean of P_xx and P_yy) and ``pressure_c`` (P_zz), whose zero at the experimental lattice
fixes a and c and not only the volume; their slopes ``pressure_slope``, ``pressure_a_slope``,
``pressure_c_slope`` (MPa/K) along the measured lattice's expansion with temperature (the
state point's ``expansion``; ``stress.pressure_path_slope``), whose zero fixes how a and c change
with temperature where the pressures alone fix them only at the state points; or an ``rdf``
table);
each target has a weight, and the state point's loss is Σ_k weight_k (pred_k − target_k)².
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import units
from ..compilation import Program
from ..elastic import SYMMETRY_CONSTANTS, reduce_stiffness
from ..observables.born_directions import born_directions, stiffness_constants
from ..observables.reweighting import (BatchedQuantities, Frames, directional_gradient, effective_sample_size,
                                       frame_quantities, reweighting_weights)
from ..observables.stress import (ELASTIC_KINDS, frame_pressure, pressure_path_slope, stress_fluctuation,
                                  thermal_stress)

# P, and the normal pressures in the xy plane (a axes of a hexagonal cell) and along z (its c axis)
PRESSURE_TARGETS = ("pressure", "pressure_a", "pressure_c")
# their temperature derivatives along the state point's lattice expansion (MPa/K)
SLOPE_TARGETS = ("pressure_slope", "pressure_a_slope", "pressure_c_slope")


class _Targets:
    """What a state point's ``targets`` ask of the frames (shared by StatePoint and StateSpec)."""

    @property
    def elastic_targets(self) -> list[str]:
        return [k for k in self.targets if k.startswith("C")]

    @property
    def slope_targets(self) -> list[str]:
        return [k for k in self.targets if k in SLOPE_TARGETS]

    @property
    def stiffness_constants(self) -> list[str]:
        """The constants of the symmetry whose Born stiffness entries the targets read: the elastic
        targets, and for a pressure slope (B^T α) those of the normal-stress block."""
        return stiffness_constants(self.symmetry, self.elastic_targets, bool(self.slope_targets))

    @property
    def needs_born(self) -> bool:
        """Whether the targets need the Born stress (pressure) or stiffness (elastic constants)."""
        return bool(self.stiffness_constants) or any(k in self.targets for k in PRESSURE_TARGETS)


@dataclasses.dataclass
class StatePoint(_Targets):
    """One thermodynamic state with experimental targets (GPa for stresses and constants)."""

    name: str
    temperature: float  # K
    positions: np.ndarray  # (N, 3) where the first trajectory starts (a crystal's lattice sites), Å
    box: np.ndarray  # (3, 3) fixed box (rows = lattice vectors)
    species: np.ndarray  # (N,) model species indices
    masses: np.ndarray  # (N,) u
    targets: dict  # name -> value; "rdf" -> (r, g) arrays
    weights: dict  # name -> loss weight
    symmetry: str = "hexagonal"
    elastic_constants: str = "adiabatic"  # or "isothermal": which the C targets are compared with
    # strain directions per frame along which the Born stiffness is sampled
    # (``observables.born_directions``); 0: the full 6×6 tensor of every frame
    born_directions: int = 0
    # momenta of the first trajectory (a melted liquid's); None: a crystal at its lattice sites
    # (``md.simulate.lattice_site_momenta``)
    momenta: np.ndarray | None = None
    # the linear strain rate of the measured lattice with temperature at this state point
    # (Voigt 6-vector, 1/K: d ln a/dT, d ln a/dT, d ln c/dT, 0, 0, 0 for hcp); the pressure
    # slopes are taken along it
    expansion: np.ndarray | None = None

    def __post_init__(self):
        if self.born_directions < 0:
            raise ValueError(f"state point {self.name}: born_directions {self.born_directions}, expected >= 0")
        if self.elastic_constants not in ELASTIC_KINDS:
            raise ValueError(f"state point {self.name}: elastic_constants {self.elastic_constants!r}, "
                             f"expected one of {ELASTIC_KINDS}")
        if self.symmetry not in SYMMETRY_CONSTANTS:
            raise ValueError(f"state point {self.name}: symmetry {self.symmetry!r}, expected one of "
                             f"{tuple(SYMMETRY_CONSTANTS)}")
        allowed = set(SYMMETRY_CONSTANTS[self.symmetry]) | set(PRESSURE_TARGETS) | set(SLOPE_TARGETS) | {"rdf"}
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
        if self.slope_targets and (self.expansion is None or np.shape(self.expansion) != (6,)):
            raise ValueError(f"state point {self.name}: targets {self.slope_targets} need the lattice's "
                             "expansion with temperature (a Voigt 6-vector, 1/K)")

    def spec(self, dtype=None) -> "StateSpec":
        dtype = np.asarray(self.positions).dtype if dtype is None else dtype
        targets = {k: np.asarray(v[1] if k == "rdf" else v, dtype) for k, v in self.targets.items()}
        return StateSpec(np.asarray(self.temperature, dtype), np.asarray(abs(np.linalg.det(self.box)), dtype),
                         targets, {k: np.asarray(v, dtype) for k, v in self.weights.items()},
                         self.symmetry, len(self.positions), self.elastic_constants,
                         np.asarray(np.zeros(6) if self.expansion is None else self.expansion, dtype))


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["temperature", "volume", "targets", "weights", "expansion"],
                   meta_fields=["symmetry", "n_atoms", "elastic_constants"])
@dataclasses.dataclass(frozen=True)
class StateSpec(_Targets):
    """What the loss needs of a state point, as arrays (traced in compiled programs): the
    temperature (K), volume (Å³), target values (the RDF target as g on its bins), weights and
    the lattice's expansion with temperature (1/K)."""

    temperature: jnp.ndarray
    volume: jnp.ndarray
    targets: dict
    weights: dict
    symmetry: str
    n_atoms: int
    elastic_constants: str = "adiabatic"
    expansion: jnp.ndarray | None = None


def _spec(sp) -> StateSpec:
    return sp.spec() if isinstance(sp, StatePoint) else sp


def predictions(q: dict, fixed: dict, weights, sp: StatePoint | StateSpec) -> dict:
    """Reweighted observables of one state point (GPa; pressure slopes MPa/K; ``rdf`` as an
    array)."""
    out = {}
    sp = _spec(sp)
    volume = sp.volume
    if sp.needs_born:
        # momenta do not depend on θ: their plain mean is the exact reweighted expectation, and
        # leaving it out of the weights removes noise from the gradient
        kin = jnp.broadcast_to(jnp.mean(fixed["kinetic"], axis=0), fixed["kinetic"].shape)
        p = frame_pressure(q["born_stress"], kin, volume, weights)
        out["pressure"] = units.ev_per_a3_to_gpa(jnp.mean(p[:3]))
        out["pressure_a"] = units.ev_per_a3_to_gpa(jnp.mean(p[:2]))
        out["pressure_c"] = units.ev_per_a3_to_gpa(p[2])
    if sp.stiffness_constants:
        if "born_directional" in q:  # sampled along strain directions: their weighted means
            born = born_directions(sp.symmetry, sp.stiffness_constants).mean_stiffness(
                q["born_directional"], fixed["born_index"], weights, q["born_stress"], fixed.get("born_slopes"))
        else:
            born = q["born_stiffness"]
        c = stress_fluctuation(q["born_stress"], born, kin, q["energy"], volume, sp.n_atoms,
                               sp.temperature, weights)
        if sp.elastic_targets:
            out.update(reduce_stiffness(units.ev_per_a3_to_gpa(c[sp.elastic_constants]), sp.symmetry))
        if sp.slope_targets:
            t_lambda = thermal_stress(q["born_stress"], q["energy"], volume, sp.n_atoms, sp.temperature, weights)
            s = units.ev_per_a3_to_mpa(pressure_path_slope(t_lambda, c["isothermal"], sp.expansion,
                                                           sp.temperature))
            out.update(pressure_slope=jnp.mean(s), pressure_a_slope=jnp.mean(s[:2]), pressure_c_slope=s[2])
    if "rdf" in sp.targets:
        out["rdf"] = jnp.tensordot(weights, fixed["rdf"], axes=1)
    return out


def state_loss(pred: dict, sp: StatePoint | StateSpec):
    total = 0.0
    sp = _spec(sp)
    for name, target in sp.targets.items():
        if name == "rdf":
            # bins without a target (NaN: outside a measured table or the range used) stay out,
            # masked before the difference so that no NaN reaches the gradient
            use = jnp.isfinite(target)
            diff = jnp.where(use, pred["rdf"] - jnp.where(use, target, 0.0), 0.0)
            total = total + sp.weights[name] * jnp.sum(diff**2) / jnp.maximum(jnp.sum(use), 1)
        else:
            total = total + sp.weights[name] * (pred[name] - target) ** 2
    return total


def reweighted_loss(q: dict, u_ref, fixed: dict, sp: StatePoint | StateSpec):
    """(loss, (predictions, weights)) of per-frame quantities ``q`` sampled at U_θ̂ = ``u_ref``."""
    sp = _spec(sp)
    w = reweighting_weights(q["energy"], u_ref, sp.temperature)
    pred = predictions(q, fixed, w, sp)
    return state_loss(pred, sp), (pred, w)


class Reweighter(BatchedQuantities):
    """Per-frame quantities (``BatchedQuantities``), reweighted predictions, loss and gradient
    for one energy function."""

    def __init__(self, energy: Callable, batch_frames: int = 16):
        super().__init__(energy, batch_frames)

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
        self._directional_vjp = Program(directional_gradient(energy))

    def evaluate(self, params, fr: Frames, sp: StatePoint, gradient: bool = True):
        """(loss, predictions, ESS, gradient or None) of state point ``sp`` at ``params``."""
        return self.evaluate_with_quantities(params, fr, sp, gradient)[:4]

    def evaluate_with_quantities(self, params, fr: Frames, sp: StatePoint, gradient: bool = True):
        """``evaluate``'s (loss, predictions, ESS, gradient or None) and the per-frame quantities
        they came from (None where one compiled pass computed everything)."""
        dtype = jnp.asarray(fr.positions).dtype
        spec = sp.spec(dtype)
        directional = sp.needs_born and fr.directional
        if gradient and len(fr.positions) <= self.batch and not directional:
            (value, (pred, w)), grads = self._one_pass(
                params, jnp.asarray(fr.positions), jnp.asarray(fr.box), fr.graphs, jnp.asarray(fr.u_ref, dtype),
                {k: jnp.asarray(v, dtype) for k, v in fr.fixed.items()}, spec)
            return float(value), _to_host(pred), effective_sample_size(w), grads, None
        q = self.quantities(params, fr, sp.needs_born)
        u_ref = jnp.asarray(fr.u_ref, q["energy"].dtype)

        def loss_of(q):
            return reweighted_loss(q, u_ref, fr.fixed, spec)

        if not gradient:
            value, (pred, w) = loss_of(q)
            return float(value), _to_host(pred), effective_sample_size(w), None, q
        (value, (pred, w)), cot = jax.value_and_grad(loss_of, has_aux=True)(q)
        grads = None
        for idx, padded in self._batches(len(fr.positions)):
            c = jax.tree_util.tree_map(lambda x: jnp.zeros((self.batch,) + x.shape[1:], x.dtype)
                                       .at[:len(idx)].set(x[idx]), cot)
            if directional:
                g = self._directional_vjp(params, *self._take(fr, padded),
                                          jnp.asarray(fr.fixed["born_vectors"][padded]), c)
            else:
                g = self._vjp(params, *self._take(fr, padded), c, sp.needs_born)
            grads = g if grads is None else jax.tree_util.tree_map(jnp.add, grads, g)
        return float(value), _to_host(pred), effective_sample_size(w), grads, q


def _to_host(pred: dict) -> dict:
    return {k: (np.asarray(v) if np.ndim(v) else float(v)) for k, v in pred.items()}
