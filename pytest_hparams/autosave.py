"""Rewriting a file as things change, in at most a given share of the run's time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Rewriting the file may take at most this share of the run's time.
WRITE_SHARE = 0.05


class Autosave:
    """Calls ``write`` after changes: at once while rewriting is cheap, otherwise on a timer
    thread a little later. Every change reaches the disk within a bounded delay, and the
    rewrites take at most ``share`` of the time (a file of 10,000 trials is not rewritten after
    each one). ``write`` must take its snapshot when called, and be safe on the timer thread.
    """

    def __init__(self, write: Callable[[], None], share: float = WRITE_SHARE) -> None:
        self._write = write
        self._share = share
        self._state = threading.Lock()
        self._writing = threading.Lock()
        self._timer: threading.Timer | None = None
        self._last_end = -float("inf")
        self._last_seconds = 0.0

    def changed(self) -> None:
        """Something new to write: write it now, or on a timer if a rewrite is not due yet."""
        with self._state:
            if self._timer is not None:
                return  # the scheduled write has not taken its snapshot yet: it includes this
            wait = self._last_seconds / self._share - (time.monotonic() - self._last_end)
            if wait > 0:
                self._timer = threading.Timer(wait, self._scheduled)
                self._timer.daemon = True
                self._timer.start()
                return
        self._write_now()

    def flush(self) -> None:
        """Write now, in place of any scheduled write: the end of a run calls this."""
        with self._state:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._write_now()

    def cancel(self) -> None:
        """Drop any scheduled write and wait for one in progress: the caller writes next."""
        with self._state:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._writing.acquire()  # blocks until a write in progress on the timer thread ends
        self._writing.release()

    def _scheduled(self) -> None:
        with self._state:
            if self._timer is None:
                return  # flushed meanwhile
            self._timer = None
        self._write_now()

    def _write_now(self) -> None:
        with self._writing:
            start = time.monotonic()
            self._write()
            self._last_end = time.monotonic()
            self._last_seconds = self._last_end - start
