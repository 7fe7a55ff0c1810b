"""Helpers that several test files share: trial records built by hand, run files on disk.

Import them with ``from tests.conftest import ...`` (``tests`` is a package, so this conftest
is ``tests.conftest`` and never confused with the repository's top-level ``conftest.py``, which
registers ``pytester`` and the hypothesis profiles).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_hparams import RunFile, SeedRun, TrialResult, write_run


def seed_runs(finals: Iterable[Mapping[str, float]], **fields: Any) -> list[SeedRun]:
    """One run per seed 0, 1, ... ending with these final metrics; ``fields`` go to every run."""
    return [SeedRun(seed=seed, final=dict(final), **fields) for seed, final in enumerate(finals)]


def lr_trial(runs: list[SeedRun], *, lr: float = 0.1, test: str = "t.py::test_lr",
             **fields: Any) -> TrialResult:
    """Configuration ``lr=<lr>`` of ``test`` as the plugin records it (node id, configuration
    id, hyperparameters, axis); ``fields`` override or add to those."""
    record: dict[str, Any] = {"nodeid": f"{test}[lr={lr}]", "test": test,
                              "config_id": f"lr={lr}", "hparams": {"lr": lr}, "axes": ["lr"]}
    return TrialResult(**{**record, **fields}, runs=runs)


def write_run_file(path: Path, trials: list[TrialResult], **fields: Any) -> Path:
    """Write ``trials`` as a run file (``fields`` to ``RunFile``); return its path."""
    write_run(path, RunFile(trials, **fields))
    return path


def written_trials(path: Path) -> list[dict[str, Any]]:
    """The trials of a run file as the JSON holds them (what ``--hparams-json`` wrote)."""
    return json.loads(Path(path).read_text())["trials"]
