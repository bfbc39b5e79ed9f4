"""The DFT trainer's settings, built from the validated configuration (the model's own settings
are in ``model.settings``)."""

from __future__ import annotations

import dataclasses

from .dft import DFTTrainerSettings


def dft_trainer_settings(cfg: dict, head: int = 0) -> DFTTrainerSettings:
    p = cfg["pretrain"]
    return DFTTrainerSettings(**{f.name: p[f.name] for f in dataclasses.fields(DFTTrainerSettings)
                                 if f.name in p}, head=head)
