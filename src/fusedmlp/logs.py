"""Logging for workflow jobs: everything goes to the rule's log file and to stderr."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup(log_file=None, level=logging.INFO) -> logging.Logger:
    """Route the package's log records (and warnings) to ``log_file`` and stderr.

    JAX's persistent compilation cache is not set here: the workflow exports it to every job as
    JAX_COMPILATION_CACHE_DIR (from ``compute.jax_cache``; unset turns it off), and JAX reads it
    at import."""
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
