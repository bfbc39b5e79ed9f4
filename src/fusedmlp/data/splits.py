"""Deterministic train/validation/test splits.

The fused-training paper splits its DFT release in file order 70/10/20 (5704 configurations →
3994/570/1140): validation and test sizes are rounded down and the training set takes the rest.
A seeded shuffle is available for data whose file order is correlated with anything that matters.

Splits are taken over structures, not configurations (``split_by_structure``): a dataset of
several levels of theory holds each structure once per level, and a structure in the training
set at one level and in the test set at another would leak its labels into the test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from ..io import InputError, write_json

NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    shuffle: bool = False
    seed: int = 0


def split_indices(n: int, settings: SplitSettings = SplitSettings()) -> dict[str, np.ndarray]:
    """Indices of the train, val and test subsets of ``n`` configurations."""
    fr = np.asarray(settings.fractions, float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got "
                         f"{list(settings.fractions)}")
    n_val = int(np.floor(fr[1] * n + 1e-9))
    n_test = int(np.floor(fr[2] * n + 1e-9))
    n_train = n - n_val - n_test
    order = np.arange(n)
    if settings.shuffle:
        order = np.random.default_rng(settings.seed).permutation(n)
    return {"train": np.sort(order[:n_train]),
            "val": np.sort(order[n_train:n_train + n_val]),
            "test": np.sort(order[n_train + n_val:])}


# Positions and cells are compared after rounding to 1e-5 Å: the same structure read from two
# files (an XYZ text round trip) is one structure, distinct structures differ by far more.
KEY_DECIMALS = 5


def structure_keys(ds) -> np.ndarray:
    """A key per configuration, equal for configurations of the same structure (species,
    positions and cell equal to 1e-5 Å), whatever their labels or level of theory."""
    keys = []
    for i in range(len(ds)):
        c = ds.config(i)
        h = hashlib.sha1()
        for a in (np.asarray(c["species"], np.int64), np.round(c["box"], KEY_DECIMALS) + 0.0,
                  np.round(c["positions"], KEY_DECIMALS) + 0.0):  # + 0.0: -0.0 and 0.0 are one
            h.update(np.ascontiguousarray(a).tobytes())
        keys.append(h.hexdigest())
    return np.array(keys)


def split_by_structure(ds, settings: SplitSettings = SplitSettings()) -> dict[str, np.ndarray]:
    """``split_indices`` over the distinct structures of ``ds`` (in order of first appearance),
    every configuration going with its structure: one structure at several levels of theory is
    in one subset at all of them. Without repeated structures it equals ``split_indices(len(ds))``."""
    keys = structure_keys(ds)
    _, first, structure = np.unique(keys, return_index=True, return_inverse=True)
    # number the structures in order of first appearance, so file order means the same as before
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    structure = rank[structure.ravel()]
    by_structure = split_indices(len(order), settings)
    return {k: np.nonzero(np.isin(structure, v))[0] for k, v in by_structure.items()}


def save_split(path, split: dict[str, np.ndarray], settings: SplitSettings, dataset_path=None,
               dataset_sha256: str | None = None) -> None:
    write_json(path, {"settings": dataclasses.asdict(settings),
                      "dataset": None if dataset_path is None else str(dataset_path),
                      "dataset_sha256": dataset_sha256,
                      **{k: np.asarray(split[k]).tolist() for k in NAMES}})


def load_split(path, n_configurations: int | None = None) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, None, f"not a readable split file ({exc})") from exc
    out = {}
    for k in NAMES:
        if k not in raw:
            raise InputError(path, k, "index list missing")
        out[k] = np.asarray(raw[k], np.int64)
    allidx = np.concatenate([out[k] for k in NAMES])
    if len(np.unique(allidx)) != len(allidx):
        raise InputError(path, None, "train/val/test index lists overlap")
    if n_configurations is not None and len(allidx) and allidx.max() >= n_configurations:
        raise InputError(path, None, f"indices up to {allidx.max()} for a dataset of "
                                     f"{n_configurations} configurations (stale split file?)")
    return out
