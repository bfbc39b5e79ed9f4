"""Deterministic train/validation/test splits.

The fused-training paper splits its DFT release in file order 70/10/20 (5704 configurations →
3994/570/1140): validation and test sizes are rounded down and the training set takes the rest.
A seeded shuffle is available for data whose file order is correlated with anything that matters.
"""

from __future__ import annotations

import dataclasses
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
