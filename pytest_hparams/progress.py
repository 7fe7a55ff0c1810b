"""A live progress note (seed, epoch k/N, loss, accuracy) on an interactive terminal.

The note is drawn after pytest's own output on the current line, with the cursor saved and
restored around it, and erased when the test ends; it is off in CI, under xdist workers, in
non-interactive output and with ``--hparams-progress=off``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Any

import pytest

from .recording import RunRecorder
from .xdist import is_worker

_SAVE, _RESTORE, _ERASE = "\x1b7", "\x1b8", "\x1b[K"
_INTERVAL = 0.25


def progress_enabled(config: pytest.Config) -> bool:
    choice = config.getoption("hparams_progress", "auto")
    if choice != "auto":
        return bool(choice == "on")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return bool(
        reporter is not None
        and bool(reporter.isatty)
        and not os.environ.get("CI")
        and not is_worker(config)
        and config.get_verbosity() >= 0
    )


class LiveProgress:
    """Draws and erases the progress note; a no-op when disabled."""

    def __init__(self, config: pytest.Config) -> None:
        self.enabled = progress_enabled(config)
        self._config = config
        self._last = 0.0
        self._shown = False

    def _write(self, text: str) -> None:
        reporter: Any = self._config.pluginmanager.get_plugin("terminalreporter")
        capture: Any = self._config.pluginmanager.get_plugin("capturemanager")
        guard = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with guard:
            # Straight to the terminal: pytest's writer would count the escapes as width.
            reporter.flush()
            sys.stdout.write(text)
            sys.stdout.flush()

    def epoch(self, label: str, run: RunRecorder) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < _INTERVAL:
            return
        self._last = now
        row = run.record.history[-1]
        parts = [label, f"seed {run.seed}"]
        total = f"/{run.planned_epochs}" if run.planned_epochs else ""
        parts.append(f"epoch {int(row['epoch'])}{total}")
        for name in ("loss", "accuracy"):
            value = row.get(name)
            if value is not None and not math.isnan(value):
                parts.append(f"{name} {value:.3f}")
        self._write(f"{_SAVE}{_ERASE} [{' · '.join(parts)}]{_RESTORE}")
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._write(_ERASE)
            self._shown = False
