"""Run files on disk: a versioned JSON schema, its journal of finished trials, safe writes and
validated reads.

A run file holds every trial of one pytest run with the machine and commit it ran on (taken
from pytest-benchmark's helpers), one trial per line. While a run goes, the trials it finishes
are appended to a journal beside the file (``out.json.journal``, JSON Lines, flushed to disk
per trial), so that keeping the results current costs the size of one trial, not of the whole
run; the file itself is rewritten now and then and at the end, when the journal is removed.
``read_run`` reads the file and, when the run was cut short (``kill -9``, a power loss), the
journal beside it: either way it sees every trial that finished.

Non-finite floats (a diverged loss) are written as ``null`` and read back as NaN. Files are only
ever parsed as JSON: nothing is unpickled or executed, and every field is type-checked, so that
a hostile or damaged file is a ResultsFileError naming the file and the field.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import CompareExpressionError, ResultsFileError
from .gate.tolerance import parse_tolerance
from .trial import SeedRun, TrialResult, jsonable

SCHEMA = "pytest-hparams/run"
SCHEMA_VERSION = 1
JOURNAL_SCHEMA = "pytest-hparams/journal"
JOURNAL_SUFFIX = ".journal"


# --------------------------------------------------------------------------- writing files


def real_path(path: str | os.PathLike[str]) -> Path:
    """The file ``path`` names, through any symbolic links: written to, never replaced."""
    return Path(os.path.realpath(path))


def is_special_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (through links) is an existing device, pipe or socket (``/dev/null``,
    ``/dev/stdout``): such a file is written into as it is, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (through links, and as hard links when both exist)."""
    if real_path(a) == real_path(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def failure_text(exc: BaseException) -> str:
    """Why a write failed, in a few words: the OS's reason, or the exception."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _temporary(target: Path) -> tuple[int, Path]:
    """A new file beside ``target``, created with the umask's permissions (``mkstemp`` would
    make it 0600), or with ``target``'s own when it exists."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None
    while True:
        tmp = target.parent / f".{target.name[:80]}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if mode is not None and hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):  # a file system without modes: the umask's
                os.fchmod(fd, mode)
        return fd, tmp


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path``: a reader sees the old file or the new one, never a torn one.

    A symbolic link is written through (its target is replaced, the link stays); a device or a
    pipe (``/dev/null``) is written into as it is. New files get the umask's permissions, a
    replaced file keeps its own.
    """
    target = real_path(path)
    if is_special_file(target):
        with open(target, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(text)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(target)
    try:
        # A lone surrogate (a label read from a file, a test's own text) is written escaped.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def finite_json(value: Any) -> Any:
    """A copy of ``value`` with NaN and infinities replaced by None, as strict JSON needs."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """``value`` as one line of strict JSON, non-finite floats as null. The C encoder does the
    common case (no NaN anywhere); only a value holding one is copied first."""
    try:
        return json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        return json.dumps(finite_json(value), allow_nan=False, default=str)


def trial_text(trial: TrialResult) -> str:
    """One trial as the run file and its journal hold it: ``trial.to_dict()`` as a line of JSON.

    Built here without ``to_dict``'s deep copy (``dataclasses.asdict`` copies every row of the
    history, tens of milliseconds for a trial of 150 epochs): the encoder only reads."""
    record: dict[str, Any] = {f.name: getattr(trial, f.name) for f in fields(TrialResult)}
    record["runs"] = [{f.name: getattr(run, f.name) for f in fields(SeedRun)}
                      for run in trial.runs]
    record["hparams"] = {k: jsonable(v) for k, v in trial.hparams.items()}
    record["status"] = trial.status
    record["metrics"] = {name: summary.as_dict() for name, summary in trial.metrics.items()}
    return json_text(record)


def environment_info() -> dict[str, Any]:
    """Machine and commit, as pytest-benchmark records them, plus the torch build."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info

    from .devices import torch_build

    version, cuda = torch_build()
    return {
        "machine_info": pytest_benchmark_generate_machine_info(),
        "commit_info": get_commit_info(),
        "torch": version,
        "cuda": cuda,
    }


@dataclass
class RunFile:
    """A run file's content: its trials and where they ran."""

    trials: list[TrialResult]
    created: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def machine(self) -> dict[str, Any]:
        machine = self.environment.get("machine_info")
        return machine if isinstance(machine, dict) else {}

    @property
    def commit(self) -> dict[str, Any]:
        commit = self.environment.get("commit_info")
        return commit if isinstance(commit, dict) else {}

    def to_json(self, trial_texts: Iterable[str] | None = None) -> str:
        """The file's text: a header line, then one trial per line. ``trial_texts`` are the
        trials already serialised (``trial_text``), as the session keeps them."""
        header = json_text({
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "created": self.created or datetime.now(timezone.utc).isoformat(),
            **self.extra,
            "environment": self.environment,
        })
        texts = list(trial_texts) if trial_texts is not None else [
            trial_text(t) for t in self.trials]
        body = ",\n".join(texts)
        return f"{header[:-1]}, \"trials\": [\n{body}\n]}}\n" if texts else \
            f"{header[:-1]}, \"trials\": []}}\n"


def write_run(path: str | os.PathLike[str], run: RunFile) -> None:
    atomic_write_text(path, run.to_json())


# --------------------------------------------------------------------------- the journal


def journal_path(path: str | os.PathLike[str]) -> Path:
    """The journal of the results file ``path``: beside the file it names (through links)."""
    target = real_path(path)
    return target.with_name(target.name + JOURNAL_SUFFIX)


class Journal:
    """The append-only journal of one run's finished trials: a header line naming the run,
    then one JSON line per entry.

    ``append`` writes its line whole before it returns: from then on the line survives the
    process being killed (``kill -9``), since the operating system holds it. A thread of the
    journal's own then forces the lines to the disk (``fsync``), all that came since its last
    one at once, so that a power cut loses at most the lines of the last moments and the tests
    never wait for the disk. A failed append is cut off again, so that the journal never holds
    a torn line before a good one; only a process killed mid-write leaves one, at the very end,
    which readers ignore.
    """

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.sync_error: OSError | None = None  # from the flushing thread, said by the caller
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        self._size = 0
        self._unsynced = threading.Event()
        self._closing = False
        try:
            self.append(json_text({"schema": JOURNAL_SCHEMA, "version": SCHEMA_VERSION,
                                   "run_id": run_id}))
        except BaseException:
            os.close(self._fd)
            raise
        self._flusher = threading.Thread(target=self._flush, name="hparams-journal",
                                         daemon=True)
        self._flusher.start()

    def append(self, line: str) -> None:
        """Write ``line`` and a newline, whole; the flushing thread takes them to the disk."""
        data = (line + "\n").encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self._unsynced.set()

    def add_trial(self, text: str) -> None:
        self.append(f"{{\"trial\": {text}}}")

    def _flush(self) -> None:
        while True:
            self._unsynced.wait()
            self._unsynced.clear()
            if self._closing:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.sync_error = exc

    def close(self, remove: bool = False) -> None:
        """Stop the flushing thread; remove the journal, or force it to the disk and keep it."""
        self._closing = True
        self._unsynced.set()
        self._flusher.join()
        if not remove:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        os.close(self._fd)
        if remove:
            self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading


def _read_text(source: Path, what: str = "results file") -> str:
    try:
        return source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFileError(f"{source}: no such {what}") from None
    except IsADirectoryError:
        raise ResultsFileError(f"{source}: is a folder, not a {what}") from None
    except OSError as exc:
        raise ResultsFileError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ResultsFileError(f"{source}: not a pytest-hparams {what} (not text)") from None
    except ValueError as exc:  # a path with a NUL byte
        raise ResultsFileError(f"{source!r}: not a usable path ({exc})") from None


class _NotStrict(ValueError):
    """A number strict JSON does not have: NaN, Infinity, or one beyond a float (1e999)."""


def _constant(text: str) -> float:
    raise _NotStrict(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStrict(text)
    return value


def _load_json(text: str, name: str) -> Any:
    """Parse strict JSON text; every way it can fail is a ResultsFileError naming ``name``."""
    try:
        document = json.loads(text, parse_constant=_constant, parse_float=_float)
        if "\\ud" in text.lower():  # escaped surrogates: a lone one would fail to print
            document = _whole_characters(document)
        return document
    except json.JSONDecodeError as exc:
        what = "is empty" if not text.strip() else f"is not valid JSON ({exc.msg} at line " \
               f"{exc.lineno}, column {exc.colno}); it may be truncated"
        raise ResultsFileError(f"{name}: {what}") from None
    except RecursionError:
        raise ResultsFileError(f"{name}: nested too deeply to be a results file") from None
    except _NotStrict as exc:
        raise ResultsFileError(f"{name}: holds the number {str(exc)[:20]}, which JSON does not "
                               f"allow (pytest-hparams writes a missing or non-finite value as "
                               f"null)") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise ResultsFileError(f"{name}: not a results file ({exc})") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(value: Any) -> Any:
    """``value`` with each lone surrogate (half a character, as ``"\\ud800"`` escapes one)
    replaced by U+FFFD, so that what is read can be printed and written as UTF-8."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_whole_characters(v) for v in value]
    if isinstance(value, dict):
        return {_whole_characters(k): _whole_characters(v) for k, v in value.items()}
    return value


def read_run(path: str | os.PathLike[str]) -> RunFile:
    """Read and validate a run file, with the journal of its run when one is beside it (a run
    cut short); ResultsFileError names the file and the problem."""
    source = Path(path)
    document = _load_json(_read_text(source), str(source))
    run = parse_run(document, source)
    journal = journal_path(source) if not is_special_file(source) else None
    if journal is not None and journal.is_file():
        _merge_journal(run, journal)
    return run


def _merge_journal(run: RunFile, journal: Path) -> None:
    """Add the trials of ``journal`` to ``run`` when it is the journal of that run (a journal
    left by another run, whose file was since rewritten, is ignored)."""
    text = _read_text(journal, "journal")
    lines = text.split("\n")
    complete = lines[:-1]  # the last piece is empty, or a line a killed process left torn
    if not complete:
        return
    try:
        header = json.loads(complete[0])
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("schema") != JOURNAL_SCHEMA:
        raise ResultsFileError(f"{journal}: line 1: not the journal of a pytest-hparams run")
    run_id = run.extra.get("run_id")
    if not isinstance(run_id, str) or header.get("run_id") != run_id:
        return
    trials = {trial.nodeid: trial for trial in run.trials}
    for number, line in enumerate(complete[1:], start=2):
        entry = _load_json(line, f"{journal}: line {number}")
        if not isinstance(entry, dict):
            raise ResultsFileError(f"{journal}: line {number}: not a journal entry")
        if "trial" in entry:
            trial = _parse_trial(entry["trial"], f"{journal}: line {number}")
            trials[trial.nodeid] = trial
        if isinstance(entry.get("environment"), dict) and not run.environment:
            run.environment = _parse_environment(entry["environment"], f"{journal}: line "
                                                                       f"{number}")
        if isinstance(entry.get("device"), str):
            run.extra.setdefault("device", entry["device"])
    run.trials = list(trials.values())


def parse_run(document: Any, source: Path | None = None) -> RunFile:
    """A run file's content from its parsed JSON; ResultsFileError names the field."""
    name = str(source) if source else "results"
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ResultsFileError(
            f"{name}: not a pytest-hparams results file (no \"schema\": \"{SCHEMA}\")"
        )
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultsFileError(f"{name}: the schema version {_shown(version)} is not an integer")
    if version > SCHEMA_VERSION:
        raise ResultsFileError(
            f"{name}: written by a newer pytest-hparams (schema version {_shown(version)}; this "
            f"one reads up to {SCHEMA_VERSION}); upgrade pytest-hparams to read it"
        )
    trials = document.get("trials")
    if not isinstance(trials, list):
        raise ResultsFileError(f"{name}: \"trials\" must be a list")
    parsed = [_parse_trial(trial, f"{name}: trial {index}") for index, trial in enumerate(trials)]
    created = document.get("created", "")
    if not isinstance(created, str):
        raise ResultsFileError(f"{name}: \"created\" must be text, got {_shown(created)}")
    extra = {k: v for k, v in document.items()
             if k not in ("schema", "version", "created", "environment", "trials")}
    for key in ("device", "name", "run_id"):
        if key in extra and not isinstance(extra[key], str):
            raise ResultsFileError(f"{name}: \"{key}\" must be text, got {_shown(extra[key])}")
    environment = _parse_environment(document.get("environment", {}), name)
    return RunFile(parsed, created, environment, extra, source)


def _parse_trial(trial: Any, where: str) -> TrialResult:
    if not isinstance(trial, dict) or not isinstance(trial.get("nodeid"), str):
        raise ResultsFileError(f"{where} is not a trial record")
    problem = _trial_problem(trial)
    if problem:
        raise ResultsFileError(f"{where} ({_clipped(trial['nodeid'])}): {problem}")
    try:
        parsed = TrialResult.from_dict(trial)
        parsed.target = {k: (math.nan if v is None else float(v)) for k, v in parsed.target.items()}
        return parsed
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ResultsFileError(f"{where} ({_clipped(trial['nodeid'])}): {exc}") from None


def _parse_environment(environment: Any, name: str) -> dict[str, Any]:
    if not isinstance(environment, dict):
        raise ResultsFileError(f"{name}: \"environment\" must be an object, got "
                               f"{_shown(environment)}")
    for key in ("machine_info", "commit_info"):
        value = environment.get(key)
        if value is not None and not isinstance(value, dict):
            raise ResultsFileError(f"{name}: \"environment\": \"{key}\" must be an object, got "
                                   f"{_shown(value)}")
    cpu = (environment.get("machine_info") or {}).get("cpu")
    if cpu is not None and not isinstance(cpu, dict):
        raise ResultsFileError(f"{name}: \"environment\": \"machine_info\": \"cpu\" must be an "
                               f"object, got {_shown(cpu)}")
    return environment


def _shown(value: Any) -> str:
    """A value from a file, short enough for a message (a huge one is not printed whole)."""
    if isinstance(value, (dict, list)):
        return f"{type(value).__name__.replace('dict', 'an object').replace('list', 'a list')}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _clipped(text: str) -> str:
    return _shown(text)[1:-1] if len(text) > 58 else text


# --------------------------------------------------------------------------- field types
# A file is data from anywhere: every field a trial record is built from has its JSON type
# and range checked, so that what is read can be summarised and rendered without surprises.

_Check = tuple[Callable[[Any], bool], str]

#: Counts of epochs: whole numbers a float holds exactly.
_MAX_COUNT = 2**53


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return _integer(value) and 0 <= value <= _MAX_COUNT


def _number(value: Any) -> bool:
    """A JSON number a float holds (NaN and the infinities included): not 10**400."""
    if isinstance(value, float):
        return True
    return _integer(value) and abs(value) < 2**1000


def _number_or_null(value: Any) -> bool:
    return value is None or _number(value)


def _count_or_null(value: Any) -> bool:
    return value is None or _count(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _metrics(value: Any) -> bool:
    return isinstance(value, dict) and all(_number_or_null(v) for v in value.values())


def _tolerances(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    for rule in value.values():
        if rule is None:
            continue
        if not isinstance(rule, str):
            return False
        try:
            parse_tolerance(rule)
        except CompareExpressionError:
            return False
    return True


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


_TRIAL_FIELDS: dict[str, _Check] = {
    "test": (_text, "text"), "config_id": (_text, "text"), "outcome": (_text, "text"),
    "message": (_text, "text"), "device": (_text, "text"), "worker": (_text, "text"),
    "hparams": (lambda v: isinstance(v, dict), "an object of hyperparameters"),
    "axes": (_list_of(_text), "a list of names"),
    "labels": (lambda v: isinstance(v, dict) and all(_text(x) for x in v.values()),
               "an object of name: text"),
    "seeds": (_list_of(_integer), "a list of integers"),
    "runs": (_list_of(lambda v: isinstance(v, dict)), "a list of runs"),
    "target": (_metrics, "an object of metric: number"),
    "duration": (_number, "a number"),
    "notes": (_list_of(_text), "a list of text"),
    "tolerance": (_tolerances, "an object of metric: tolerance (such as \"accuracy:-0.01\") "
                               "or null"),
    "seed_design": (lambda v: isinstance(v, dict) and (
        "looks" not in v or _list_of(_integer)(v["looks"])) and (
        "alpha" not in v or _number(v["alpha"])),
        "an object (the seeds on demand: looks, a list of integers; alpha, a number)"),
}

_RUN_FIELDS: dict[str, _Check] = {
    "seed": (_integer, "an integer"), "status": (_text, "text"),
    "reason": (_text, "text"),
    "final": (_metrics, "an object of metric: number"),
    "best": (_metrics, "an object of metric: number"),
    "history": (_list_of(_metrics), "a list of objects of metric: number"),
    "epochs": (_count, "a whole number from 0 to 2**53"),
    "epochs_to_target": (_count_or_null, "a whole number from 0 to 2**53, or null"),
    "seconds_to_target": (_number_or_null, "a number"), "wall_seconds": (_number, "a number"),
    "device": (_text, "text"),
}


def _trial_problem(trial: dict[str, Any]) -> str | None:
    """What is wrong with a trial record's field types, or None."""
    for key, (check, kind) in _TRIAL_FIELDS.items():
        if key in trial and not check(trial[key]):
            return f"\"{key}\" must be {kind}, got {_shown(trial[key])}"
    for index, run in enumerate(trial.get("runs", [])):
        for key, (check, kind) in _RUN_FIELDS.items():
            if key in run and not check(run[key]):
                return f"run {index}: \"{key}\" must be {kind}, got {_shown(run[key])}"
        if run.get("epochs_to_target") is not None and run.get("seconds_to_target") is None:
            return f"run {index}: reached its target but has no \"seconds_to_target\""
    return None
