"""The state of one pytest run: collected trial records and the files they are written to."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .autosave import Autosave
from .placement import Placement, place_process
from .plots import plot_curves
from .progress import LiveProgress
from .report import write_csv, write_markdown
from .runfile import RunFile, environment_info, write_run
from .trial import TrialResult
from .xdist import is_worker

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Outputs:
    """Where the results go: ``--hparams-json``, ``--hparams-csv``, ``--hparams-markdown``,
    ``--hparams-plot``."""

    json: Path | None = None
    csv: Path | None = None
    markdown: Path | None = None
    plots: Path | None = None  # a folder

    @classmethod
    def from_config(cls, config: pytest.Config) -> Outputs:
        def path(option: str) -> Path | None:
            value = config.getoption(option)
            return Path(value) if value else None

        return cls(path("hparams_json"), path("hparams_csv"), path("hparams_markdown"),
                   path("hparams_plot"))


class HParamsSession:
    """Trial records of this run, in the order they finished; kept in ``config.stash``."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.placement: Placement | None = None
        self.is_worker = is_worker(config)
        self.outputs = Outputs() if self.is_worker else Outputs.from_config(config)
        self.progress = LiveProgress(config)
        self.trials: dict[str, TrialResult] = {}
        self.collection_order: dict[str, int] = {}
        self.created = datetime.now(timezone.utc).isoformat()
        self._environment: dict[str, Any] | None = None
        self._lock = threading.Lock()  # the autosave writes from a timer thread
        self._autosave = Autosave(self.write_json)

    def place(self) -> Placement:
        """This process's device and torch threads, chosen on first use (this imports torch)."""
        if self.placement is None:
            self.placement = place_process(self.config)
        return self.placement

    @property
    def device(self) -> torch.device:
        return self.place().device

    @property
    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = environment_info()
        return self._environment

    def add(self, trial: TrialResult) -> None:
        """Keep a finished trial. The JSON file is rewritten (atomically) right after, or a
        moment later when rewriting it would take more than 5 % of the run's time. A crash
        record (outcome ``crashed``, no runs) marks a trial already kept instead of replacing
        its runs."""
        with self._lock:
            kept = self.trials.get(trial.nodeid)
            if kept is not None and trial.outcome == "crashed" and not trial.runs:
                kept.outcome, kept.message = trial.outcome, trial.message
                trial = kept
            self.trials[trial.nodeid] = trial
        if self.outputs.json:
            _ = self.environment  # read once here, so that it never delays a rewrite
            self._autosave.changed()

    def set_collection_order(self, nodeids: list[str]) -> None:
        """The order pytest collected the items in (xdist workers finish them in any order)."""
        if not self.collection_order:
            self.collection_order = {nodeid: index for index, nodeid in enumerate(nodeids)}

    def ordered_trials(self) -> list[TrialResult]:
        """The trials in collection order, a sweep's rows at their test's place; without a
        known order, in the order they finished."""
        with self._lock:
            trials = list(self.trials.values())
        position = self.collection_order
        last = len(position)
        return sorted(trials, key=lambda t: position.get(t.nodeid, position.get(t.test, last)))

    def run_file(self) -> RunFile:
        return RunFile(self.ordered_trials(), self.created, self.environment,
                       {"device": str(self.device)})

    def write_json(self) -> None:
        if self.outputs.json:
            write_run(self.outputs.json, self.run_file())

    def finish(self) -> list[Path]:
        """Write every output file; return their paths."""
        written = []
        if self.outputs.json:
            self._autosave.flush()
            written.append(self.outputs.json)
        trials = self.ordered_trials()
        if self.outputs.csv:
            write_csv(trials, self.outputs.csv)
            written.append(self.outputs.csv)
        if self.outputs.markdown:
            write_markdown(trials, self.outputs.markdown)
            written.append(self.outputs.markdown)
        if self.outputs.plots:
            written.extend(plot_curves(trials, self.outputs.plots))
        return written


SESSION_KEY = pytest.StashKey[HParamsSession]()
