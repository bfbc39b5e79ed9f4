"""Frame averages with optional per-frame weights: plain averages for the evaluation rules,
reweighting weights (DiffTRe) for the trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def frame_weights(weights, n_frames: int):
    """Per-frame weights (n_frames,), uniform when ``weights`` is None.

    Concrete weights are checked (non-negative, summing to 1); traced ones (inside a DiffTRe
    gradient) are passed through unchecked.
    """
    if weights is None:
        return jnp.full(n_frames, 1.0 / n_frames)
    w = jnp.asarray(weights)
    if w.shape != (n_frames,):
        raise ValueError(f"weights must have shape ({n_frames},); got {w.shape}")
    if not isinstance(w, jax.core.Tracer):
        wn = np.asarray(w, float)
        if np.any(wn < 0) or abs(wn.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to 1; sum is {wn.sum():g}")
    return w


def weighted_average(per_frame, weights=None):
    """Average of per-frame values (F, ...) with frame ``weights`` (uniform when None)."""
    per_frame = jnp.asarray(per_frame)
    return jnp.tensordot(frame_weights(weights, per_frame.shape[0]), per_frame, axes=1)
