"""fusedmlp: machine-learning interatomic potentials trained on fused DFT and experimental data."""

__version__ = "0.1.0"
