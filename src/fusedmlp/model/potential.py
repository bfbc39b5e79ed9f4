"""A trained potential: network settings, energy scale, parameters; the one energy function.

The total energy of head h (one head per level of theory) is

    U_h = Σ_i [ σ_h · o_ih + μ_h(Z_i) ] + Σ_pairs φ(r_ij)

with o the network's per-atom output, σ_h a fixed energy scale and μ_h(Z) fixed per-species
reference energies, both taken from the training data so that the network learns O(1) numbers,
and φ an optional short-range repulsion (``repulsion``), zero at the distances of the data.
``energy_fn`` is a pure function of (params, positions, box, species, graph): MD, training and
phonons all call it. Forces and virials come from ``fusedmlp.quantity``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import io as fio
from .dimenet import DimeNetSettings, dimenet_pp
from .graph import Graph, build_graph, neighbor_table
from .repulsion import RepulsionSettings, repulsion_energy

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    dimenet: DimeNetSettings
    species: tuple[int, ...]  # atomic numbers, in embedding order
    heads: tuple[str, ...] = ("default",)  # level-of-theory names, one output head each
    repulsion: RepulsionSettings | None = None  # short-range prior, shared by every head

    def __post_init__(self):
        if self.dimenet.n_species != len(self.species) or self.dimenet.n_heads != len(self.heads):
            raise ValueError("DimeNet n_species / n_heads must match species / heads")

    @staticmethod
    def create(species_symbols: Sequence[str], heads: Sequence[str] = ("default",),
               repulsion: RepulsionSettings | None = None, **dimenet_kwargs) -> "ModelSettings":
        from ase.data import atomic_numbers
        z = tuple(atomic_numbers[s] for s in species_symbols)
        return ModelSettings(DimeNetSettings(n_species=len(z), n_heads=len(heads), **dimenet_kwargs),
                             z, tuple(heads), repulsion)

    def hyperparameters(self) -> dict:
        """What the configuration decides (everything but data-derived normalisations)."""
        d = {k: v for k, v in dataclasses.asdict(self.dimenet).items() if k != "aggregation_scale"}
        return {**d, "species": list(self.species), "heads": list(self.heads),
                "repulsion_energy": self.repulsion.energy if self.repulsion else None}

    def to_dict(self) -> dict:
        return {"dimenet": dataclasses.asdict(self.dimenet), "species": list(self.species),
                "heads": list(self.heads),
                "repulsion": dataclasses.asdict(self.repulsion) if self.repulsion else None}

    @staticmethod
    def from_dict(d: dict) -> "ModelSettings":
        rep = d.get("repulsion")  # absent in files written before the prior existed
        return ModelSettings(DimeNetSettings(**d["dimenet"]), tuple(d["species"]), tuple(d["heads"]),
                             RepulsionSettings(**rep) if rep else None)


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


def atomic_energies(settings: ModelSettings):
    """``f(params, positions, box, species_idx, graph) -> (N, H)`` scaled per-atom energies."""
    _, apply = dimenet_pp(settings.dimenet)

    def per_atom(params, positions, box, species_idx, graph: Graph):
        out = apply(params["net"], positions, box, species_idx, graph)
        return params["scale"] * out + params["shift"][:, species_idx].T

    return per_atom


def energy_fn(settings: ModelSettings, head: int = 0):
    """``energy(params, positions, box, species_idx, graph, atom_mask=None) -> U`` (eV)."""
    per_atom = atomic_energies(settings)

    rep = settings.repulsion if settings.repulsion and settings.repulsion.r_inner > 0 else None

    def energy(params, positions, box, species_idx, graph, atom_mask=None):
        e = per_atom(params, positions, box, species_idx, graph)[:, head]
        if atom_mask is not None:
            e = jnp.where(atom_mask, e, 0.0)
        total = jnp.sum(e)
        if rep is not None:
            total = total + repulsion_energy(rep, positions, box, graph, atom_mask)
        return total

    return energy


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
    return {"net": jax.tree_util.tree_map(lambda a: a.astype(dtype), net),
            "scale": jnp.asarray(scale.scale, dtype),
            "shift": jnp.asarray(scale.shift, dtype)}


def _parameter_shapes(settings: ModelSettings) -> dict[str, tuple]:
    """Shape of every flattened parameter, traced without computing (or compiling) anything."""
    init, _ = dimenet_pp(settings.dimenet)
    net = jax.eval_shape(init, jax.random.PRNGKey(0), *_example_inputs(settings, np.float32))
    s = EnergyScale.identity(len(settings.heads), len(settings.species))
    flat = _flatten({"net": net, "scale": s.scale, "shift": s.shift}, leaf=lambda x: x)
    return {k: tuple(v.shape) for k, v in flat.items()}


def trainable(params) -> dict:
    """The part of ``params`` an optimizer updates (the energy scale is fixed)."""
    return params["net"]


def with_trainable(params, net) -> dict:
    return {**params, "net": net}


# --- model files -------------------------------------------------------------------------------------

def _flatten(params, leaf=np.asarray) -> dict[str, np.ndarray]:
    flat = {"scale": leaf(params["scale"]), "shift": leaf(params["shift"])}
    for module, leaves in params["net"].items():
        for name, value in leaves.items():
            flat[f"net/{module}/{name}"] = leaf(value)
    return flat


def _unflatten(flat: dict) -> dict:
    net: dict = {}
    for key, value in flat.items():
        if key.startswith("net/"):
            module, name = key[4:].rsplit("/", 1)
            net.setdefault(module, {})[name] = jnp.asarray(value)
    return {"net": net, "scale": jnp.asarray(flat["scale"]), "shift": jnp.asarray(flat["shift"])}


PROVENANCE_PACKAGES = ("fusedmlp", "jax", "jaxlib", "jax-md", "dm-haiku", "optax", "numpy")


def package_versions() -> dict:
    """Versions of the packages that compute a model, for its provenance record."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def save_model(path, settings: ModelSettings, params, metadata: dict | None = None) -> None:
    """One self-contained file: settings (JSON), parameters and provenance, written atomically."""
    header = {"format_version": FORMAT_VERSION, "settings": settings.to_dict(),
              "metadata": {**(metadata or {}), "versions": package_versions()}}
    arrays = {f"param:{k}": v for k, v in _flatten(params).items()}
    fio.save_npz(path, header=np.array(json.dumps(header)), **arrays)


def load_model(path, expected: ModelSettings | None = None):
    """(settings, params, metadata) from a model file, checked against ``expected`` settings."""
    path = Path(path)
    if not path.is_file():
        raise fio.InputError(path, None, "model file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            flat = {k[len("param:"):]: z[k] for k in z.files if k.startswith("param:")}
    except Exception as exc:
        raise fio.InputError(path, None, f"not a readable model file ({exc})") from exc
    if header.get("format_version") != FORMAT_VERSION:
        raise fio.InputError(path, "format_version", f"expected {FORMAT_VERSION}")
    settings = ModelSettings.from_dict(header["settings"])
    if expected is not None:
        a, b = settings.hyperparameters(), expected.hyperparameters()
        diff = {k: (a[k], b[k]) for k in b if a.get(k) != b[k]}
        if diff:
            raise fio.InputError(path, "settings", "the model file was made with a different model "
                                                   f"configuration (file, expected): {diff}")
    params = _unflatten(flat)
    want = _parameter_shapes(settings)
    got = {k: tuple(v.shape) for k, v in _flatten(params).items()}
    if want != got:
        missing = sorted(set(want) - set(got))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise fio.InputError(path, "params", f"parameters do not fit the settings (missing "
                                             f"{missing[:5]}, wrong shape {wrong[:5]})")
    return settings, params, header.get("metadata", {})
