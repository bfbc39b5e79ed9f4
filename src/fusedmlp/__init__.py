"""fusedmlp: machine-learning interatomic potentials trained on fused DFT and experimental data."""

import os as _os
from importlib import metadata as _metadata

__version__ = "0.1.0"

# XLA:CPU hands the model's narrow dense layers (16–64 features, thousands of edge rows) to
# YNNPACK fusions by default; without them they are Eigen dots, and the paper model's MD runs
# 1.13–1.17x faster on 2 cores, also with two jobs sharing them (benchmarks/model_throughput.py).
# XLA reads XLA_FLAGS when JAX creates its first backend, which no import of the package does, so
# setting it here reaches every job and benchmark. A user's XLA_FLAGS that names the flag wins.
# XLA aborts on a flag it does not know: only for the jaxlib series this was measured with.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def _xla_cpu_defaults() -> None:
    flags = _os.environ.get("XLA_FLAGS", "")
    try:
        known = _metadata.version("jaxlib").startswith("0.10.")
    except _metadata.PackageNotFoundError:
        known = False
    if known and _YNN_FLAG not in flags:
        _os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}=".strip()


_xla_cpu_defaults()
