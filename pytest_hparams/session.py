"""The state of one pytest run: collected trial records and the files they are written to."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .interrupts import shielded
from .outputs import FINAL_NOTICE, Outputs, ResultsFile, check_outputs, failure_text
from .placement import Placement, place_process
from .progress import LiveProgress
from .runfile import RunFile, environment_info, json_text
from .trial import TrialResult
from .xdist import is_worker

if TYPE_CHECKING:
    import torch

__all__ = ["SESSION_KEY", "HParamsSession", "Outputs"]

class HParamsSession:
    """Trial records of this run, in the order they finished; kept in ``config.stash``.

    The output paths are checked when it is made (a usage error before anything runs);
    ``start`` opens the results file, ``add`` keeps each finished trial, ``finish`` writes
    every file and collects in ``errors`` what could not be written.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.placement: Placement | None = None
        self.described_early = False  # the report header could name the device and threads
        self.is_worker = is_worker(config)
        self.outputs = Outputs() if self.is_worker else Outputs.from_config(config)
        check_outputs(self.outputs)
        self.progress = LiveProgress(config)
        self.trials: dict[str, TrialResult] = {}
        self.collection_order: dict[str, int] = {}
        self.created = datetime.now(timezone.utc).isoformat()
        self.run_id = secrets.token_hex(8)
        self.errors: list[str] = []  # output files that could not be written
        self._environment: dict[str, Any] | None = None
        self._lock = threading.Lock()  # the results file is rewritten from a timer thread
        self.results = (ResultsFile(self.outputs.json, self.run_id, self.run_file, self.say)
                        if self.outputs.json else None)

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

    def say(self, message: str) -> None:
        """Tell the user something now, on its own line (a results write that failed)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        reporter.ensure_newline()
        reporter.write_line(message, yellow=True)

    def start(self) -> None:
        """The session starts: open the results file (its journal included)."""
        if self.results is not None:
            self.results.start(self.created)

    def add(self, trial: TrialResult) -> None:
        """Keep a finished trial; it reaches the results file's journal before this returns. A
        crash record (outcome ``crashed``, no runs) marks a trial already kept instead of
        replacing its runs."""
        with self._lock:
            kept = self.trials.get(trial.nodeid)
            if kept is not None and trial.outcome == "crashed" and not trial.runs:
                kept.outcome, kept.message = trial.outcome, trial.message
                trial = kept
            self.trials[trial.nodeid] = trial
        if self.results is not None:
            self.results.add(trial, self._environment_line)

    def _environment_line(self) -> str:
        return json_text({"environment": self.environment, "device": self.run_device()})

    def run_device(self) -> str:
        """Where the run trained: its trials' devices (``cuda:0, cuda:1``); without one, this
        process's. An xdist controller trains nothing and never chooses a device (nor imports
        torch, over a second, to do so): its trials name theirs."""
        with self._lock:
            devices = sorted({t.device for t in self.trials.values() if t.device})
        return ", ".join(devices) if devices else str(self.device)

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
                       {"device": self.run_device(), "run_id": self.run_id})

    def finish(self) -> list[Path]:
        """Write every output file; return the paths written. A Ctrl-C meanwhile waits for them;
        a file that cannot be written is said in ``errors``, and the others are still written."""
        written: list[Path] = []
        with shielded(FINAL_NOTICE, final=True):
            if self.results is not None:
                if self.results.finish():
                    written.append(self.results.path)
                self.errors += self.results.errors
            trials = self.ordered_trials()
            writers: list[tuple[Path | None, Callable[[list[TrialResult], Path], Any]]] = []
            if self.outputs.csv is not None or self.outputs.markdown is not None:
                # loaded only to write a file: a run without one never pays for them
                from .report import write_csv, write_markdown

                writers = [(self.outputs.csv, write_csv), (self.outputs.markdown, write_markdown)]
            for path, write in writers:
                if path is not None:
                    try:
                        write(trials, path)
                    except Exception as exc:  # the other files, the table and a save go on
                        self.errors.append(f"could not write {path}: {failure_text(exc)}")
                    else:
                        written.append(path)
            if self.outputs.plots:
                try:
                    from .plots import plot_curves

                    written.extend(plot_curves(trials, self.outputs.plots))
                except Exception as exc:
                    self.errors.append(f"could not draw the plots into {self.outputs.plots}: "
                                       f"{failure_text(exc)}")
        return written


SESSION_KEY = pytest.StashKey[HParamsSession]()
