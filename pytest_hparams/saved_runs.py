"""The storage folder of saved runs: numbered files per machine, safe under concurrent saves.

Runs are saved as pytest-benchmark saves its own: ``<storage>/<machine id>/NNNN_<commit>_<time>
[_<name>].json``, the machine id being pytest-benchmark's (``Linux-CPython-3.11-64bit``). The
counter is chosen under a file lock (``filelock``), so two pytest processes saving into one
folder at once get different numbers, and each file is written atomically. A baseline is found
by its number, its name, a file path, or as the latest run of this machine.

How ``--hparams-compare=X`` (and ``pytest-hparams compare X``) finds a run: nothing is this
machine's latest run; a path (an existing file, or text with a ``/`` or ending in ``.json``) is
that file; otherwise X is a name given to ``--hparams-save``, matched exactly (``main`` never
finds ``not_main``); failing that, digits are a run's number (``7`` or ``0007``), and other text
the start of a saved file's name (``0007_1a2b3c``). Digits that are both one run's name and
another's number are refused as ambiguous, with both paths to choose from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import BaselineMissing, ResultsFileError
from .runfile import RunFile, atomic_write_text

DEFAULT_STORAGE = ".hparams"
LOCK_NAME = ".save.lock"
LOCK_TIMEOUT = 120.0
_SAVED = re.compile(r"(?P<counter>\d{4,})_(?P<rest>.+)\.json")
#: The file name ``save_run`` writes: counter, commit, time, ``_dirty``, then the name.
_PARTS = re.compile(r"\d{4,}_[^_]+_\d{8}_\d{6}(?P<dirty>_dirty)?(?:_(?P<name>.+))?\.json")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: The longest name: the file name around it takes about 40 more bytes of the usual 255.
MAX_NAME = 100


def machine_id() -> str:
    """pytest-benchmark's name for this machine: system, Python and architecture."""
    from pytest_benchmark.utils import get_machine_id

    return str(get_machine_id())


def check_save_name(name: str) -> str:
    """A name for ``--hparams-save=NAME``: letters, digits, ``.``, ``_`` and ``-`` only, at most
    ``MAX_NAME`` characters; not ``dirty`` (the file name's mark of uncommitted changes)."""
    if not _NAME.fullmatch(name) or name.endswith(".json"):
        raise ValueError(
            f"the run name {name!r} must be letters, digits, '.', '_' or '-' (it becomes part "
            f"of a file name), e.g. --hparams-save=main"
        )
    if len(name) > MAX_NAME:
        raise ValueError(f"the run name '{name[:20]}…' is {len(name)} characters long; at most "
                         f"{MAX_NAME} fit in a file name")
    if name == "dirty" or name.startswith("dirty_"):
        raise ValueError(f"the run name {name!r} would read as the mark of uncommitted changes "
                         f"in the file name (…_dirty.json); choose another")
    return name


@dataclass(frozen=True)
class SavedRun:
    """A file in the storage folder: its counter, machine folder and path."""

    counter: int
    machine: str
    path: Path

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def name(self) -> str | None:
        """The name given to ``--hparams-save``, read from the file name; None without one."""
        match = _PARTS.fullmatch(self.path.name)
        return match.group("name") if match else None

    def has_name(self, name: str) -> bool:
        return self.name == name


def saved_runs(storage: str | os.PathLike[str], machine: str | None = None) -> list[SavedRun]:
    """The saved runs under ``storage`` (of one machine folder when given), oldest first."""
    root = Path(storage)
    folders = [root / machine] if machine else sorted(p for p in root.glob("*") if p.is_dir())
    runs = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob("*.json"):
            match = _SAVED.fullmatch(path.name)
            if match:
                runs.append(SavedRun(int(match.group("counter")), folder.name, path))
    return sorted(runs, key=lambda r: (r.machine, r.counter))


def _file_name(counter: int, run: RunFile, name: str | None) -> str:
    commit = run.commit or {}
    parts = [f"{counter:04d}", str(commit.get("id") or "unversioned")[:12]]
    parts.append(datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S"))
    if commit.get("dirty"):
        parts.append("dirty")
    if name:
        parts.append(name)
    return "_".join(parts) + ".json"


def save_run(storage: str | os.PathLike[str], run: RunFile, name: str | None = None,
             *, machine: str | None = None) -> Path:
    """Save ``run`` as the next numbered file of this machine's folder; return its path.

    The counter is chosen and the file written while holding the folder's lock, so concurrent
    saves never share a number or overwrite each other.
    """
    from filelock import FileLock, Timeout

    folder = Path(storage) / (machine or machine_id())
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=LOCK_TIMEOUT)
    try:
        with lock:
            runs = saved_runs(storage, folder.name)
            counter = max((r.counter for r in runs), default=0) + 1
            path = folder / _file_name(counter, run, name)
            while path.exists():  # a file copied in by hand with the same number
                counter += 1
                path = folder / _file_name(counter, run, name)
            atomic_write_text(path, run.to_json())
    except Timeout:
        raise ResultsFileError(
            f"{folder}: could not lock the storage folder within {LOCK_TIMEOUT:g} s to save "
            f"the run (another process holds {folder / LOCK_NAME}; remove it if none does)"
        ) from None
    return path


def resolve_baseline(spec: str | None, storage: str | os.PathLike[str],
                     *, machine: str | None = None) -> Path:
    """The run file that ``spec`` names: None (or "") for this machine's latest saved run, a
    path to a file, a name given to ``--hparams-save``, a counter (``3`` or ``0003``) or the
    start of a saved file's name; in that order (the module's docstring says more).

    Raises ResultsFileError that says what was looked for, where, and what exists.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in spec or ""):
        raise ResultsFileError(f"{spec!r}: a run's number, name or path has no control "
                               f"characters (a newline, a tab)")
    text = (spec or "").strip()
    machine = machine or machine_id()
    root = Path(storage)
    candidate = Path(text)
    try:
        is_file, is_dir = candidate.is_file(), candidate.is_dir()
    except OSError as exc:
        raise ResultsFileError(f"{text[:60]!r}…: not a usable path ({exc.strerror})") from None
    if text and (is_file or "/" in text or os.sep in text or text.endswith(".json")):
        if candidate.suffix == ".py":
            raise ResultsFileError(f"{candidate}: is a Python file, not a run file")
        if is_dir:
            raise ResultsFileError(f"{candidate}: is a folder; name a run file inside it")
        if not candidate.exists():
            raise BaselineMissing(f"{candidate}: no such baseline file")
        return candidate
    if is_dir and text:
        raise ResultsFileError(f"{candidate}: is a folder; name a run file inside it")
    runs = saved_runs(root, machine)
    where = root / machine
    if not text:
        if runs:
            return runs[-1].path
        raise BaselineMissing(
            f"{where}: no saved run to compare against{_elsewhere(root, machine)}; save one "
            f"with --hparams-save or --hparams-autosave, or name a file with --hparams-compare=PATH"
        )
    named = [r for r in runs if r.has_name(text)]
    numbered = [r for r in runs if r.counter == int(text)] if text.isascii() and \
        text.isdigit() else []
    if named and numbered and named[-1].path != numbered[-1].path:
        raise ResultsFileError(
            f"{where}: {text!r} is both the name of {named[-1].path.name} and the number of "
            f"{numbered[-1].path.name}; give the path of the one you mean"
        )
    found = named or numbered
    if not found and not (text.isascii() and text.isdigit()):
        found = [r for r in runs if r.stem.startswith(text)]
    if found:
        return found[-1].path
    saved = ", ".join(r.path.name for r in runs[-5:]) or "none"
    raise BaselineMissing(
        f"{where}: no saved run {text!r} (latest saved: {saved}); give a number, a name given "
        f"to --hparams-save, or a path to a run file{_elsewhere(root, machine)}"
    )


def _elsewhere(root: Path, machine: str) -> str:
    others = sorted({r.machine for r in saved_runs(root)} - {machine})
    if not others:
        return ""
    return f" (saved runs of other machines: {', '.join(others)}; name one with its path)"
