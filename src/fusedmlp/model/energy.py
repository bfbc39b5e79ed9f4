"""The one energy function of a model: a sum of energy terms.

The total energy of head h (one head per level of theory) is

    U_h = Σ_i [ σ_h · o_ih + μ_h(Z_i) ] + Σ_pairs φ(r_ij) + Σ_pairs v(r_ij)

(with ``head_form: correction``, o_ih = o_i0 + d_ih for the heads after the first)

with o the network's per-atom output, σ_h a fixed energy scale and μ_h(Z) fixed per-species
reference energies (``model.params``), both taken from the training data so that the network
learns O(1) numbers, φ an optional short-range repulsion (``model.repulsion``), zero at the
distances of the data, and v an optional tabulated pair correction (``model.pair_correction``,
fitted by Iterative Boltzmann Inversion; its table is ``params["pair"]``). ``energy_fn`` is a pure function of (params, positions, box, species,
graph): MD, training and phonons all call it; forces and virials come from ``fusedmlp.quantity``.

A new energy term is one more summand in ``energy_fn``, its settings a field of
``ModelSettings`` and its parameters (if any) one more entry of ``params`` (as the pair
correction's).
"""

from __future__ import annotations

import jax.numpy as jnp

from .dimenet import dimenet_pp
from .graph import Graph
from .pair_correction import correction_energy, runtime_correction_energy, runtime_table
from .repulsion import repulsion_energy
from .settings import ModelSettings


def atomic_energies(settings: ModelSettings):
    """``f(params, positions, box, species_idx, graph) -> (N, H)`` scaled per-atom energies."""
    _, apply = dimenet_pp(settings.dimenet)

    def per_atom(params, positions, box, species_idx, graph: Graph):
        out = apply(params["net"], positions, box, species_idx, graph)
        if settings.head_form == "correction" and out.shape[1] > 1:
            # Δ-learning on the readout: a head after the first starts from (its column is
            # zero-initialised) and stays near the first head, trained on forces, and learns only
            # its level's difference from its energies
            out = jnp.concatenate([out[:, :1], out[:, :1] + out[:, 1:]], axis=1)
        return params["scale"] * out + params["shift"][:, species_idx].T

    return per_atom


def runtime_params(settings: ModelSettings, params, dtype=jnp.float32) -> dict:
    """``params`` for ``energy_fn(settings, runtime_correction=True)``: the pair correction's
    table (or, for a model without one, the zero correction) in its run-time form."""
    rest = {k: v for k, v in params.items() if k != "pair"}
    pc = settings.pair_correction
    return {**rest, "pair": runtime_table(pc, params.get("pair"), settings.dimenet.cutoff, dtype)}


def energy_fn(settings: ModelSettings, head: int | str | None = None, runtime_correction: bool = False):
    """``energy(params, positions, box, species_idx, graph, atom_mask=None, head=h) -> U`` (eV).

    ``head`` (a name of ``settings.heads`` or an index; ``None`` for a single-head model) is the
    level of theory the energy is at; the call's ``head`` keyword overrides it with an index that
    may be traced, so a padded batch mixing levels evaluates each configuration at its own head
    (``model.batch``). Every head shares the network: only its column of the output layers and
    its ``scale``/``shift`` are its own (Messerly et al. 2025: one backbone, one head per level).

    ``runtime_correction``: the pair correction in its run-time form (``params`` from
    ``runtime_params``), present for every model, zero where it has none, so that models with
    and without a correction share their compiled programs (``model.pair_correction``).
    """
    per_atom = atomic_energies(settings)
    default = settings.head_index(head) if head is not None or len(settings.heads) == 1 else None

    rep = settings.repulsion if settings.repulsion and settings.repulsion.r_inner > 0 else None
    pair = settings.pair_correction

    def energy(params, positions, box, species_idx, graph, atom_mask=None, head=default):
        if head is None:
            settings.head_index(None)  # raises: a model with several heads needs one named
        e = per_atom(params, positions, box, species_idx, graph)[:, head]
        if atom_mask is not None:
            e = jnp.where(atom_mask, e, 0.0)
        total = jnp.sum(e)
        if rep is not None:
            total = total + repulsion_energy(rep, positions, box, graph, atom_mask)
        if runtime_correction:
            total = total + runtime_correction_energy(params["pair"], positions, box, graph, atom_mask)
        elif pair is not None:
            total = total + correction_energy(pair, params["pair"], positions, box, graph, atom_mask)
        return total

    return energy
