"""Periodic geometry: fractional coordinates, minimum images and all periodic images in range.

Boxes follow the dataset convention: ``box`` rows are the lattice vectors, so a position is
``frac @ box``. Cells may be triclinic and narrower than twice the cutoff (as DFT cells often
are): ``image_shifts`` then lists every lattice translation whose image of an atom can lie within
the cutoff, so an atom may interact with several images of a neighbour and with its own images.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def to_fractional(positions, box):
    return positions @ jnp.linalg.inv(box)


def edge_displacements(positions, box, neighbors, shifts):
    """d[i, s] = r_j + n_s·box − r_i with j = neighbors[i, s] and n_s = shifts[i, s]: the
    periodic edge vector of every graph and list in the package, in one place. Plain indexing
    and ``@``, so it takes NumPy arrays on the host and JAX arrays (differentiable) alike."""
    return positions[neighbors] + shifts @ box - positions[:, None, :]


def plane_spacings(box) -> np.ndarray:
    """Distances between opposite faces of the cell, one per lattice direction (Å)."""
    box = np.asarray(box, float)
    recip = np.linalg.inv(box).T  # rows b_k with a_i · b_k = δ_ik
    return 1.0 / np.linalg.norm(recip, axis=1)


def image_shifts(box, cutoff: float) -> np.ndarray:
    """Integer lattice translations n (M×3) that reach every image within ``cutoff``.

    Fractional separations are first wrapped into [-1/2, 1/2), so along direction k an image is
    needed while |Δf_k + n_k| · d_k ≤ cutoff with d_k the plane spacing: |n_k| ≤ cutoff/d_k + 1/2.
    """
    n_max = np.floor(cutoff / plane_spacings(box) + 0.5).astype(int)
    axes = [np.arange(-m, m + 1) for m in n_max]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)


def all_image_displacements(positions, box, shifts):
    """Displacements r_j + n·box − r_i for all atom pairs and all ``shifts``.

    Returns ``dr`` (N, N, M, 3) and ``self_mask`` (N, N, M), True for the excluded i == j, n = 0
    entry. Dense in N² M: meant for the small cells of reference labelling, not for MD-size boxes.
    """
    frac = to_fractional(positions, box)
    dfrac = frac[None, :, :] - frac[:, None, :]
    dfrac = dfrac - jnp.round(dfrac)  # minimum-image in fractional space, then add shifts
    dr = (dfrac[:, :, None, :] + shifts[None, None, :, :]) @ box
    n = positions.shape[0]
    zero = jnp.all(shifts == 0, axis=-1)
    self_mask = jnp.eye(n, dtype=bool)[:, :, None] & zero[None, None, :]
    return dr, self_mask


def wrap_positions(positions, box):
    """Positions mapped into the cell (fractional coordinates in [0, 1))."""
    positions = np.asarray(positions, float)
    box = np.asarray(box, float)
    frac = positions @ np.linalg.inv(box)
    return (frac - np.floor(frac)) @ box
