"""Settings dataclasses built from the validated configuration."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ..model.potential import ModelSettings
from ..model.repulsion import RepulsionSettings
from .dft import DFTTrainerSettings

MODEL_KEYS = ("cutoff", "embed_size", "out_embed_size", "type_embed_size", "int_embed_size",
              "basis_embed_size", "n_blocks", "n_radial", "n_spherical", "envelope_p",
              "n_output_layers")


def model_settings(cfg: dict, heads=("default",), aggregation_scale: float = 1.0) -> ModelSettings:
    m = cfg["model"]
    # the prior's reach is set from the training data by the pre-training (r_inner 0 until then)
    rep = RepulsionSettings(energy=m["repulsion_ev"]) if m["repulsion_ev"] > 0 else None
    return ModelSettings.create(cfg["species"], heads=heads, aggregation_scale=aggregation_scale,
                                repulsion=rep, **{k: m[k] for k in MODEL_KEYS})


def dtype(cfg: dict):
    return jnp.float64 if cfg["model"]["dtype"] == "float64" else jnp.float32


def dft_trainer_settings(cfg: dict, head: int = 0) -> DFTTrainerSettings:
    p = cfg["pretrain"]
    return DFTTrainerSettings(**{f.name: p[f.name] for f in dataclasses.fields(DFTTrainerSettings)
                                 if f.name in p}, head=head)
