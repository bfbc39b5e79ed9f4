"""Frame averages with optional per-frame weights (plain averages for the evaluation rules,
reweighting weights for DiffTRe), and standard errors from blocks of frames.

Block averaging (Flyvbjerg & Petersen, J. Chem. Phys. 91, 461, 1989): consecutive blocks much
longer than the correlation time give nearly independent estimates x_b of a quantity, whose
standard error is s(x_b)/√n_blocks with s the sample standard deviation (ddof = 1); the
covariance of two such means is likewise s(x_b, y_b)/n_blocks.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def frame_weights(weights, n_frames: int):
    """Per-frame weights (n_frames,), uniform when ``weights`` is None.

    Concrete weights are checked (finite, summing to 1; control-variate calibration weights may be
    negative); traced ones (inside a DiffTRe gradient) are passed through unchecked.
    """
    if weights is None:
        return jnp.full(n_frames, 1.0 / n_frames)
    w = jnp.asarray(weights)
    if w.shape != (n_frames,):
        raise ValueError(f"weights must have shape ({n_frames},); got {w.shape}")
    if not isinstance(w, jax.core.Tracer):
        wn = np.asarray(w, float)
        if not np.all(np.isfinite(wn)) or abs(wn.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must be finite and sum to 1; sum is {wn.sum():g}")
    return w


def weighted_average(per_frame, weights=None):
    """Average of per-frame values (F, ...) with frame ``weights`` (uniform when None)."""
    per_frame = jnp.asarray(per_frame)
    return jnp.tensordot(frame_weights(weights, per_frame.shape[0]), per_frame, axes=1)


def block_slices(n_frames: int, n_blocks: int, min_length: int = 2) -> list[slice]:
    """``n_blocks`` consecutive, equal blocks of frames; the last n_frames mod n_blocks frames
    are dropped so that every block estimate has the same variance."""
    if int(n_blocks) != n_blocks or n_blocks < 2:
        raise ValueError(f"n_blocks must be an integer >= 2; got {n_blocks}")
    length = n_frames // int(n_blocks)
    if length < min_length:
        raise ValueError(f"{n_frames} frames are too few for {n_blocks} blocks")
    return [slice(k * length, (k + 1) * length) for k in range(int(n_blocks))]


def standard_error(block_values) -> float:
    """s(x_b)/√n of n block estimates x_b (see the module docstring)."""
    values = np.asarray(block_values, float)
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def standard_covariance(x_blocks, y_blocks) -> float:
    """s(x_b, y_b)/n: covariance of the means of two quantities estimated on the same n blocks
    (``standard_error`` squared when x = y)."""
    x, y = np.asarray(x_blocks, float), np.asarray(y_blocks, float)
    return float(np.cov(x, y, ddof=1)[0, 1] / len(x))


def block_errors(per_frame, n_blocks: int) -> np.ndarray:
    """Standard error of the frame mean of every component of ``per_frame`` (F, ...), from
    ``n_blocks`` contiguous blocks (as ``block_estimate``, elementwise); NaN where there are fewer
    than two frames per block."""
    per_frame = np.asarray(per_frame, float)
    if per_frame.shape[0] < 2 * int(n_blocks):
        return np.full(per_frame.shape[1:], np.nan)
    means = np.stack([per_frame[s].mean(axis=0) for s in block_slices(per_frame.shape[0], n_blocks)])
    return means.std(axis=0, ddof=1) / np.sqrt(len(means))


def block_estimate(fn: Callable[[np.ndarray], float], series, n_blocks: int):
    """Mean and standard error of ``fn`` over ``n_blocks`` contiguous blocks of ``series``.

    Blocks split axis 0 (frames) and are treated as independent, so each should be much longer
    than the correlation time; the last F mod n_blocks frames are dropped.
    """
    series = np.asarray(series)
    values = np.array([fn(series[s]) for s in block_slices(series.shape[0], n_blocks)])
    return float(values.mean()), standard_error(values)
