"""Where a run's results go: the paths checked at start-up, and the results file kept current.

``--hparams-json`` is kept current without its cost growing with the run: each finished trial
is serialised once and appended to the journal beside the file before the next test starts
(milliseconds, whatever the run's size; the journal's own thread then forces it to the disk);
the file itself is rewritten from those serialised trials only as often as ``SNAPSHOT_SHARE``
of the run's time allows, and once at the end, after which the journal is removed. So a run
stopped in any way keeps every trial that finished: by Ctrl-C or SIGTERM the final write
completes (a second Ctrl-C cannot cut it), by ``kill -9`` the journal holds them and
``read_run`` reads it beside the file.

Why not rewrite the file after each trial: the cost of a rewrite grows with the run (a 25 MB file
takes a quarter of a second to write here, seconds with an indented encoder), so either the
rewrites are throttled and the file trails the run (what Ctrl-C and SIGTERM then lost) or they
take over the run. Why not append to the file itself: a JSON document cannot be appended to and
stay valid; the journal can, and the file stays valid JSON for every other reader.

A write that fails mid-run (a full disk) is said once; training goes on, the table is printed,
and the end of the run tries again and says what could not be written.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .autosave import Autosave
from .interrupts import shielded
from .runfile import (
    Journal,
    RunFile,
    atomic_write_text,
    failure_text,
    is_special_file,
    journal_path,
    real_path,
    same_file,
)
from .runfile import trial_text as serialise
from .trial import TrialResult

#: Rewriting the whole results file mid-run may take at most this share of the run's time; the
#: journal, not these rewrites, is what keeps finished trials safe.
SNAPSHOT_SHARE = 0.01

FINAL_NOTICE = ("the run is ending: finishing its results files and report first (no "
                "finished trial can be lost now)")


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

    def named(self) -> list[tuple[str, Path, bool]]:
        """(option, path, is a folder) of each output asked for."""
        options = [("--hparams-json", self.json, False), ("--hparams-csv", self.csv, False),
                   ("--hparams-markdown", self.markdown, False),
                   ("--hparams-plot", self.plots, True)]
        return [(option, path, folder) for option, path, folder in options if path is not None]

    def writing_to(self, path: str | os.PathLike[str]) -> str | None:
        """The option whose output is the file ``path`` (or the journal of the JSON), if any."""
        for option, own, folder in self.named():
            if not folder and same_file(own, path):
                return option
        if self.json is not None and same_file(journal_path(self.json), path):
            return "--hparams-json"
        return None


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_writable(option: str, path: Path, *, folder: bool = False, extra_name: int = 0) -> None:
    """Refuse, as a usage error naming ``option``, a path the run could not write: a folder
    given for a file (or a file for a folder), a read-only or missing parent, a name too long
    for the file system. ``extra_name``: characters added to the name (the journal's suffix).
    Nothing is left behind (a probe file is created in the nearest existing folder and removed:
    permission bits say nothing to root, nor of a read-only file system)."""
    try:
        target = real_path(path)
        exists, is_dir = target.exists(), target.is_dir()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise pytest.UsageError(f"{option}: the name {str(path)[:40]!r}… is too long for the "
                                    f"file system") from None
        raise pytest.UsageError(f"{option}: cannot use {str(path)[:200]!r}: {exc.strerror}") \
            from None
    except ValueError as exc:  # a NUL byte
        raise pytest.UsageError(f"{option}: cannot use {str(path)[:200]!r}: {exc}") from None
    if folder and exists and not is_dir:
        raise pytest.UsageError(f"{option}: {path} is a file; name a folder")
    if not folder and is_dir:
        raise pytest.UsageError(f"{option}: {path} is a folder; name a file inside it, e.g. "
                                f"{Path(path) / 'results'}")
    if not folder and is_special_file(target):
        if not os.access(target, os.W_OK):
            raise pytest.UsageError(f"{option}: {path} cannot be written (permission denied)")
        return  # a device or a pipe: written into as it is
    parent = target if folder else target.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise pytest.UsageError(f"{option}: cannot create {path}: {existing} is a file, not a "
                                f"folder")
    limit = _name_max(existing)
    too_long = [part for part in [*parent.relative_to(existing).parts,
                                  *([] if folder else [target.name])]
                if len(os.fsencode(part)) + (extra_name if part == target.name else 0) > limit]
    if too_long:
        raise pytest.UsageError(f"{option}: the name {too_long[0][:40]!r}… is too long for the "
                                f"file system (at most {limit} bytes, {extra_name} of them kept "
                                f"for a suffix)")
    probe = existing / f".hparams-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        what = f"{existing} is not writable" if existing == parent else \
            f"cannot create folders in {existing}"
        raise pytest.UsageError(f"{option}: cannot write {path}: {what} "
                                f"({exc.strerror or exc})") from None


def check_outputs(outputs: Outputs) -> None:
    """Usage errors for outputs the run could not write, or that would overwrite each other."""
    seen: list[tuple[str, Path]] = []
    for option, path, folder in outputs.named():
        check_writable(option, path, folder=folder,
                       extra_name=len(".journal") if option == "--hparams-json" else 0)
        for other, other_path in seen:
            if same_file(path, other_path):
                raise pytest.UsageError(f"{other} and {option} both name {path}: one file would "
                                        f"overwrite the other; give each its own path")
        seen.append((option, path))
    if outputs.json is not None:
        journal = journal_path(outputs.json)
        for option, path in seen[1:]:
            if same_file(journal, path):
                raise pytest.UsageError(f"{option}: {path} is where --hparams-json keeps its "
                                        f"journal while the run goes; name another file")


class ResultsFile:
    """``--hparams-json``, kept current as trials finish (see the module's docstring).

    ``document`` gives the run as it stands (its trials in order); ``say`` tells the user
    something at once (a write that failed). Errors are collected in ``errors``.
    """

    def __init__(self, path: Path, run_id: str, document: Callable[[], RunFile],
                 say: Callable[[str], None]) -> None:
        self.path = path
        self.run_id = run_id
        self.document = document
        self.say = say
        self.special = is_special_file(path)  # /dev/null, a pipe: written once, at the end
        self.journal: Journal | None = None
        self.errors: list[str] = []  # what could not be written, said at the end
        self._texts: dict[str, str] = {}
        self._told: set[str] = set()
        self._pending: list[str] = []  # errors from the timer thread, said by the main one
        self._lock = threading.Lock()
        self._autosave = Autosave(self._snapshot, share=SNAPSHOT_SHARE)
        self._environment_written = False
        # The journal as the user would write it: beside the path given, unless that is a link.
        journal = journal_path(path)
        given = Path(f"{path}.journal")
        self.journal_shown = given if journal == real_path(given) else journal

    # -- the run

    def start(self, created: str) -> None:
        """Write the file with no trials yet (naming this run, so that readers know the journal
        is its own), then open the journal."""
        if self.special:
            return
        try:
            atomic_write_text(self.path, RunFile([], created, extra={"run_id": self.run_id})
                              .to_json())
            self.journal = Journal(journal_path(self.path), self.run_id)
        except OSError as exc:
            self._failed("start", f"could not write {self.path}: {failure_text(exc)}; the run "
                                  f"goes on, and writing it is tried again at the end")

    def add(self, trial: TrialResult, environment: Callable[[], str]) -> None:
        """Keep a finished trial: in the journal at once, in the file a moment later."""
        text = serialise(trial)
        self._texts[trial.nodeid] = text
        self._say_pending()
        if self.special:
            return
        if self.journal is not None:
            try:
                with shielded():  # a Ctrl-C now waits for the line to be whole
                    if not self._environment_written:
                        self.journal.append(environment())
                        self._environment_written = True
                    self.journal.add_trial(text)
                if self.journal.sync_error is not None:
                    raise self.journal.sync_error
            except OSError as exc:
                self._failed("journal", f"could not write {self.journal_shown}: "
                                        f"{failure_text(exc)}; the run goes on, the table will "
                                        f"show every trial, and {self.path} is written again "
                                        f"at the end")
        self._autosave.changed()

    def finish(self) -> bool:
        """Write the whole file (a Ctrl-C now cannot cut it), then remove the journal; whether
        the file was written."""
        with shielded(FINAL_NOTICE, final=True):
            self._autosave.cancel()
            self._say_pending()
            try:
                atomic_write_text(self.path, self._render())
            except (OSError, ValueError) as exc:
                kept = (f"; the finished trials are in {self.journal_shown}, which read_run "
                        f"reads" if self.journal is not None else "")
                self.errors.append(f"could not write {self.path}: {failure_text(exc)}{kept}")
                if self.journal is not None:
                    self.journal.close()
                return False
            if self.journal is not None:
                self.journal.close(remove=True)
            return True

    # -- the file

    def _render(self) -> str:
        run = self.document()
        run.extra["run_id"] = self.run_id
        return run.to_json(self._texts.get(t.nodeid) or serialise(t) for t in run.trials)

    def _snapshot(self) -> None:
        """The throttled rewrite (on the autosave's timer thread): never raises."""
        try:
            atomic_write_text(self.path, self._render())
        except Exception as exc:
            with self._lock:
                self._pending.append(f"could not rewrite {self.path}: {failure_text(exc)}; the "
                                     f"journal keeps the finished trials, and the file is "
                                     f"written again at the end")

    def _say_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for message in pending:
            self._failed("snapshot", message)

    def _failed(self, kind: str, message: str) -> None:
        if kind not in self._told:
            self._told.add(kind)
            self.say(f"hparams: {message}")
