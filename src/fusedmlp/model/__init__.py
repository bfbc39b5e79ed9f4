"""Machine-learning potentials: graphs, DimeNet++, the energy function and model files."""
