"""Checkpoints of arbitrary pytrees (parameters, optimizer states) as npz files, atomically.

A checkpoint stores the leaves and a JSON record; it is restored into the structure of a
template pytree (built from the same settings), which also checks that it still fits.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..io import InputError, save_npz


def save(path, trees: dict, record: dict) -> None:
    arrays = {}
    for name, tree in trees.items():
        for k, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
            arrays[f"{name}:{k}"] = np.asarray(leaf)
    save_npz(path, record=np.array(json.dumps(record)), **arrays)


def read_record(path) -> dict:
    """The JSON record of a checkpoint alone (what run wrote it)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["record"]))
    except Exception as exc:
        raise InputError(path, None, f"unreadable checkpoint ({exc})") from exc


def load(path, templates: dict) -> tuple[dict, dict]:
    """(trees shaped like ``templates``, record)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            record = json.loads(str(z["record"]))
            arrays = {k: z[k] for k in z.files if k != "record"}
    except Exception as exc:
        raise InputError(path, None, f"unreadable checkpoint ({exc})") from exc
    trees = {}
    for name, template in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten(template)
        got = [arrays.get(f"{name}:{k}") for k in range(len(leaves))]
        for k, (want, have) in enumerate(zip(leaves, got)):
            if have is None or np.shape(want) != have.shape:
                raise InputError(path, name, f"checkpoint does not fit the current settings (leaf {k})")
        trees[name] = jax.tree_util.tree_unflatten(
            treedef, [jnp.asarray(a, dtype=jnp.asarray(t).dtype) for a, t in zip(got, leaves)])
    return trees, record
