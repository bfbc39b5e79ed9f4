"""Logging for workflow jobs: everything goes to the rule's log file and to stderr."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup(log_file=None, level=logging.INFO, jax_cache: str | None = "results/.jax_cache") -> logging.Logger:
    """Route the package's log records (and warnings) to ``log_file`` and stderr, and keep
    compiled JAX programs in ``jax_cache`` so that jobs with the same shapes (the sequential
    and fused trainers, reruns) do not compile them again."""
    if jax_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(True)
    log = logging.getLogger("fusedmlp")

    def excepthook(exc_type, exc, tb):
        # An uncaught error ends up in the rule's log, not only on the terminal.
        log.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = excepthook
    return log
