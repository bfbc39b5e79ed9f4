"""The one training loop: epochs of composable update steps.

Every scheme (bottom-up pre-training, the top-down schemes, later multi-fidelity) is a list of
``Step``s per epoch and a ``Selection``, in the way optax chains transformations and chemtrain
interleaves trainers. A step updates the parameters with its own state (an optimizer state, MD
walkers, ...); steps naming the same state continue one optimizer, so a DFT step interleaved
between DiffTRe updates keeps its Adam moments across them. This loop owns what every scheme
needs once: checkpoints after every epoch, bit-identical resume, model selection with
patience, the per-epoch CSV, and progress with an ETA.

A resumed run ends with the same parameters as an uninterrupted one as long as each step is a
function of (parameters, its state, epoch): the checkpoint holds parameters, every step state
and the selection's best, and steps draw their randomness from the epoch number.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..tables import write_table
from . import checkpoint

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Raised when a run is told to stop early (tests simulate a killed job this way)."""


class Step(NamedTuple):
    """One update of an epoch: ``apply(params, state, epoch) -> (params, state, report)``.

    ``state`` names the entry of the loop's state dict the step reads and returns; ``report`` is a
    flat dict of numbers for the epoch's log row (a quantity reported by several steps of one
    epoch, such as the loss of interleaved DFT batches, is averaged)."""

    name: str
    state: str
    apply: Callable


class Candidate(NamedTuple):
    """What an epoch offers to model selection: parameters, how many epochs of training are
    behind them, their score (lower is better) and extra log columns."""

    params: object
    epochs_behind: int
    score: float
    row: dict


# ``select(epoch, start_params, end_params, row, rows) -> Candidate``: ``rows`` are the earlier
# epochs' log rows (the history a selection may average or normalise with)
Selection = Callable[[int, object, object, dict, list], Candidate]


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    epochs: int
    patience: int


@dataclasses.dataclass(frozen=True)
class FitResult:
    best_params: object
    best_epoch: int  # epochs of training behind the selected parameters (0: the start model)
    rows: list
    stopped_early: bool
    states: dict | None = None  # every step's state after the last epoch run


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _merge(reports: Sequence[dict]) -> dict:
    values: dict[str, list] = {}
    for rep in reports:
        for k, v in rep.items():
            values.setdefault(k, []).append(v)
    return {k: (v[0] if len(v) == 1 else float(np.mean(v))) for k, v in values.items()}


def _check_finite(epoch: int, row: dict, score: float) -> None:
    bad = {k: v for k, v in row.items() if k.endswith("loss") and not math.isfinite(v)}
    if bad or not math.isfinite(score):
        raise FloatingPointError(f"epoch {epoch + 1}: loss is not finite ({bad or {'score': score}}); "
                                 "lower the learning rate")


def _resumable(path: Path, templates: dict, record: dict, progress) -> tuple[dict | None, dict | None]:
    """The checkpoint at ``path`` if it was written by a run of this record (the same settings and
    inputs); one of another run (an edited setting, new data) is stale and set aside."""
    if not path.exists():
        return None, None
    if checkpoint.read_record(path).get("settings") != record:
        progress(f"{path}: checkpoint of a run with other settings or inputs; starting afresh")
        return None, None
    return checkpoint.load(path, templates)


def fit(params, states: dict, steps: Callable[[int], Sequence[Step]], select: Selection,
        settings: LoopSettings, checkpoint_path, record: dict, log_csv=None,
        describe: Callable[[dict], str] = lambda row: "", progress: Callable[[str], None] = log.info,
        max_epochs_this_run: int | None = None,
        converged: Callable[[dict], bool] | None = None) -> FitResult:
    """Train ``params`` for ``settings.epochs`` epochs of ``steps(epoch)``.

    ``states`` holds the initial state of every step (by ``Step.state``); ``record`` describes the
    run (settings and the checksums of its inputs): only a checkpoint of the same record resumes.
    ``converged(row)``, if given, ends the run after an epoch whose log row meets it (an
    iterative method's tolerance). The job removes the checkpoint once its outputs are written.
    """
    record = json.loads(json.dumps(record))  # as a checkpoint stores it (tuples become lists)
    best, best_score, best_epoch, bad, rows, start = params, math.inf, 0, 0, [], 0
    checkpoint_path = Path(checkpoint_path)
    trees, rec = _resumable(checkpoint_path, {"params": params, "states": states, "best": params}, record, progress)
    if rec is not None:
        params, states, best = trees["params"], trees["states"], trees["best"]
        best_score, best_epoch, bad, rows, start = (rec["best_score"], rec["best_epoch"], rec["bad"],
                                                    rec["rows"], rec["epoch"])
        progress(f"resuming from {checkpoint_path} after epoch {start}")
        if rec.get("finished"):
            return FitResult(best, best_epoch, rows, rec.get("stopped_early", False), states)

    stopped_early = False
    t_run = time.time()
    for epoch in range(start, settings.epochs):
        t0 = time.time()
        start_params, reports = params, []
        for step in steps(epoch):
            params, new_state, report = step.apply(params, states[step.state], epoch)
            states = {**states, step.state: new_state}
            reports.append(report)
        row = {"epoch": epoch + 1, **_merge(reports)}
        cand = select(epoch, start_params, params, row, rows)
        row.update(cand.row)
        _check_finite(epoch, row, cand.score)
        if cand.score < best_score:
            best, best_score, best_epoch, bad = cand.params, cand.score, cand.epochs_behind, 0
        else:
            bad += 1
        dt = time.time() - t0
        row.update(seconds=dt, best_epoch=best_epoch)
        rows.append(row)
        stopped_early = bad >= settings.patience
        done_converging = converged is not None and bool(converged(row))
        checkpoint.save(checkpoint_path, {"params": params, "states": states, "best": best},
                        dict(epoch=epoch + 1, best_score=best_score, best_epoch=best_epoch, bad=bad,
                             rows=rows, settings=record,
                             finished=stopped_early or done_converging or epoch + 1 == settings.epochs,
                             stopped_early=stopped_early))
        if log_csv is not None:
            write_table(rows, csv_path=log_csv)
        done = epoch + 1 - start
        eta = (time.time() - t_run) / done * (settings.epochs - epoch - 1)
        progress(f"epoch {epoch + 1}/{settings.epochs}  {describe(row)}  | {dt:.1f} s/epoch, "
                 f"ETA {format_eta(eta)}" + ("  *" if best_score == cand.score and bad == 0 else ""))
        if stopped_early:
            progress(f"early stop: no improvement for {settings.patience} epochs; selected the "
                     f"parameters after {best_epoch} epochs")
            break
        if done_converging:
            progress(f"converged after epoch {epoch + 1}; selected the parameters after {best_epoch} epochs")
            break
        if max_epochs_this_run is not None and done >= max_epochs_this_run:
            raise TrainingInterrupted(f"stopped after {done} epochs (max_epochs_this_run)")
    return FitResult(best, best_epoch, rows, stopped_early, states)
