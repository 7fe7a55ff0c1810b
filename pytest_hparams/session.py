"""The state of one pytest run: collected trial records and the files they are written to."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch

from .progress import LiveProgress
from .report import write_csv, write_markdown
from .store import RunFile, environment_info, write_run
from .trial import TrialResult

_WRITE_INTERVAL = 1.0


@dataclass(frozen=True)
class Outputs:
    """Where the results go: ``--hparams-json``, ``--hparams-csv``, ``--hparams-markdown``."""

    json: Path | None = None
    csv: Path | None = None
    markdown: Path | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Outputs:
        def path(option: str) -> Path | None:
            value = config.getoption(option)
            return Path(value) if value else None

        return cls(path("hparams_json"), path("hparams_csv"), path("hparams_markdown"))


class HParamsSession:
    """Trial records of this run, in the order they finished; kept in ``config.stash``."""

    def __init__(self, config: pytest.Config, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.is_worker = hasattr(config, "workerinput")
        self.outputs = Outputs() if self.is_worker else Outputs.from_config(config)
        self.progress = LiveProgress(config)
        self.trials: dict[str, TrialResult] = {}
        self.created = datetime.now(timezone.utc).isoformat()
        self._environment: dict[str, Any] | None = None
        self._last_write = 0.0

    @property
    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = environment_info()
        return self._environment

    def add(self, trial: TrialResult) -> None:
        """Keep a finished trial; the JSON file is rewritten (atomically) at most once a second."""
        self.trials[trial.nodeid] = trial
        if self.outputs.json and time.monotonic() - self._last_write >= _WRITE_INTERVAL:
            self.write_json()

    def run_file(self) -> RunFile:
        return RunFile(list(self.trials.values()), self.created, self.environment,
                       {"device": str(self.device)})

    def write_json(self) -> None:
        if self.outputs.json:
            write_run(self.outputs.json, self.run_file())
            self._last_write = time.monotonic()

    def finish(self) -> list[Path]:
        """Write every output file; return their paths."""
        written = []
        if self.outputs.json:
            self.write_json()
            written.append(self.outputs.json)
        trials = list(self.trials.values())
        if self.outputs.csv:
            write_csv(trials, self.outputs.csv)
            written.append(self.outputs.csv)
        if self.outputs.markdown:
            write_markdown(trials, self.outputs.markdown)
            written.append(self.outputs.markdown)
        return written


SESSION_KEY = pytest.StashKey[HParamsSession]()
