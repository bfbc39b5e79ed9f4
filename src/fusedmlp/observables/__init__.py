"""Observables of MD frames: pure functions of frames (and of an energy function), written so the
DiffTRe trainer can average them with reweighting weights and the evaluation rules with plain
averages (``weights=None``)."""
