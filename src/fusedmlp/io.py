"""Atomic file output: a reader never sees a half-written result.

Everything is first written to a temporary file in the destination directory and then moved
into place with ``os.replace`` (atomic on POSIX within one file system). If writing fails, the
temporary file is removed and any earlier file at the destination is left untouched.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


class InputError(ValueError):
    """Bad input: the message names the file, the field and what was expected."""

    def __init__(self, source, field: str | None, message: str):
        self.source = str(source)
        self.field = field
        self.message = message
        where = f"{source}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {message}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success, with the
    mode of an ordinary new file (``mkstemp`` makes it 0600, which on a shared cluster project
    would hide every result from the rest of the group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    # A writer killed mid-write (kill -9, the OOM killer) leaves its temporary file behind; one
    # job writes each file, so the next write of it clears what an earlier one left.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{suffix}"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz(path, **arrays) -> None:
    """``np.savez_compressed`` without pickles, atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
