"""One dataset of several levels of theory (fidelities), from one dataset per level.

The canonical format carries each configuration's level in ``fidelity`` and masks for the labels
it lacks, so a level with energies only (a coupled-cluster set, say) is a level whose forces and
virials are masked. The same structure may appear at every level; splits group its copies
(``data.splits.split_by_structure``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..io import InputError
from .dataset import Dataset, concatenate


def combine_levels(datasets: Sequence[Dataset], sources: Sequence) -> Dataset:
    """The concatenation of ``datasets``, one per level of theory (``sources`` name their files
    in errors): each must hold a single level, and no level may come twice."""
    seen: dict[str, object] = {}
    for ds, src in zip(datasets, sources):
        levels = sorted(set(ds.fidelity.tolist()))
        if len(levels) != 1 or not levels[0]:
            raise InputError(src, "fidelity", f"expected one level-of-theory label for every "
                                              f"configuration, got {levels}")
        if levels[0] in seen:
            raise InputError(src, "fidelity", f"level {levels[0]!r} is also the level of {seen[levels[0]]}")
        seen[levels[0]] = src
    meta = {"levels": {str(ds.fidelity[0]): {"file": str(src), **ds.metadata}
                       for ds, src in zip(datasets, sources)}}
    return concatenate(list(datasets), metadata=meta)


def level_counts(ds: Dataset) -> dict[str, dict[str, int]]:
    """Configurations and labels (energies, forces, virials) of each level, for logs."""
    out = {}
    for level in dict.fromkeys(ds.fidelity.tolist()):
        sel = ds.fidelity == level
        out[level] = {"configurations": int(sel.sum()), "energies": int(ds.energy_mask[sel].sum()),
                      "forces": int(ds.forces_mask[sel].sum()), "virials": int(ds.virial_mask[sel].sum())}
    return out
