"""Analytic reference potentials that stand in for DFT in the embedded demo."""

from .eam import ReferenceCalculator, ZhouParams, scaled, zhou2004


def level_params(reference_config: dict, level: str) -> ZhouParams:
    """Parameters of one configured level of theory (``reference.levels.<level>``)."""
    levels = reference_config["levels"]
    if level not in levels:
        raise KeyError(f"unknown reference level {level!r}; configured: {sorted(levels)}")
    s = levels[level]
    return scaled(zhou2004(reference_config["element"]), s.get("alpha_scale", 1.0),
                  s.get("A_scale", 1.0), s.get("length_scale", 1.0))


__all__ = ["ReferenceCalculator", "ZhouParams", "scaled", "zhou2004", "level_params"]
