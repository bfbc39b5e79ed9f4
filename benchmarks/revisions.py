"""The package of this checkout and, optionally, of another git revision, for benchmarks that
measure both side by side: worker processes import ``fusedmlp`` from the source folder given
on their PYTHONPATH, so that two numbers of one run share the machine's state."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def source_trees(against: str | None):
    """``{"this checkout": src, against: src}``: the second from a temporary git worktree,
    removed on exit."""
    trees = {"this checkout": ROOT / "src"}
    if not against:
        yield trees
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", tmp + "/tree", against],
                       check=True, capture_output=True)
        try:
            yield {**trees, against: Path(tmp) / "tree" / "src"}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tmp + "/tree"],
                           capture_output=True)
