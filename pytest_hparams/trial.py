"""Typed records of what a trial did: per seed, and over seeds for one configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from .metrics import MetricSummary, lower_is_better
from .space import format_value


@dataclass
class SeedRun:
    """One training run: one configuration, one seed."""

    seed: int
    # or "diverged", "oom", "error", "interrupted", each with a reason, or "pruned": an adaptive
    # search stopped it early as unpromising (never a failure)
    status: str = "ok"
    reason: str = ""
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: int = 0
    epochs_to_target: int | None = None
    seconds_to_target: float | None = None
    wall_seconds: float = 0.0
    device: str = "cpu"

    @property
    def reached_target(self) -> bool:
        return self.epochs_to_target is not None

    def to_dict(self) -> dict[str, Any]:
        """The run as plain data, in containers of its own."""
        return {f.name: _copied(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeedRun:
        known = {f.name for f in fields(cls)}
        run = cls(**{k: v for k, v in data.items() if k in known})
        run.final = _floats(run.final)
        run.best = _floats(run.best)
        run.history = [_floats(row) for row in run.history]
        return run


@dataclass(repr=False)
class TrialResult:
    """One configuration of one test over its seeds: what ``fit`` returns and a table row shows.

    ``accuracy`` and ``loss`` are means over seeds; ``metric(name)`` gives any metric's
    ``MetricSummary`` (mean, std, min, max, 95 % interval, per-seed values).
    """

    nodeid: str = ""
    test: str = ""
    config_id: str = "default"
    hparams: dict[str, Any] = field(default_factory=dict)
    axes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # names of named values, for tables
    seeds: list[int] = field(default_factory=list)
    runs: list[SeedRun] = field(default_factory=list)
    target: dict[str, float] = field(default_factory=dict)
    outcome: str = ""
    message: str = ""
    device: str = ""
    duration: float = 0.0
    worker: str = ""
    notes: list[str] = field(default_factory=list)
    tolerance: dict[str, str | None] = field(default_factory=dict)  # the marker's, for the gate
    seed_design: dict[str, Any] = field(default_factory=dict)  # the gate's seeds on demand

    def __repr__(self) -> str:
        shown = [f"{name} {s.mean:.4g} ± {s.std:.2g}" if s.n > 1 else f"{name} {s.mean:.4g}"
                 for name, s in self.metrics.items() if name in ("accuracy", "loss")]
        seeds = f"{len(self.runs)} seed{'s' if len(self.runs) != 1 else ''}"
        return f"<TrialResult {self.nodeid or self.config_id}: {', '.join(shown)} over {seeds}, " \
               f"{self.status}>"

    # -- the verdict of the runs

    @property
    def status(self) -> str:
        """"ok" when every seed's run is ok, else the first other status (or "no runs")."""
        if not self.runs:
            return "no runs"
        for run in self.runs:
            if run.status != "ok":
                return run.status
        return "ok"

    @property
    def reason(self) -> str:
        """Why runs did not end ok, seed by seed, or the test's failure message."""
        bad = [f"seed {r.seed}: {r.status}: {r.reason}" for r in self.runs if r.status != "ok"]
        return "; ".join(bad) or self.message

    # -- metrics over seeds

    def metric(self, name: str) -> MetricSummary:
        """The final value of ``name`` over seeds (NaN where a run did not record it)."""
        return MetricSummary.of(run.final.get(name, math.nan) for run in self.runs)

    @property
    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for run in self.runs:
            names.update(dict.fromkeys(run.final))
        return list(names)

    @property
    def metrics(self) -> dict[str, MetricSummary]:
        return {name: self.metric(name) for name in self.metric_names}

    @property
    def accuracy(self) -> float:
        return self.metric("accuracy").mean

    @property
    def loss(self) -> float:
        return self.metric("loss").mean

    @property
    def reached(self) -> int:
        """How many seeds reached the target."""
        return sum(run.reached_target for run in self.runs)

    @property
    def epochs_to_target(self) -> MetricSummary:
        """Over the seeds that reached the target."""
        return MetricSummary.of(r.epochs_to_target for r in self.runs if r.reached_target)

    @property
    def seconds_to_target(self) -> MetricSummary:
        return MetricSummary.of(r.seconds_to_target for r in self.runs if r.reached_target)

    @property
    def wall_seconds(self) -> MetricSummary:
        return MetricSummary.of(run.wall_seconds for run in self.runs)

    def label(self, key: str) -> str:
        """How tables show hyperparameter ``key``: its name on a dict axis, else its value."""
        if key in self.labels:
            return self.labels[key]
        value = self.hparams.get(key)
        if isinstance(value, float):
            text = f"{value:.4g}"
            return text if any(c in text for c in ".enia") else f"{text}.0"  # as in the ids
        return format_value(value)

    # -- serialisation (JSON-ready apart from non-finite floats, which runfile.py handles)

    def to_dict(self) -> dict[str, Any]:
        """The trial as plain data, in containers of its own. Not ``dataclasses.asdict``: its
        deep copy of every history row took tens of milliseconds a trial, and it would copy a
        hyperparameter value (a module, a tensor) only to replace it with its JSON form."""
        data = {f.name: None if f.name in ("hparams", "runs") else _copied(getattr(self, f.name))
                for f in fields(self)}
        data["runs"] = [run.to_dict() for run in self.runs]
        data["hparams"] = {k: jsonable(v) for k, v in self.hparams.items()}
        data["status"] = self.status
        data["metrics"] = {name: s.as_dict() for name, s in self.metrics.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        known = {f.name for f in fields(cls)} - {"runs"}
        trial = cls(**{k: v for k, v in data.items() if k in known})
        trial.runs = [SeedRun.from_dict(r) for r in data.get("runs", [])]
        return trial


def _copied(value: Any) -> Any:
    """``value`` with its dicts and lists copied (the records hold plain data inside them)."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copied(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """A JSON-native copy of a hyperparameter value; other objects become their id text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return item()
    return format_value(value)


def _floats(mapping: dict[str, Any]) -> dict[str, float]:
    return {k: (math.nan if v is None else float(v)) for k, v in mapping.items()}


def best_value(metric: str, values: list[float]) -> float:
    """The best of ``values`` for ``metric``'s direction, ignoring NaN."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    return min(finite) if lower_is_better(metric) else max(finite)
