"""Ctrl-C and SIGTERM: a stop request never cuts a results write in half.

pytest stops a run on ``KeyboardInterrupt`` and still writes its reports. This module makes
SIGTERM (``timeout``, a CI runner cancelling a job, ``kill``) stop it the same way, and lets
the writes of finished trials shield themselves: a Ctrl-C that arrives while one runs waits for
it to end. During the run's final writes a further Ctrl-C only says that they are being
finished; nothing is lost by pressing it, nor by ``kill -9`` (the journal beside the results
file already holds every finished trial).

Handlers are only installed over Python's defaults (``default_int_handler`` for SIGINT,
``SIG_DFL`` for SIGTERM): a handler the user or another plugin set, or a signal ignored by the
parent (a program started in the background), is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_ours: dict[int, object] = {}  # signal -> the handler it had before ours
_installs = 0
_shields = 0
_pending: int | None = None  # a signal that arrived while shielded
_notice = ""  # what to say when one arrives while shielded
_told = False
_ending_at = 0  # the run (at this depth of nested installs) is ending: every request waits


def _names(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending, _told
    if _shields or _ending_at:
        _pending = signum
        if _notice and not _told:
            _told = True
            # os.write, not print: a handler may run in the middle of a buffered write.
            with contextlib.suppress(OSError):
                os.write(2, f"\nhparams: {_names(signum)}: {_notice}\n".encode())
        return
    _interrupt(signum)


def _interrupt(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise KeyboardInterrupt(f"{_names(signum)} received")


def install() -> None:
    """Handle SIGINT and SIGTERM as a stop request (KeyboardInterrupt), shieldable by
    ``shielded``; nested calls (pytester runs inside a run) share the first one's handlers."""
    global _installs
    _installs += 1
    if _installs > 1 or threading.current_thread() is not threading.main_thread():
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        try:
            if signal.getsignal(signum) is default:
                _ours[signum] = signal.signal(signum, _handler)
        except (ValueError, OSError):  # not the main thread, or a platform without it
            continue


def ending(notice: str) -> None:
    """The run is ending (pytest writes its reports, this plugin its files): from now until
    ``uninstall``, a stop request only says ``notice`` (once) and is otherwise ignored, so that
    neither a results file nor pytest's own summary is cut short."""
    global _ending_at, _notice, _told
    if not _ours:
        return
    if not _shields:
        _notice, _told = notice, False
    _ending_at = _installs


def uninstall() -> None:
    """Put back the handlers ``install`` replaced, when its last caller is done."""
    global _installs, _ending_at
    _installs = max(0, _installs - 1)
    if _installs < _ending_at:  # the run that was ending is over (a pytester run inside one)
        _ending_at = 0
    if _installs:
        return
    for signum, previous in list(_ours.items()):
        with contextlib.suppress(ValueError, OSError, TypeError):
            if signal.getsignal(signum) is _handler:
                signal.signal(signum, previous)  # type: ignore[arg-type]
        del _ours[signum]


@contextlib.contextmanager
def shielded(notice: str = "", *, final: bool = False) -> Iterator[None]:
    """Hold back Ctrl-C and SIGTERM while the block runs. A request that came meanwhile is
    raised as KeyboardInterrupt when the block ends, unless ``final`` (the run is ending
    anyway). ``notice`` is said once if a request arrives during the block."""
    global _shields, _pending, _notice, _told
    outer = _shields == 0
    if outer and not _ending_at:
        _notice, _told = notice, False
    _shields += 1
    try:
        yield
    finally:
        _shields -= 1
        if outer and not _ending_at:
            pending, _pending, _notice = _pending, None, ""
            if pending is not None and not final:
                _interrupt(pending)


def active() -> bool:
    """Whether this process's stop requests go through this module (for tests and messages)."""
    return bool(_ours)
