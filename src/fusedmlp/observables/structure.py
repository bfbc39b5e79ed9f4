"""Structural observables of MD frames: radial and bond-angle distribution functions.

Frames are positions (F, N, 3) in Å with boxes (F, 3, 3) or one (3, 3) box whose rows are the
lattice vectors. Pairs use the minimum image in fractional coordinates, which finds every pair
closer than half the smallest plane spacing exactly once; cutoffs beyond that are refused.

Each observable has a per-frame form (``*_frames``) and a frame average taking ``weights``
(per-frame weights summing to 1, uniform by default): the DiffTRe trainer computes the per-frame
values once and reweights them, plain averages pass ``weights=None``. Averages are jax arrays, so
they are differentiable with respect to the weights.

Memory stays bounded for MD-size boxes (thousands of atoms): distances are built a block of rows
at a time inside ``jax.lax.map``, never as an F × N × N × 3 array.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..space import plane_spacings
from .averages import weighted_average

_ROW_BLOCK_ELEMENTS = 2**19  # pairs per row block: keeps a block's displacements at a few MB


# --- input checks and frame weights -----------------------------------------------------------


def _frames_and_boxes(frames, boxes):
    """Validated positions (F, N, 3) and boxes (F, 3, 3) as float numpy arrays."""
    frames = np.asarray(frames, float)
    if frames.ndim != 3 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, N, 3); got {frames.shape}")
    if frames.shape[0] < 1 or frames.shape[1] < 2:
        raise ValueError(f"need at least one frame and two atoms; got shape {frames.shape}")
    boxes = np.asarray(boxes, float)
    if boxes.shape == (3, 3):
        boxes = np.broadcast_to(boxes, (frames.shape[0], 3, 3))
    if boxes.shape != (frames.shape[0], 3, 3):
        raise ValueError(f"boxes must have shape (3, 3) or ({frames.shape[0]}, 3, 3); "
                         f"got {boxes.shape}")
    if np.any(np.abs(np.linalg.det(boxes)) < 1e-12):
        raise ValueError("boxes must be non-singular (rows are the lattice vectors)")
    return frames, boxes


def _check_minimum_image(boxes, cutoff: float, name: str) -> None:
    """Refuse cutoffs at which the minimum image could miss or double-count pairs."""
    if not cutoff > 0:
        raise ValueError(f"{name} must be positive; got {cutoff}")
    limit = 0.5 * min(plane_spacings(b).min() for b in boxes)
    if cutoff > limit * (1 + 1e-12):
        raise ValueError(f"{name} = {cutoff:g} Å exceeds half the smallest plane spacing of the "
                         f"boxes ({limit:g} Å): the minimum image is not valid; use a larger box")


def _check_bins(n_bins) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins}")
    return int(n_bins)


def number_density(frames, boxes, weights=None):
    """Weighted average of the number density N/V (Å⁻³)."""
    frames, boxes = _frames_and_boxes(frames, boxes)
    rho = frames.shape[1] / np.abs(np.linalg.det(boxes))
    return weighted_average(rho, weights)


# --- distances, one block of rows at a time ---------------------------------------------------


def _row_block(n_atoms: int) -> int:
    return int(max(1, min(n_atoms, _ROW_BLOCK_ELEMENTS // n_atoms)))


def _row_displacements(i, frac, box):
    """Minimum-image displacements r_j − r_i (N, 3) from atom ``i`` to every atom."""
    df = frac - frac[i]
    return (df - jnp.round(df)) @ box


# --- radial distribution function ---------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_bins", "block"))
def _pair_histogram(positions, box, r_max, n_bins: int, block: int):
    """Ordered-pair counts (i ≠ j) per distance bin of width r_max / n_bins."""
    frac = positions @ jnp.linalg.inv(box)
    atoms = jnp.arange(positions.shape[0])

    def row(i):
        d = jnp.linalg.norm(_row_displacements(i, frac, box), axis=-1)
        k = jnp.floor(d * (n_bins / r_max)).astype(jnp.int32)
        k = jnp.where((atoms == i) | (d >= r_max), n_bins, k)  # overflow bin, dropped below
        return jnp.bincount(k, length=n_bins + 1)

    return jax.lax.map(row, atoms, batch_size=block).sum(0)[:n_bins]


def rdf_bins(r_max: float, n_bins: int):
    """Bin edges (n_bins + 1,) and centres (n_bins,) of the RDF histogram (Å)."""
    edges = np.linspace(0.0, r_max, _check_bins(n_bins) + 1)
    return edges, 0.5 * (edges[1:] + edges[:-1])


def rdf_frames(frames, boxes, r_max: float, n_bins: int):
    """Per-frame radial distribution functions.

    Returns ``r`` (n_bins,) bin centres in Å and ``g`` (F, n_bins): ordered-pair counts divided by
    the ideal-gas count N ρ (4π/3)(r_hi³ − r_lo³) with the frame's density ρ = N/V.
    """
    frames, boxes = _frames_and_boxes(frames, boxes)
    _check_minimum_image(boxes, r_max, "r_max")
    edges, r = rdf_bins(r_max, n_bins)
    n_atoms = frames.shape[1]
    shell = 4.0 * np.pi / 3.0 * np.diff(edges**3)
    block = _row_block(n_atoms)
    g = []
    for pos, box in zip(frames, boxes):
        counts = np.asarray(_pair_histogram(jnp.asarray(pos), jnp.asarray(box), r_max,
                                            int(n_bins), block))
        rho = n_atoms / abs(np.linalg.det(box))
        g.append(counts / (n_atoms * rho * shell))
    return r, np.stack(g)


def rdf(frames, boxes, r_max: float, n_bins: int, weights=None):
    """Radial distribution function g(r) averaged over frames with ``weights``.

    Parameters
    ----------
    frames : (F, N, 3) positions in Å.
    boxes : (F, 3, 3) or (3, 3), rows are lattice vectors.
    r_max : largest distance (Å), at most half the smallest plane spacing.
    n_bins : number of histogram bins on [0, r_max].
    weights : (F,) frame weights summing to 1, or None for a plain average.

    Returns
    -------
    r : (n_bins,) bin centres (Å).
    g : (n_bins,) jax array, g(r) normalised by the ideal-gas shell count at each frame's N/V.
    """
    r, g = rdf_frames(frames, boxes, r_max, n_bins)
    return r, weighted_average(g, weights)


def coordination_number(r, g, density, r_cut: float):
    """Number of neighbours within ``r_cut``: ∫_0^{r_cut} 4π ρ r² g(r) dr.

    ``g`` is read as a histogram on uniformly spaced bins centred at ``r`` (as returned by
    ``rdf``), constant within each bin and zero below the first, so the integral over whole bins
    recovers the pair counts exactly; the bin containing ``r_cut`` contributes its covered part.
    """
    r = np.asarray(r, float)
    if r.ndim != 1 or r.size < 2:
        raise ValueError("r must be a 1-d array of at least two bin centres")
    dr = r[1] - r[0]
    if dr <= 0 or not np.allclose(np.diff(r), dr, rtol=1e-6, atol=0.0):
        raise ValueError("r must be uniformly spaced, increasing bin centres")
    g = jnp.asarray(g)
    if g.shape != r.shape:
        raise ValueError(f"g must match r: shapes {g.shape} and {r.shape}")
    lo, hi = r - 0.5 * dr, r + 0.5 * dr
    if not 0 <= r_cut <= hi[-1] * (1 + 1e-12):
        raise ValueError(f"r_cut = {r_cut:g} Å lies outside the histogram [0, {hi[-1]:g}] Å")
    top = np.clip(r_cut, lo, hi)  # covered part of each bin
    shell = 4.0 * np.pi / 3.0 * (top**3 - lo**3)
    return density * jnp.sum(g * shell)


# --- angular distribution function ----------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("block",))
def _neighbor_counts(positions, box, r_cut, block: int):
    """Number of neighbours within ``r_cut`` of each atom (N,)."""
    frac = positions @ jnp.linalg.inv(box)
    atoms = jnp.arange(positions.shape[0])

    def row(i):
        d2 = jnp.sum(_row_displacements(i, frac, box) ** 2, axis=-1)
        return jnp.sum((d2 < r_cut**2) & (atoms != i))

    return jax.lax.map(row, atoms, batch_size=block)


@functools.partial(jax.jit, static_argnames=("n_bins", "max_neighbors", "block"))
def _angle_histogram(positions, box, r_cut, n_bins: int, max_neighbors: int, block: int):
    """Counts of angles θ_jik (j < k neighbours of i within r_cut) in bins of 180°/n_bins.

    Each atom keeps its ``max_neighbors`` nearest candidates (top_k); the caller guarantees that
    no atom has more neighbours than that within ``r_cut``, so nothing is dropped.
    """
    frac = positions @ jnp.linalg.inv(box)
    atoms = jnp.arange(positions.shape[0])
    pair = jnp.triu(jnp.ones((max_neighbors, max_neighbors), bool), k=1)

    def row(i):
        dr = _row_displacements(i, frac, box)
        d2 = jnp.where(atoms == i, jnp.inf, jnp.sum(dr**2, axis=-1))
        neg_d2, nbr = jax.lax.top_k(-d2, max_neighbors)
        inside = -neg_d2 < r_cut**2
        u = dr[nbr] / jnp.sqrt(jnp.where(inside, -neg_d2, 1.0))[:, None]
        theta = jnp.degrees(jnp.arccos(jnp.clip(u @ u.T, -1.0, 1.0)))
        k = jnp.clip(jnp.floor(theta * (n_bins / 180.0)).astype(jnp.int32), 0, n_bins - 1)
        k = jnp.where(pair & inside[:, None] & inside[None, :], k, n_bins)
        return jnp.bincount(k.ravel(), length=n_bins + 1)

    return jax.lax.map(row, atoms, batch_size=block).sum(0)[:n_bins]


def adf_bins(n_bins: int):
    """Bin edges (n_bins + 1,) and centres (n_bins,) of the ADF histogram on [0, 180]°."""
    edges = np.linspace(0.0, 180.0, _check_bins(n_bins) + 1)
    return edges, 0.5 * (edges[1:] + edges[:-1])


def adf_frames(frames, boxes, r_cut: float, n_bins: int, max_neighbors: int | None = None):
    """Per-frame bond-angle distributions.

    Returns ``theta`` (n_bins,) bin centres in degrees and ``p`` (F, n_bins), each frame's
    histogram of θ_jik over all atoms i and pairs j ≠ k of neighbours within ``r_cut``,
    normalised to a density per degree (Σ p Δθ = 1).

    ``max_neighbors`` fixes the per-atom candidate count (avoids recompiling across calls); a
    frame with an atom over it raises ValueError. By default it is the largest count in the data.
    """
    frames, boxes = _frames_and_boxes(frames, boxes)
    _check_minimum_image(boxes, r_cut, "r_cut")
    edges, theta = adf_bins(n_bins)
    block = _row_block(frames.shape[1])
    pos_box = [(jnp.asarray(p), jnp.asarray(b)) for p, b in zip(frames, boxes)]
    counts = np.stack([np.asarray(_neighbor_counts(p, b, r_cut, block)) for p, b in pos_box])
    most = int(counts.max())
    if max_neighbors is None:
        max_neighbors = most
    elif most > max_neighbors:
        raise ValueError(f"an atom has {most} neighbours within r_cut = {r_cut:g} Å, more than "
                         f"max_neighbors = {max_neighbors}; raise max_neighbors")
    max_neighbors = min(int(max_neighbors), frames.shape[1] - 1)
    n_angles = (counts * (counts - 1) // 2).sum(axis=1)
    if np.any(n_angles == 0):
        raise ValueError(f"a frame has no atom with two neighbours within r_cut = {r_cut:g} Å")
    p = []
    for (pos, box), n in zip(pos_box, n_angles):
        hist = np.asarray(_angle_histogram(pos, box, r_cut, int(n_bins), max_neighbors, block))
        if hist.sum() != n:  # top_k kept every neighbour, so every angle must be binned
            raise RuntimeError(f"binned {hist.sum()} angles, expected {n}")
        p.append(hist / (n * np.diff(edges)))
    return theta, np.stack(p)


def adf(frames, boxes, r_cut: float, n_bins: int, weights=None, max_neighbors: int | None = None):
    """Bond-angle distribution p(θ) averaged over frames with ``weights``.

    Parameters
    ----------
    frames : (F, N, 3) positions in Å.
    boxes : (F, 3, 3) or (3, 3), rows are lattice vectors.
    r_cut : neighbour cutoff (Å), at most half the smallest plane spacing.
    n_bins : number of bins on [0, 180]°.
    weights : (F,) frame weights summing to 1, or None for a plain average.
    max_neighbors : per-atom candidate count, see ``adf_frames``.

    Returns
    -------
    theta : (n_bins,) bin centres (degrees).
    p : (n_bins,) jax array, density per degree with ∫ p dθ = 1.
    """
    theta, p = adf_frames(frames, boxes, r_cut, n_bins, max_neighbors)
    return theta, weighted_average(p, weights)
