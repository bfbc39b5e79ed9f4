"""A model's parameters: the network's (trained) and the fixed energy scale σ_h and per-species
reference energies μ_h(Z) (``model.energy``), created from the settings.

``params`` is a nested dict: ``{"net": <haiku parameters>, "scale": (H,), "shift": (H, S)}``, and
``"pair": {"u": (n_points,)}`` for a model with a tabulated pair correction (``model.pair_correction``);
``trainable``/``with_trainable`` are the part an optimizer updates; ``flatten``/``unflatten``
give the path-keyed layout of model files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .dimenet import dimenet_pp
from .graph import build_graph, neighbor_table
from .pair_correction import zero_table
from .settings import ModelSettings


@dataclasses.dataclass(frozen=True)
class EnergyScale:
    scale: np.ndarray  # (H,) eV
    shift: np.ndarray  # (H, S) eV per atom of each species

    @staticmethod
    def identity(n_heads: int, n_species: int) -> "EnergyScale":
        return EnergyScale(np.ones(n_heads), np.zeros((n_heads, n_species)))


def fit_energy_scale(counts: np.ndarray, energies: np.ndarray, force_rms: float) -> tuple[float, np.ndarray]:
    """Per-species reference energies by least squares (E ≈ Σ_s n_s μ_s) and the force RMS as
    the energy scale. ``counts`` (B, S) atoms of each species per configuration."""
    mu, *_ = np.linalg.lstsq(np.asarray(counts, float), np.asarray(energies, float), rcond=None)
    return float(force_rms) if force_rms > 0 else 1.0, mu


def fit_head_shifts(counts: np.ndarray, energies: np.ndarray, head: np.ndarray,
                    names: tuple[str, ...]) -> np.ndarray:
    """(H, S) per-species reference energies μ_h(Z), each head's fitted by least squares on that
    head's own energies only (levels of theory differ by large constant offsets; lanl/hippynn's
    multi-fidelity example fits one E0 per head the same way). ``head`` (B,) is the head index of
    each energy, ``counts`` (B, S) the atoms of each species."""
    counts, energies, head = np.asarray(counts, float), np.asarray(energies, float), np.asarray(head)
    shifts = np.zeros((len(names), counts.shape[1]))
    for h, name in enumerate(names):
        sel = head == h
        if not sel.any():
            raise ValueError(f"head {name!r} has no training energies to fit its reference energies on")
        shifts[h], *_ = np.linalg.lstsq(counts[sel], energies[sel], rcond=None)
    return shifts


def correction_norm2(settings: ModelSettings, net):
    """Σ of the squared output-layer weights of the correction heads (``head_form: correction``,
    the heads after the first): the size of the learned difference between levels; 0 for any
    other model."""
    if settings.head_form != "correction" or len(settings.heads) < 2:
        return 0.0
    return sum(jnp.sum(jnp.square(layer["w"][:, 1:])) for name, layer in net.items() if name.endswith("/lin_out"))


def _example_inputs(settings: ModelSettings, dtype) -> tuple:
    """A simple cubic cell of two atoms: enough to create every parameter."""
    pos = np.array([[0.0, 0.0, 0.0], [1.2, 1.3, 1.1]], dtype)
    box = np.eye(3, dtype=dtype) * 2.6
    nbr, shf, msk = neighbor_table(pos, box, settings.dimenet.cutoff)
    pos, box = jnp.asarray(pos), jnp.asarray(box)
    graph = build_graph(pos, box, jnp.asarray(nbr), jnp.asarray(shf, dtype), jnp.asarray(msk),
                        settings.dimenet.cutoff, nbr.shape[1])
    return pos, box, jnp.zeros(2, jnp.int32), graph


def init_params(settings: ModelSettings, key, scale: EnergyScale | None = None, dtype=jnp.float32):
    """Network parameters from a small example cell, plus the fixed energy scale."""
    init, _ = dimenet_pp(settings.dimenet)
    # One jitted init: run op by op, haiku's initialisers compile hundreds of tiny programs (~15 s).
    net = jax.jit(init)(key, *_example_inputs(settings, dtype))
    scale = scale or EnergyScale.identity(len(settings.heads), len(settings.species))
    params = {"net": jax.tree_util.tree_map(lambda a: a.astype(dtype), net),
              "scale": jnp.asarray(scale.scale, dtype),
              "shift": jnp.asarray(scale.shift, dtype)}
    if settings.pair_correction is not None:  # a correction that changes nothing until fitted
        params["pair"] = zero_table(settings.pair_correction, dtype)
    return params


def parameter_shapes(settings: ModelSettings) -> dict[str, tuple]:
    """Shape of every flattened parameter, traced without computing (or compiling) anything."""
    init, _ = dimenet_pp(settings.dimenet)
    net = jax.eval_shape(init, jax.random.PRNGKey(0), *_example_inputs(settings, np.float32))
    s = EnergyScale.identity(len(settings.heads), len(settings.species))
    tree = {"net": net, "scale": s.scale, "shift": s.shift}
    if settings.pair_correction is not None:
        tree["pair"] = {"u": np.zeros(settings.pair_correction.n_points)}
    flat = flatten(tree, leaf=lambda x: x)
    return {k: tuple(v.shape) for k, v in flat.items()}


def trainable(params) -> dict:
    """The part of ``params`` an optimizer updates (the energy scale is fixed, and so is a pair
    correction, which IBI fits by its own rule)."""
    return params["net"]


def with_trainable(params, net) -> dict:
    return {**params, "net": net}


def flatten(params, leaf=np.asarray, prefix: tuple = ()) -> dict[tuple, object]:
    """``{key path: leaf}`` of a nested dict of arrays (haiku's module names contain '/', so a
    path is a tuple of keys, not a joined string)."""
    flat = {}
    for key, value in params.items():
        path = prefix + (key,)
        if isinstance(value, Mapping):
            flat.update(flatten(value, leaf, path))
        else:
            flat[path] = leaf(value)
    return flat


def unflatten(flat: dict) -> dict:
    """The nested dict of ``flatten``'s output, as device arrays."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value)
    return out


def with_pair_correction(settings: ModelSettings, params, correction, table=None):
    """(settings, params) of the model plus a tabulated pair correction (``model.pair_correction``):
    the network's parameters untouched, the table ``{"u": (n_points,)}`` (zero if None). A model
    that already has a correction must keep its grid (IBI continues from its table)."""
    import dataclasses as dc

    old = settings.pair_correction
    if old is not None and old != correction:
        raise ValueError(f"the model already has a pair correction on another grid ({old}); "
                         f"expected {correction}")
    dtype = jax.tree_util.tree_leaves(params["net"])[0].dtype
    if table is None:
        table = params["pair"] if old is not None else zero_table(correction, dtype)
    u = jnp.asarray(table["u"], dtype)
    if u.shape != (correction.n_points,):
        raise ValueError(f"pair correction table has shape {u.shape}, expected ({correction.n_points},)")
    return dc.replace(settings, pair_correction=correction), {**params, "pair": {"u": u}}
