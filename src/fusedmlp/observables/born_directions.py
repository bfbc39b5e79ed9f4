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

Control variates. A frame's directional stiffnesses follow its normal Born stresses closely (a
locally compressed configuration is stiffer along every direction): on EAM frames of hcp Ti at
323 K these explain 94–96 % of the variance of y_d along e_a + e_b and 73–86 % along most e_a.
The normal stresses are known on every frame, so with slopes β_d

    ȳ_d = Σ_{f∋d} w_f (y_fd − β_d·x_f) / Σ_{f∋d} w_f  +  β_d · Σ_f w_f x_f / Σ_f w_f

replaces the noise of x over the frames that carry d by its noise over all frames. For any β_d
that does not depend on which frames carry d, the second term cancels the first's x part on
average over the D offsets, so the estimator stays exactly as unbiased as without it. The
trainer fits β_d by least squares (an intercept per trajectory; shrunk toward zero while frames
are few) on every trajectory but the one it corrects: the state point's earlier ones and those of
the state points that share its structure and directions (``BornFit``; ``fit_update``,
``fit_pool``, ``fit_slopes``). On the EAM frames this halves the added noise of C12 and C13 and
cuts that of C11, C33 and C44 by a quarter to a third (``benchmarks/difftre_cost.py``). The
shear stresses are left out: for a crystal with mirror planes the stiffnesses are even in them,
so they would add coefficients to fit and no signal.

The direction set depends only on the crystal's symmetry and the targeted constants.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from ..elastic import SYMMETRY_CONSTANTS, reduce_stiffness

COVARIATES = 3  # the normal Born stresses (Voigt 0-2)
# frames per direction before its slopes are used (fewer: β = 0): one per fitted coefficient
MIN_FIT_FRAMES = COVARIATES + 1
# The slopes shrink toward zero (no correction) as if one more frame had the covariates' mean
# variance and no response: fitted on 4-5 frames per direction (one 40-frame trajectory with one
# direction per frame), they then cut the added noise of C13 by a quarter where unshrunk ones
# quadruple it, and a fit on hundreds barely shrinks (EAM frames of hcp Ti at 323 K).
PRIOR_FRAMES = 1.0


def covariates(born_stress):
    """The control variates of the directional stiffnesses (module docstring): the frames'
    normal Born stresses (F, 3) of the Voigt Born stresses ``born_stress`` (F, 6)."""
    return born_stress[..., :COVARIATES]


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

    def mean_stiffness(self, y, index, weights=None, born_stress=None, slopes=None):
        """⟨Cᴮ⟩ (6×6, needed entries) from the frames' directional stiffnesses ``y`` (F, p) carried
        along directions ``index`` (F, p), with per-frame ``weights`` (None: uniform); with
        ``slopes`` (D, 3), corrected by the control variates of the frames' ``born_stress``
        (F, 6; module docstring). Differentiable in ``y``, ``born_stress`` and ``weights``
        (NumPy or JAX)."""
        import jax.numpy as jnp

        onehot = jnp.asarray(index[..., None] == np.arange(self.count), y.dtype)  # (F, p, D)
        w = jnp.ones(y.shape[0], y.dtype) if weights is None else weights
        carried = jnp.einsum("f,fpd->d", w, onehot)
        y_mean = jnp.einsum("f,fp,fpd->d", w, y, onehot) / carried
        if slopes is not None:
            x = covariates(born_stress)
            x_all = jnp.einsum("f,fc->c", w, x) / jnp.sum(w)
            x_carried = jnp.einsum("f,fc,fpd->dc", w, x, onehot) / carried[:, None]
            y_mean = y_mean + jnp.sum(jnp.asarray(slopes, y.dtype) * (x_all - x_carried), axis=1)
        return (jnp.asarray(self.to_stiffness, y.dtype) @ y_mean).reshape(6, 6)


class BornFit(NamedTuple):
    """Least-squares statistics of each direction's stiffness y on the covariates x of the frames
    that carried it, each batch of frames (a trajectory) centred on its own means (an intercept
    per trajectory: the relation within a trajectory, whatever its mean or its model): counts
    (D,), sums Σ δx δxᵀ (D, 3, 3) and Σ δx δy (D, 3). Centred sums keep the float32 of a
    checkpoint exact enough (raw sums would cancel: the stresses fluctuate by a few % of their
    mean). A pytree (a named tuple), so that a trainer's checkpointed state can hold it."""

    count: np.ndarray
    sxx: np.ndarray
    sxy: np.ndarray


def fit_init(count: int, dtype=np.float32) -> BornFit:
    """No frames yet, for ``count`` directions."""
    c = COVARIATES
    return BornFit(np.zeros(count, dtype), np.zeros((count, c, c), dtype), np.zeros((count, c), dtype))


def fit_update(fit: BornFit, y, index, born_stress) -> BornFit:
    """``fit`` with one trajectory's frames added: their directional stiffnesses ``y`` (F, p)
    along ``index`` (F, p) and their Born stresses (F, 6) (unweighted: the relation, not an
    ensemble average)."""
    y, index = np.asarray(y, float), np.asarray(index)
    x = np.asarray(covariates(np.asarray(born_stress, float)))
    count, sxx, sxy = (np.array(a, float) for a in fit)
    for d in range(len(count)):
        frame, slot = np.nonzero(index == d)
        if not len(frame):
            continue
        xc, yc = x[frame] - x[frame].mean(0), y[frame, slot] - y[frame, slot].mean()
        count[d] += len(frame)
        sxx[d] += xc.T @ xc
        sxy[d] += xc.T @ yc
    dtype = np.asarray(fit.count).dtype
    return BornFit(*(np.asarray(a, dtype) for a in (count, sxx, sxy)))


def fit_pool(fits) -> BornFit:
    """The statistics of several fits' trajectories together (each keeps its intercepts)."""
    fits = list(fits)
    dtype = np.asarray(fits[0].count).dtype
    return BornFit(*(np.asarray(sum(np.asarray(f[i], float) for f in fits), dtype) for i in range(3)))


def fit_slopes(fit: BornFit, min_frames: int = MIN_FIT_FRAMES, prior_frames: float = PRIOR_FRAMES) -> np.ndarray:
    """The slopes β_d (D, 3) of y_d on x: least squares, shrunk toward zero by a ridge of
    ``prior_frames`` frames of the covariates' mean variance (``PRIOR_FRAMES``); zero for a
    direction with fewer than ``min_frames`` frames."""
    count = np.asarray(fit.count, float)
    out = np.zeros(np.shape(fit.sxy))
    for d in np.nonzero(count >= min_frames)[0]:
        sxx = np.asarray(fit.sxx[d], float)
        ridge = prior_frames * np.trace(sxx) / (len(sxx) * count[d])
        out[d] = np.linalg.lstsq(sxx + ridge * np.eye(len(sxx)), np.asarray(fit.sxy[d], float), rcond=None)[0]
    return out


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
