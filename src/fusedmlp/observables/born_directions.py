"""The mean Born stiffness from a few strain directions per frame (stratified sampling).

An elastic-constant loss reads the reweighted mean ⟨Cᴮ⟩ only through the entries its symmetry
reduction averages (hexagonal C11, C33, C44, C12, C13: 9 of the 21). Each entry is a combination of
directional stiffnesses y_d = dᵀ Cᴮ d (``stress.born_directional``: one forward-over-forward pass)
along the directions

    e_a for every needed diagonal entry and every index of a needed off-diagonal one,
    e_a + e_b for every needed off-diagonal entry:     Cᴮ_ab = ½ (y_{a+b} − y_a − y_b).

(The pair e_a ± e_b, Cᴮ_ab = ¼ (y_{a+b} − y_{a−b}), needs no diagonal terms but three more
directions for hexagonal targets, so fewer frames per direction: on EAM frames of hcp Ti at 323 K
it added more noise to C33, C44 and C13 than this set, ``benchmarks/difftre_cost.py``.)

Frames share the D directions round-robin: frame i carries directions (i p + j + offset) mod D,
j < p. Each ȳ_d is the weighted mean over the frames that carry d, with the weights renormalised
over those frames (a ratio estimator, like the reweighted averages themselves), so

- p = D gives the exact ⟨Cᴮ⟩ on the needed entries (equal to the full tensor's to round-off);
- p < D estimates each ȳ_d from about p/D of the frames: the frames are a thermal sample, so the
  estimator adds the thermal noise of ⟨Cᴮ⟩ over fewer frames and nothing else (the spread between
  directions, of the size of Cᴮ itself, does not enter); averaged over the D offsets with uniform
  weights it is the exact mean.

The direction set depends only on the crystal's symmetry and the targeted constants.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..elastic import SYMMETRY_CONSTANTS, reduce_stiffness


@dataclasses.dataclass(frozen=True)
class BornDirections:
    """Strain directions (D, 6) and the linear map (36, D) from their mean stiffnesses ȳ to the
    needed entries of the 6×6 Cᴮ (the other entries zero)."""

    vectors: np.ndarray
    to_stiffness: np.ndarray

    @property
    def count(self) -> int:
        return len(self.vectors)

    def assign(self, n_frames: int, per_frame: int, offset: int = 0) -> np.ndarray:
        """(F, p) direction indices of the frames: round-robin, every direction on at least one
        frame."""
        if not 1 <= per_frame <= self.count:
            raise ValueError(f"born directions per frame {per_frame}: expected 1 to {self.count} "
                             f"(the directions the targets need)")
        if n_frames * per_frame < self.count:
            raise ValueError(f"{n_frames} frames × {per_frame} born directions per frame cannot cover the "
                             f"{self.count} directions the targets need: record more frames or raise "
                             "born_directions")
        i = np.arange(n_frames)[:, None] * per_frame + np.arange(per_frame)[None, :]
        return (i + offset) % self.count

    def mean_stiffness(self, y, index, weights=None):
        """⟨Cᴮ⟩ (6×6, needed entries) from the frames' directional stiffnesses ``y`` (F, p) carried
        along directions ``index`` (F, p), with per-frame ``weights`` (None: uniform).
        Differentiable in ``y`` and ``weights`` (NumPy or JAX)."""
        import jax.numpy as jnp

        onehot = jnp.asarray(index[..., None] == np.arange(self.count), y.dtype)  # (F, p, D)
        w = jnp.ones(y.shape[0], y.dtype) if weights is None else weights
        y_mean = jnp.einsum("f,fp,fpd->d", w, y, onehot) / jnp.einsum("f,fpd->d", w, onehot)
        return (jnp.asarray(self.to_stiffness, y.dtype) @ y_mean).reshape(6, 6)


def needed_entries(symmetry: str, constants) -> list[tuple[int, int]]:
    """Entries (a ≤ b) of a symmetric 6×6 stiffness that the named constants of ``symmetry``
    (``elastic.reduce_stiffness``) read."""
    out = []
    for a in range(6):
        for b in range(a, 6):
            e = np.zeros((6, 6))
            e[a, b] = e[b, a] = 1.0
            reduced = reduce_stiffness(e, symmetry)
            if any(reduced[c] != 0.0 for c in constants):
                out.append((a, b))
    return out


def stiffness_constants(symmetry: str, constants, normal_block: bool = False) -> list[str]:
    """``constants``, and with ``normal_block`` every other constant of ``symmetry`` that reads an
    entry of the normal-stress block (a, b < 3; what B α of a thermal expansion α needs)."""
    out = list(constants)
    if normal_block:
        out += [c for c in SYMMETRY_CONSTANTS[symmetry] if c not in out
                and any(a < 3 and b < 3 for a, b in needed_entries(symmetry, [c]))]
    return out


def born_directions(symmetry: str, constants) -> BornDirections:
    """The directions and reconstruction for the constants ``constants`` of a crystal of
    ``symmetry`` (module docstring)."""
    entries = needed_entries(symmetry, constants)
    if not entries:
        raise ValueError(f"no Born stiffness entry is read by {list(constants)} ({symmetry} symmetry)")
    diagonal = sorted({a for a, b in entries} | {b for a, b in entries})
    off = [(a, b) for a, b in entries if a != b]
    eye = np.eye(6)
    vectors = [eye[a] for a in diagonal] + [eye[a] + eye[b] for a, b in off]
    index = {a: k for k, a in enumerate(diagonal)}
    r = np.zeros((6, 6, len(vectors)))
    for a in diagonal:
        if (a, a) in entries:
            r[a, a, index[a]] = 1.0
    for k, (a, b) in enumerate(off, start=len(diagonal)):
        for x, y in ((a, b), (b, a)):
            r[x, y, k] += 0.5
            r[x, y, index[a]] -= 0.5
            r[x, y, index[b]] -= 0.5
    return BornDirections(np.asarray(vectors), r.reshape(36, len(vectors)))
