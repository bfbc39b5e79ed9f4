"""Jitted programs compiled once per campaign, also when jobs reach them side by side.

JAX's persistent compilation cache lets a job load what an earlier job compiled. Jobs that
start together (the sequential and fused trainers, one property of two models) reach the same
program at the same moment, both miss, and both compile it: minutes of CPU for the DiffTRe
gradient. A ``Program`` lowers its function at the first call with a new signature and compiles
under an exclusive file lock named by the hash of the lowered module, in the cache directory:
the second job waits for the first and then loads its result from the cache.

Without a cache directory (``compute.jax_cache: ""``) a ``Program`` is an ordinary ``jax.jit``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import jax

log = logging.getLogger(__name__)


def _leaf_signature(x):
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return (tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)))
    return (type(x).__name__,)  # a Python scalar: traced, weakly typed


def signature(args, kwargs, static: Sequence[int] = ()) -> tuple:
    """What selects a compiled program: tree structure, shapes and dtypes of the traced
    arguments, and the values of the static ones."""
    traced = [a for i, a in enumerate(args) if i not in static]
    leaves, tree = jax.tree_util.tree_flatten((traced, kwargs))
    return tree, tuple(_leaf_signature(x) for x in leaves), tuple(args[i] for i in static)


def cache_dir() -> Path | None:
    d = jax.config.jax_compilation_cache_dir
    return Path(d) if d else None


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        t0 = time.time()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks (some network mounts)
            log.warning("no compile lock on %s (%s): concurrent jobs may compile the same program", path, exc)
            yield
            return
        waited = time.time() - t0
        if waited > 1.0:
            log.info("waited %.0f s for another job compiling the same program", waited)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compile_shared(lowered):
    """Compile ``lowered`` (a ``jax.stages.Lowered``) under the lock of its module's hash."""
    root = cache_dir()
    if root is None:
        return lowered.compile()
    digest = hashlib.sha256(lowered.as_text().encode()).hexdigest()[:24]
    with _lock(root / "locks" / f"{digest}.lock"):
        return lowered.compile()


class Program:
    """``jax.jit(fun, static_argnums)`` whose compilations go through ``compile_shared``."""

    def __init__(self, fun: Callable, static_argnums: Sequence[int] = ()):
        self.jitted = jax.jit(fun, static_argnums=tuple(static_argnums))
        self.static = tuple(static_argnums)
        self.compiled: dict = {}

    def __call__(self, *args, **kwargs):
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((args, kwargs))):
            return self.jitted(*args, **kwargs)  # inside another program's trace: inlined there
        key = signature(args, kwargs, self.static)
        fn = self.compiled.get(key)
        if fn is None:
            fn = self.compiled[key] = compile_shared(self.jitted.lower(*args, **kwargs))
        return fn(*[a for i, a in enumerate(args) if i not in self.static], **kwargs)
