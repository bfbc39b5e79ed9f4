"""The potentials the evaluation rules measure: trained models and, for the demo, the reference
potential that labelled their training data (the ground truth they should reproduce).

A model with several heads (one per level of theory) is measured at one of them, named
``<model>@<head>`` (``multifidelity@ref_hard``); the reference potential at another level than the
training level is ``reference@<level>``.

Every potential is used the same way: ``energy(numbers)`` gives ``U(params, positions, box,
graph)`` for atoms with those atomic numbers (the MD and observables interface), ``params`` holds
what U needs at run time, and ``cutoff`` sizes the graphs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..compilation import Program
from ..md.neighbors import frame_graphs
from ..model.dimenet import species_index
from ..model.energy import energy_fn, runtime_params
from ..model.file import load_head
from ..model.settings import dtype as config_dtype, model_settings
from ..quantity import energy_forces_virial
from ..reference import level_params
from ..reference.eam import graph_energy_fn

REFERENCE = "reference"  # the model name of the reference potential


@dataclasses.dataclass
class Potential:
    name: str
    cutoff: float  # Å
    params: object  # run-time argument of the energy (None for the reference potential)
    make_energy: Callable[[np.ndarray], Callable]  # atomic numbers -> U(params, r, box, graph)
    dtype: object = jnp.float32
    # its energy sums over triplets (a model): MD graphs give their triplet blocks row groups,
    # which a pair or embedded-atom energy would only have to keep from overflowing
    triplets: bool = True
    # compiled programs of this potential (MD, reweighting), reused by every run of a job
    compiled: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def reuse(self, key, make: Callable):
        """``make()`` once per ``key``: runs that differ only in their arguments share its
        traced and compiled functions."""
        if key not in self.compiled:
            self.compiled[key] = make()
        return self.compiled[key]

    def energy(self, numbers) -> Callable:
        return self.make_energy(np.asarray(numbers))

    def host_efv(self, numbers) -> Callable[[np.ndarray, np.ndarray], tuple]:
        """Host ``(U, F, W)`` (eV, eV/Å, eV) of one configuration on an exact graph (any cell size:
        0 K lattices, phonon supercells)."""
        efv = Program(energy_forces_virial(lambda r, b, graph: self.energy(numbers)(self.params, r, b, graph)))

        def f(positions, box):
            graph = jax.tree_util.tree_map(lambda x: x[0], frame_graphs(np.asarray(positions)[None], box,
                                                                        self.cutoff))
            u, forces, w = efv(jnp.asarray(positions, self.dtype), jnp.asarray(box, self.dtype), graph=graph)
            return float(u), np.asarray(forces, float), np.asarray(w, float)

        return f

    def forces_fn(self, numbers) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        efv = self.host_efv(numbers)
        return lambda positions, box: efv(positions, box)[1]


def split_name(name: str) -> tuple[str, str | None]:
    """``(model, head)`` of a potential's name ``<model>@<head>`` (head ``None`` without ``@``)."""
    model, _, head = name.partition("@")
    if not model or (_ and not head):
        raise ValueError(f"potential name {name!r}: expected <model> or <model>@<head>")
    return model, head or None


def reference_potential(cfg: dict, level: str, name: str = REFERENCE) -> Potential:
    """The reference potential at one level of theory (``reference.levels.<level>``)."""
    p = level_params(cfg["reference"], level)
    u = graph_energy_fn(p)
    return Potential(name, float(p.cutoff), None, lambda numbers: (lambda params, r, box, graph: u(r, box, graph)),
                     triplets=False)


def load_potential(cfg: dict, name: str, model_path=None) -> Potential:
    """The trained model at ``model_path`` (at the head ``name`` names, ``<model>@<head>``) or, for
    ``reference`` / ``reference@<level>``, the reference potential at the training level of theory
    or at ``level``."""
    model, head = split_name(name)
    if model == REFERENCE:
        return reference_potential(cfg, head or cfg["reference"]["training_level"], name)
    if model_path is None:
        raise ValueError(f"model {name!r} needs a model file")
    # a file made with other hyperparameters than the configuration's is an error, not a silent swap
    settings, params, _, index = load_head(model_path, head, expected=model_settings(cfg))
    dt = config_dtype(cfg)
    # every model with the pair correction's run-time form (zero without one): a corrected
    # model's programs are then the other models' (one compilation, in the persistent cache)
    params = runtime_params(settings, jax.tree_util.tree_map(lambda x: jnp.asarray(x, dt), params), dt)
    u = energy_fn(settings, index, runtime_correction=True)

    def make(numbers):
        spc = jnp.asarray(species_index(numbers, settings.species))
        return lambda params, r, box, graph: u(params, r, box, spc, graph)

    return Potential(name, float(settings.dimenet.cutoff), params, make, dt)
