"""Molecular dynamics on jax-md with any energy function of this package."""
