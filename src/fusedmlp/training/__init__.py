"""Trainers: bottom-up (DFT labels) and top-down (experimental observables, DiffTRe)."""
