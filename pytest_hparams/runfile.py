"""Run files on disk: a versioned JSON schema, atomic writes, validated reads.

A run file holds every trial of one pytest run with the machine and commit it ran on (taken
from pytest-benchmark's helpers). Non-finite floats (a diverged loss) are written as ``null``
and read back as NaN. Files are only ever parsed as JSON: nothing is unpickled or executed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ResultsFileError
from .trial import TrialResult

SCHEMA = "pytest-hparams/run"
SCHEMA_VERSION = 1


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path``: a reader sees the old file or the new one, never a torn one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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


def environment_info() -> dict[str, Any]:
    """Machine and commit, as pytest-benchmark records them, plus the torch build."""
    import torch
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info

    return {
        "machine_info": pytest_benchmark_generate_machine_info(),
        "commit_info": get_commit_info(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
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
        return self.environment.get("machine_info", {})

    @property
    def commit(self) -> dict[str, Any]:
        return self.environment.get("commit_info", {})

    def to_json(self) -> str:
        document = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "created": self.created or datetime.now(timezone.utc).isoformat(),
            **self.extra,
            "environment": self.environment,
            "trials": [t.to_dict() for t in self.trials],
        }
        return json.dumps(finite_json(document), indent=1, allow_nan=False, default=str)


def write_run(path: str | os.PathLike[str], run: RunFile) -> None:
    atomic_write_text(path, run.to_json())


def read_run(path: str | os.PathLike[str]) -> RunFile:
    """Read and validate a run file; ResultsFileError names the file and the problem."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFileError(f"{source}: no such results file") from None
    except OSError as exc:
        raise ResultsFileError(f"{source}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ResultsFileError(f"{source}: not a pytest-hparams results file (not text)") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "is empty" if not text.strip() else f"is not valid JSON ({exc.msg} at line " \
               f"{exc.lineno}, column {exc.colno}); it may be truncated"
        raise ResultsFileError(f"{source}: {what}") from None
    return parse_run(document, source)


def parse_run(document: Any, source: Path | None = None) -> RunFile:
    name = str(source) if source else "results"
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ResultsFileError(
            f"{name}: not a pytest-hparams results file (no \"schema\": \"{SCHEMA}\")"
        )
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultsFileError(f"{name}: the schema version {version!r} is not an integer")
    if version > SCHEMA_VERSION:
        raise ResultsFileError(
            f"{name}: written by a newer pytest-hparams (schema version {version}; this one "
            f"reads up to {SCHEMA_VERSION}); upgrade pytest-hparams to read it"
        )
    trials = document.get("trials")
    if not isinstance(trials, list):
        raise ResultsFileError(f"{name}: \"trials\" must be a list")
    parsed = []
    for index, trial in enumerate(trials):
        if not isinstance(trial, dict) or not isinstance(trial.get("nodeid"), str):
            raise ResultsFileError(f"{name}: trial {index} is not a trial record")
        problem = _trial_problem(trial)
        if problem:
            raise ResultsFileError(f"{name}: trial {index} ({trial['nodeid']}): {problem}")
        try:
            parsed.append(TrialResult.from_dict(trial))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ResultsFileError(f"{name}: trial {index} ({trial['nodeid']}): {exc}") from None
    extra = {k: v for k, v in document.items()
             if k not in ("schema", "version", "created", "environment", "trials")}
    environment = document.get("environment")
    return RunFile(parsed, str(document.get("created", "")),
                   environment if isinstance(environment, dict) else {}, extra, source)


# --------------------------------------------------------------------------- field types
# A file is data from anywhere: every field a trial record is built from has its JSON type
# checked, so that what is read can be summarised and rendered without surprises.

_Check = tuple[Callable[[Any], bool], str]


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return _integer(value) or isinstance(value, float)


def _number_or_null(value: Any) -> bool:
    return value is None or _number(value)


def _integer_or_null(value: Any) -> bool:
    return value is None or _integer(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _metrics(value: Any) -> bool:
    return isinstance(value, dict) and all(_number_or_null(v) for v in value.values())


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


_TRIAL_FIELDS: dict[str, _Check] = {
    "test": (_text, "text"), "config_id": (_text, "text"), "outcome": (_text, "text"),
    "message": (_text, "text"), "device": (_text, "text"), "worker": (_text, "text"),
    "hparams": (lambda v: isinstance(v, dict), "an object of hyperparameters"),
    "axes": (_list_of(_text), "a list of names"),
    "labels": (lambda v: isinstance(v, dict) and all(_text(x) for x in v.values()),
               "an object of name: text"), "seeds": (_list_of(_integer), "a list of "
                                                            "integers"),
    "runs": (_list_of(lambda v: isinstance(v, dict)), "a list of runs"),
    "target": (lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
               "an object of metric: number"), "duration": (_number, "a number"),
    "notes": (_list_of(_text), "a list of text"),
}

_RUN_FIELDS: dict[str, _Check] = {
    "seed": (_integer, "an integer"), "status": (_text, "text"), "reason": (_text, "text"),
    "final": (_metrics, "an object of metric: number"),
    "best": (_metrics, "an object of metric: number"),
    "history": (_list_of(_metrics), "a list of objects of metric: number"),
    "epochs": (_integer, "an integer"), "epochs_to_target": (_integer_or_null, "an integer"),
    "seconds_to_target": (_number_or_null, "a number"), "wall_seconds": (_number, "a number"),
    "device": (_text, "text"),
}


def _trial_problem(trial: dict[str, Any]) -> str | None:
    """What is wrong with a trial record's field types, or None."""
    for key, (check, kind) in _TRIAL_FIELDS.items():
        if key in trial and not check(trial[key]):
            return f"\"{key}\" must be {kind}, got {trial[key]!r:.60}"
    for index, run in enumerate(trial.get("runs", [])):
        for key, (check, kind) in _RUN_FIELDS.items():
            if key in run and not check(run[key]):
                return f"run {index}: \"{key}\" must be {kind}, got {run[key]!r:.60}"
        if run.get("epochs_to_target") is not None and run.get("seconds_to_target") is None:
            return f"run {index}: reached its target but has no \"seconds_to_target\""
    return None
