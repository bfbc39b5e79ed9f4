"""The bottom-up training run: epochs, validation, early stopping, checkpoints and resumption.

A checkpoint is written after every epoch (parameters, optimizer state, best parameters, the
log so far). A killed run started again with the same settings continues from it and ends with
the same parameters as an uninterrupted run: batch order depends only on (seed, epoch).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable

import jax.numpy as jnp

from ..tables import write_table
from . import checkpoint
from .dft import DFTTrainerSettings, GraphData, dft_trainer

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Raised when a run is told to stop early (tests simulate a killed job this way)."""


@dataclasses.dataclass
class FitResult:
    best_params: dict
    best_epoch: int
    rows: list[dict]
    stopped_early: bool


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def fit_dft(model_settings, params0, data: GraphData, split: dict, ts: DFTTrainerSettings,
            checkpoint_path, log_csv=None, dtype=jnp.float32,
            progress: Callable[[str], None] = log.info, max_epochs_this_run: int | None = None) -> FitResult:
    trainer = dft_trainer(model_settings, data, split["train"], ts, dtype)
    state = trainer.init(params0)
    best, best_val, best_epoch, bad, rows, start = params0, math.inf, -1, 0, [], 0
    checkpoint_path = Path(checkpoint_path)
    if checkpoint_path.exists():
        trees, rec = checkpoint.load(checkpoint_path, {"state": state, "best": params0})
        state, best = trees["state"], trees["best"]
        if rec.get("settings") != dataclasses.asdict(ts):
            raise ValueError(f"{checkpoint_path}: checkpoint was written with other trainer settings; "
                             "delete it to start afresh")
        best_val, best_epoch, bad, rows, start = (rec["best_val"], rec["best_epoch"], rec["bad_epochs"],
                                                  rec["rows"], rec["epoch"])
        progress(f"resuming from {checkpoint_path} after epoch {start}")
        if rec.get("finished"):
            return FitResult(best, best_epoch, rows, rec.get("stopped_early", False))

    select_on = split["val"] if len(split["val"]) else split["train"]
    stopped_early = False
    t_run = time.time()
    for epoch in range(start, ts.epochs):
        t0 = time.time()
        state, train_loss = trainer.epoch(state, epoch)
        val = trainer.evaluate(state.params, select_on)
        if not math.isfinite(train_loss) or not math.isfinite(val["loss"]):
            raise FloatingPointError(f"epoch {epoch + 1}: loss is not finite (train {train_loss}, "
                                     f"val {val['loss']}); lower the learning rate")
        if val["loss"] < best_val:
            best, best_val, best_epoch, bad = state.params, val["loss"], epoch + 1, 0
        else:
            bad += 1
        dt = time.time() - t0
        done_this_run = epoch + 1 - start
        eta = (time.time() - t_run) / done_this_run * (ts.epochs - epoch - 1)
        rows.append(dict(epoch=epoch + 1, train_loss=train_loss, val_loss=val["loss"],
                         val_energy_rmse_meV_atom=1e3 * val["energy_rmse"],
                         val_forces_rmse_meV_A=1e3 * val["forces_rmse"],
                         val_virial_rmse_meV_atom=1e3 * val["virial_rmse"],
                         seconds=dt, best_epoch=best_epoch))
        stopped_early = bad >= ts.patience
        finished = stopped_early or epoch + 1 == ts.epochs
        checkpoint.save(checkpoint_path, {"state": state, "best": best},
                        dict(epoch=epoch + 1, best_val=best_val, best_epoch=best_epoch, bad_epochs=bad,
                             rows=rows, settings=dataclasses.asdict(ts), finished=finished,
                             stopped_early=stopped_early))
        if log_csv is not None:
            write_table(rows, csv_path=log_csv)
        progress(f"epoch {epoch + 1}/{ts.epochs}  train {train_loss:.4g}  val {val['loss']:.4g}  "
                 f"| E {1e3 * val['energy_rmse']:.2f} meV/atom  F {1e3 * val['forces_rmse']:.1f} meV/Å  "
                 f"W {1e3 * val['virial_rmse']:.1f} meV/atom | {dt:.1f} s/epoch, ETA {format_eta(eta)}"
                 + ("  *" if best_epoch == epoch + 1 else ""))
        if stopped_early:
            progress(f"early stop: no improvement for {ts.patience} epochs; best epoch {best_epoch}")
            break
        if max_epochs_this_run is not None and done_this_run >= max_epochs_this_run:
            raise TrainingInterrupted(f"stopped after {done_this_run} epochs (max_epochs_this_run)")
    return FitResult(best, best_epoch, rows, stopped_early)
