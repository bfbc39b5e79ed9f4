"""The model's settings: the network's hyperparameters, the species it knows, its heads (one per
level of theory) and its energy terms, and how the validated configuration sets them.

They live with the model (not the trainers) because every user of a trained model needs them:
the trainers, the evaluation rules and the model API alike.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp

from .dimenet import DimeNetSettings
from .pair_correction import PairCorrectionSettings
from .repulsion import RepulsionSettings


HEAD_FORMS = ("independent", "correction")


class UnknownHead(ValueError):
    """A head the model does not have (or none named for a model with several)."""


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    dimenet: DimeNetSettings
    species: tuple[int, ...]  # atomic numbers, in embedding order
    heads: tuple[str, ...] = ("default",)  # level-of-theory names, one output head each
    repulsion: RepulsionSettings | None = None  # short-range prior, shared by every head
    # "independent": each head its own output column (Messerly et al., hippynn); "correction": the
    # heads after the first are the first head's output plus their own column (``model.energy``)
    head_form: str = "independent"
    # tabulated pair correction (IBI, ``model.pair_correction``), shared by every head; its table
    # is params["pair"]
    pair_correction: PairCorrectionSettings | None = None

    def __post_init__(self):
        if self.dimenet.n_species != len(self.species) or self.dimenet.n_heads != len(self.heads):
            raise ValueError("DimeNet n_species / n_heads must match species / heads")
        if self.head_form not in HEAD_FORMS:
            raise ValueError(f"head_form {self.head_form!r}: expected one of {HEAD_FORMS}")
        pc = self.pair_correction
        if pc is not None and pc.cutoff > self.dimenet.cutoff:
            raise ValueError(f"pair correction cutoff {pc.cutoff:g} Å exceeds the network's cutoff "
                             f"{self.dimenet.cutoff:g} Å: the model's graphs hold no pairs beyond it")

    @staticmethod
    def create(species_symbols: Sequence[str], heads: Sequence[str] = ("default",),
               repulsion: RepulsionSettings | None = None, head_form: str = "independent",
               **dimenet_kwargs) -> "ModelSettings":
        from ase.data import atomic_numbers
        z = tuple(atomic_numbers[s] for s in species_symbols)
        return ModelSettings(DimeNetSettings(n_species=len(z), n_heads=len(heads), **dimenet_kwargs),
                             z, tuple(heads), repulsion, head_form)

    def head_index(self, head: int | str | None = None) -> int:
        """Index of ``head`` (a name of ``heads`` or an index). ``None`` names the only head of a
        single-head model; a model with several heads needs one named: no silent choice of a
        head (MACE's calculator falls back to its last head for an unknown name)."""
        if head is None:
            if len(self.heads) == 1:
                return 0
            raise UnknownHead(f"the model has heads {list(self.heads)}; name one "
                              "(e.g. `<model>@<head>` in the workflow, head=... in Python)")
        if isinstance(head, str):
            if head not in self.heads:
                raise UnknownHead(f"unknown head {head!r}; the model has heads {list(self.heads)}")
            return self.heads.index(head)
        if not 0 <= int(head) < len(self.heads):
            raise UnknownHead(f"head index {head} out of range; the model has heads {list(self.heads)}")
        return int(head)

    def hyperparameters(self) -> dict:
        """What the configuration decides (everything but data-derived normalisations and fitted
        terms: the repulsion's reach, an IBI pair correction), so a corrected model is still a
        model of the configuration's architecture."""
        d = {k: v for k, v in dataclasses.asdict(self.dimenet).items() if k != "aggregation_scale"}
        return {**d, "species": list(self.species), "heads": list(self.heads), "head_form": self.head_form,
                "repulsion_energy": self.repulsion.energy if self.repulsion else None}

    def to_dict(self) -> dict:
        return {"dimenet": dataclasses.asdict(self.dimenet), "species": list(self.species),
                "heads": list(self.heads), "head_form": self.head_form,
                "repulsion": dataclasses.asdict(self.repulsion) if self.repulsion else None,
                "pair_correction": dataclasses.asdict(self.pair_correction) if self.pair_correction else None}

    @staticmethod
    def from_dict(d: dict) -> "ModelSettings":
        rep = d.get("repulsion")  # absent in files written before the prior existed
        pc = d.get("pair_correction")  # absent in files written before the IBI correction existed
        return ModelSettings(DimeNetSettings(**d["dimenet"]), tuple(d["species"]), tuple(d["heads"]),
                             RepulsionSettings(**rep) if rep else None,
                             head_form=d.get("head_form", "independent"),  # absent in files before it existed
                             pair_correction=PairCorrectionSettings(**pc) if pc else None)



MODEL_KEYS = ("cutoff", "embed_size", "out_embed_size", "type_embed_size", "int_embed_size",
              "basis_embed_size", "n_blocks", "n_radial", "n_spherical", "envelope_p",
              "n_output_layers")


def model_settings(cfg: dict, heads=("default",), aggregation_scale: float = 1.0,
                   head_form: str = "independent") -> ModelSettings:
    m = cfg["model"]
    # the prior's reach is set from the training data by the pre-training (r_inner 0 until then)
    rep = RepulsionSettings(energy=m["repulsion_ev"]) if m["repulsion_ev"] > 0 else None
    return ModelSettings.create(cfg["species"], heads=heads, aggregation_scale=aggregation_scale,
                                repulsion=rep, head_form=head_form, **{k: m[k] for k in MODEL_KEYS})


def dtype(cfg: dict):
    """The model's float type: ``model.dtype`` of the configuration."""
    return jnp.float64 if cfg["model"]["dtype"] == "float64" else jnp.float32
