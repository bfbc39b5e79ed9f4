"""Evaluation of trained models: reference-data errors and physical properties."""
