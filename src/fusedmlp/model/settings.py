"""The model's settings and floating-point precision, read from the validated configuration.

They live with the model (not the trainers) because every user of a trained model needs them:
the trainers, the evaluation rules and the model API alike.
"""

from __future__ import annotations

import jax.numpy as jnp

from .potential import ModelSettings
from .repulsion import RepulsionSettings

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
    """The model's float type: ``model.dtype`` of the configuration."""
    return jnp.float64 if cfg["model"]["dtype"] == "float64" else jnp.float32
