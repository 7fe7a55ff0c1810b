"""The results file is kept current: rewritten after each trial while cheap, a moment later
when not, and never left behind."""

from __future__ import annotations

import threading
import time

from pytest_hparams.autosave import Autosave


class _File:
    """A stand-in for the results file: records what each rewrite saw."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.trials: list[int] = []
        self.written: list[list[int]] = []
        self.seconds = seconds
        self.lock = threading.Lock()

    def write(self) -> None:
        with self.lock:
            snapshot = list(self.trials)
        time.sleep(self.seconds)
        self.written.append(snapshot)


def _eventually(condition, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_cheap_rewrites_happen_after_every_change():
    file = _File()
    autosave = Autosave(file.write, share=1.0)
    for trial in range(5):
        file.trials.append(trial)
        autosave.changed()
        time.sleep(0.05)  # a trial takes far longer than writing an empty file
    assert file.written == [list(range(n)) for n in range(1, 6)]


def test_costly_rewrites_are_batched_and_the_last_change_still_reaches_the_file():
    file = _File(seconds=0.05)
    autosave = Autosave(file.write, share=0.05)  # a rewrite is due only a second after the last
    for trial in range(20):
        file.trials.append(trial)
        autosave.changed()
    assert len(file.written) < 20  # batched, not one rewrite per change
    # No further change comes, yet the last ones are written by the scheduled rewrite.
    assert _eventually(lambda: file.written[-1] == list(range(20)))


def test_flush_writes_at_once_in_place_of_the_scheduled_rewrite():
    file = _File(seconds=0.05)
    autosave = Autosave(file.write, share=0.001)  # the next rewrite would wait ~50 seconds
    file.trials.append(0)
    autosave.changed()
    file.trials.append(1)
    autosave.changed()
    assert file.written == [[0]]
    autosave.flush()
    assert file.written == [[0], [0, 1]]
    time.sleep(0.2)
    assert file.written == [[0], [0, 1]]  # the cancelled rewrite did not run
