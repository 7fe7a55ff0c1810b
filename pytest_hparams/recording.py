"""Recording a trial as it trains: seeds, per-epoch metrics, target, divergence, final values.

``fit`` records through this module, and so can a user's own training loop through the
``hparams_trial`` fixture::

    for run in hparams_trial.runs(target={"accuracy": 0.9}):   # seeds torch/numpy/random
        model = make_model()
        for epoch in range(20):
            train_one_epoch(model)
            if run.log_epoch(loss=val_loss, accuracy=acc):     # True: target reached or diverged
                break
"""

from __future__ import annotations

import ast
import contextlib
import math
import random
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from .errors import HParamsError
from .hparams import unobserved
from .metrics import Threshold, parse_threshold
from .space import parse_id
from .trial import SeedRun, TrialResult, best_value

#: Per-epoch values that describe the epoch rather than measure the model: kept in the history,
#: left out of the final metrics.
CONTEXT_KEYS = ("epoch", "seconds", "lr")
#: The note on a sweep's row whose ``fit`` raised, followed by the error.
ROW_RAISED = "this configuration raised "

_current: ContextVar[TrialRecorder | None] = ContextVar("pytest_hparams_recorder", default=None)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device) with ``seed``."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def current_recorder() -> TrialRecorder | None:
    """The recorder of the test item running now, if any."""
    return _current.get()


def standalone_recorder(hparams: Mapping[str, Any]) -> TrialRecorder:
    """A recorder for a training call made outside any test item (or outside pytest)."""
    seeds = list(getattr(hparams, "seeds", (0,)))
    return TrialRecorder(TrialResult(hparams=unobserved(hparams), seeds=seeds,
                                     config_id=getattr(hparams, "id", "default")))


@contextlib.contextmanager
def recording_into(recorder: TrialRecorder) -> Iterator[TrialRecorder]:
    token = _current.set(recorder)
    try:
        yield recorder
    finally:
        _current.reset(token)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError that MPS and older torch raise for it."""
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    return isinstance(exc, oom_types) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def _parse_target(target: Mapping[str, Any] | None) -> list[Threshold]:
    return [parse_threshold(metric, spec) for metric, spec in (target or {}).items()]


class RunRecorder:
    """Records one seed's run; ``log_epoch`` says when to stop."""

    def __init__(
        self,
        record: SeedRun,
        *,
        target: list[Threshold],
        stop_at_target: bool,
        epochs: int | None,
        on_epoch: Callable[[RunRecorder], None] | None,
        trial: str = "",
    ) -> None:
        self.record = record
        self.trial = trial
        self.target = target
        self.stop_at_target = stop_at_target
        self.planned_epochs = epochs
        self._on_epoch = on_epoch
        self._started = time.perf_counter()
        self.finished = False

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    @property
    def diverged(self) -> bool:
        return self.record.status == "diverged"

    def log_epoch(self, **metrics: float) -> bool:
        """Record one epoch's metrics; True when training should stop (target or divergence).

        A finished run takes no more epochs: its final metrics are already recorded.
        """
        run = self.record
        if self.finished:
            raise HParamsError(
                f"{self.trial or 'hparams'}: seed {run.seed}: log_epoch() was called after its "
                f"run finished (the loop moved on to the next seed, or the run was closed), so "
                f"this epoch would be lost; log each epoch inside its seed's iteration of "
                f"hparams_trial.runs()")
        row: dict[str, float] = {"epoch": len(run.history) + 1, "seconds": self.elapsed}
        row.update({k: float(v) for k, v in metrics.items()})
        run.history.append(row)
        for name, value in metrics.items():
            if name in CONTEXT_KEYS:
                continue
            run.best[name] = best_value(name, [run.best.get(name, math.nan), float(value)])
        if self._on_epoch is not None:
            self._on_epoch(self)  # it may prune the run (an adaptive search's pruner)
        bad = [k for k, v in metrics.items() if "loss" in k and not math.isfinite(float(v))]
        if bad:
            self.fail("diverged", f"{bad[0]} became {metrics[bad[0]]} at epoch {row['epoch']}")
            return True
        stop = False
        if self.target and run.epochs_to_target is None and all(
            t.holds(float(metrics.get(t.metric, math.nan))) for t in self.target
        ):
            run.epochs_to_target = int(row["epoch"])
            run.seconds_to_target = row["seconds"]
            stop = self.stop_at_target
        return stop or run.status == "pruned"

    def prune(self, reason: str) -> None:
        """Stop the run after this epoch as ``pruned`` (not a failure): called from the
        ``on_epoch`` callback, it makes this epoch's ``log_epoch`` return True."""
        self.fail("pruned", reason)

    def fail(self, status: str, reason: str) -> None:
        """Mark the run diverged, oom, error, interrupted or pruned, with why."""
        if self.record.status == "ok":
            self.record.status = status
            self.record.reason = reason

    def finish(self, **final: float) -> SeedRun:
        """Close the run: final metrics are the last epoch's, updated with ``final``."""
        run = self.record
        if self.finished:
            run.final.update({k: float(v) for k, v in final.items()})
            return run
        last = dict(run.history[-1]) if run.history else {}
        for key in CONTEXT_KEYS:
            last.pop(key, None)
        last.update({k: float(v) for k, v in final.items()})
        run.final = last
        run.epochs = len(run.history)
        run.wall_seconds = self.elapsed
        self.finished = True
        return run


class TrialRecorder:
    """Collects the runs of one configuration (one test item) into a ``TrialResult``."""

    def __init__(
        self,
        result: TrialResult | None = None,
        *,
        on_epoch: Callable[[RunRecorder], None] | None = None,
    ) -> None:
        self.result = result if result is not None else TrialResult(seeds=[0])
        self.on_epoch = on_epoch
        self.active: RunRecorder | None = None
        self.children: list[TrialRecorder] = []

    def child(self, config_id: str, hparams: Mapping[str, Any], *, axes: Iterable[str] = (),
              seeds: Iterable[int] = (0,), labels: Mapping[str, str] | None = None,
              ) -> TrialRecorder:
        """A recorder for one configuration of a sweep run inside this test: its own row,
        in a table of its own named after this test."""
        parent = self.result
        result = TrialResult(nodeid=f"{parent.nodeid}::{config_id}", test=parent.nodeid,
                             config_id=config_id, hparams=unobserved(hparams), axes=list(axes),
                             labels=dict(labels or {}), seeds=list(seeds),
                             device=parent.device)
        recorder = TrialRecorder(result, on_epoch=self.on_epoch)
        self.children.append(recorder)
        return recorder

    @property
    def seeds(self) -> list[int]:
        return list(self.result.seeds)

    def start(
        self,
        seed: int,
        *,
        target: Mapping[str, Any] | None = None,
        stop_at_target: bool = True,
        epochs: int | None = None,
        device: str | None = None,
    ) -> RunRecorder:
        """Seed every generator with ``seed`` and begin recording its run."""
        if any(r.seed == seed for r in self.result.runs):
            self.result.runs = [r for r in self.result.runs if r.seed != seed]
            note = f"seed {seed} was trained more than once in this test; the last run is kept"
            if note not in self.result.notes:
                self.result.notes.append(note)
        thresholds = _parse_target(target)
        self.result.target = {t.metric: t.value for t in thresholds}
        record = SeedRun(seed=seed, device=device or self.result.device or "cpu")
        self.result.runs.append(record)
        seed_everything(seed)
        self.active = RunRecorder(record, target=thresholds, stop_at_target=stop_at_target,
                                  epochs=epochs, on_epoch=self.on_epoch,
                                  trial=self.result.nodeid or self.result.config_id)
        return self.active

    @contextlib.contextmanager
    def run(self, seed: int, **options: Any) -> Iterator[RunRecorder]:
        """``start`` a run and finish it; an exception marks it error, oom or interrupted."""
        recorder = self.start(seed, **options)
        try:
            yield recorder
        except KeyboardInterrupt:
            recorder.fail("interrupted", "interrupted (KeyboardInterrupt)")
            raise
        except Exception as exc:
            recorder.fail("oom" if is_out_of_memory(exc) else "error", describe(exc))
            raise
        finally:
            recorder.finish()
            self.active = None

    def runs(
        self,
        *,
        target: Mapping[str, Any] | None = None,
        stop_at_target: bool = True,
        epochs: int | None = None,
    ) -> Iterator[RunRecorder]:
        """One run per seed of this configuration, each seeded and recorded.

        A run is finished when the next one is asked for; one the loop leaves behind (by
        ``break`` or an exception) is closed by the plugin when the test ends.
        """
        for seed in self.seeds:
            recorder = self.start(seed, target=target, stop_at_target=stop_at_target,
                                  epochs=epochs)
            yield recorder
            recorder.finish()
            self.active = None

    def raised(self, exc: BaseException) -> None:
        """Note that this sweep row's ``fit`` raised ``exc`` (see ``settle_sweep_rows``)."""
        self.close_active(describe(exc))
        note = ROW_RAISED + describe(exc)
        if note not in self.result.notes:
            self.result.notes.append(note)

    def close_active(self, error: str | None = None, status: str = "error") -> None:
        """Finish a run the test left open; with ``error``, the run is marked ``status``."""
        if self.active is not None and not self.active.finished:
            if error is not None:
                self.active.fail(status, error)
            self.active.finish()
        self.active = None


def settle_sweep_rows(trials: Iterable[TrialResult], nodeid: str) -> None:
    """Give the rows of the sweeps test ``nodeid`` ran their own outcome when a row raised.

    Every trial of a test item carries the item's outcome and failure message. A sweep trains
    every row even when one raises, then raises the first error; that failure is the raising
    rows', and the rows that trained are shown passed, without another row's error.
    """
    rows = [t for t in trials if t.test == nodeid and t.nodeid != nodeid]
    raised = {id(t): n for t in rows for n in t.notes if n.startswith(ROW_RAISED)}
    if not raised:
        return  # the test failed (or passed) as a whole: every row keeps its outcome
    for trial in rows:
        if id(trial) in raised:
            trial.outcome = "failed"
            trial.message = raised[id(trial)].removeprefix(ROW_RAISED)
        elif trial.outcome == "failed" and trial.status == "ok":
            trial.outcome, trial.message = "passed", ""


def crashed_trial(nodeid: str, reason: str, *, worker: str = "",
                  hparams_tests: Container[str] = ()) -> TrialResult | None:
    """The record of an item whose process died while it ran (an xdist worker killed), whose
    runs died with it: outcome ``crashed`` with the reason, and the configuration as its node
    id spells it. None for an item that is not an hparams item: its id is not a configuration's
    and its test is not one of ``hparams_tests``."""
    test, bracket, rest = nodeid.partition("[")
    config_id = rest[:-1] if bracket and rest.endswith("]") else ""
    texts = parse_id(config_id) if config_id else None
    if texts is None and test not in hparams_tests:
        return None
    texts = {k: v for k, v in (texts or {}).items() if k != "sample"}  # an index, not an axis
    return TrialResult(nodeid=nodeid, test=test, config_id=config_id or "default",
                       hparams={k: _literal(v) for k, v in texts.items()}, axes=list(texts),
                       labels=texts, outcome="crashed", message=reason, worker=worker)


def _literal(text: str) -> Any:
    """The number, bool, None or tuple an id's text shows; the text itself otherwise."""
    if text in ("inf", "-inf", "nan"):
        return float(text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, (bool, int, float, tuple, type(None))) else text


def describe(exc: BaseException) -> str:
    """``TypeName: message``, on one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
