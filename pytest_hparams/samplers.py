"""The bridge from a search space to optuna: its distributions, samplers, pruners and storages.

optuna is an optional dependency (``pip install "pytest-hparams[search]"``); it is imported
here only when a search runs, never when the plugin loads.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import numbers
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HParamsError, SearchError
from .space import Choice, Distribution, IntUniform, LogUniform, Space, Uniform, format_value

INSTALL = 'pip install "pytest-hparams[search]"'
_MINIMUM_OPTUNA = (3, 6)
_STARTUP = 10  # optuna's random trials before TPE or the GP model the results

#: The samplers ``search(sampler=...)`` knows by name.
SAMPLERS: dict[str, str] = {
    "tpe": "tree-structured Parzen estimator (optuna's TPESampler, constant liar for batches)",
    "gp": "Gaussian-process Bayesian optimisation (optuna's GPSampler, q-batch logEI)",
    "cmaes": "CMA-ES evolution strategy (optuna's CmaEsSampler; needs pip install cmaes)",
    "random": "independent uniform draws (optuna's RandomSampler)",
    "grid": "every combination of list axes, in a seeded random order (optuna's GridSampler)",
}

#: The pruners ``search(pruner=...)`` knows by name.
PRUNERS: dict[str, str] = {
    "halving": "asynchronous successive halving (optuna's SuccessiveHalvingPruner)",
    "hyperband": "Hyperband, successive halving over several brackets (HyperbandPruner)",
    "median": "stop below the median of earlier trials at the same epoch (MedianPruner)",
}


def import_optuna() -> Any:
    """optuna, or an error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise HParamsError(f"search() needs optuna: {INSTALL} (or pip install optuna)") from None
    version = tuple(int(part) for part in optuna.__version__.split(".")[:2] if part.isdigit())
    if version < _MINIMUM_OPTUNA:
        raise HParamsError(f"search() needs optuna >= 3.6, found {optuna.__version__}: "
                           f"{INSTALL}")
    return optuna


def _error(test: str, key: str, problem: str) -> SearchError:
    return SearchError(f"{test}: search key {key!r}: {problem}")


def _unknown(test: str, key: str, given: Any, known: dict[str, str]) -> SearchError:
    close = difflib.get_close_matches(str(given), known, n=1) if isinstance(given, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    names = "; ".join(f"{name!r}: {what}" for name, what in known.items())
    return _error(test, key, f"{given!r} is not one of them; {hint}use one of {names}, or an "
                             f"optuna object")


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Axis:
    """One searched key: the optuna distribution its values are asked from, and how a value
    optuna returns becomes the hyperparameter (and its table label)."""

    key: str
    distribution: Any
    kind: str  # list, choice, uniform, log_uniform, int_uniform
    choices: tuple[tuple[str, Any], ...] | None = None  # (id, value) of a categorical axis
    by_id: bool = False  # optuna sees the ids of these choices rather than the values

    def decode(self, raw: Any) -> tuple[Any, str | None]:
        """The hyperparameter for optuna's ``raw`` value, and its label when it is a name."""
        if self.choices is None:
            return raw, None
        for value_id, value in self.choices:
            if (value_id if self.by_id else value) == raw and (
                    self.by_id or type(value) is type(raw)):
                return value, (value_id if value_id != format_value(value) else None)
        raise SearchError(f"search key {self.key!r}: optuna returned {raw!r}, which is not one "
                          f"of its values (a study made with another space?)")

    def grid_values(self) -> list[Any] | None:
        """The values a grid walks through; None for a continuous axis."""
        if self.choices is not None:
            return [value_id if self.by_id else value for value_id, value in self.choices]
        if self.kind == "int_uniform":
            return list(range(self.distribution.low, self.distribution.high + 1))
        return None


def search_axes(optuna: Any, space: Space) -> list[Axis]:
    """The searched keys of ``space`` (its grid axes and distributions), in its order."""
    axes = []
    for key in space.order:
        if key in space.grid:
            axes.append(_categorical(optuna, key, "list", space.grid[key]))
        elif key in space.distributions:
            axes.append(_axis(optuna, space.test, key, space.distributions[key]))
    return axes


def _axis(optuna: Any, test: str, key: str, distribution: Distribution) -> Axis:
    dists = optuna.distributions
    if isinstance(distribution, Choice):
        items = [(format_value(v), v) for v in distribution.values]
        ids = [value_id for value_id, _ in items]
        if len(set(ids)) != len(ids):
            raise _error(test, key, "choice() has values that read the same "
                                    f"({', '.join(ids)}); give distinct values")
        return _categorical(optuna, key, "choice", tuple(items))
    if isinstance(distribution, LogUniform):
        return Axis(key, dists.FloatDistribution(float(distribution.low),
                                                 float(distribution.high), log=True),
                    "log_uniform")
    if isinstance(distribution, Uniform):
        return Axis(key, dists.FloatDistribution(float(distribution.low),
                                                 float(distribution.high)), "uniform")
    if isinstance(distribution, IntUniform):
        return Axis(key, dists.IntDistribution(int(distribution.low), int(distribution.high)),
                    "int_uniform")
    raise _error(test, key, f"search() cannot ask optuna for a {type(distribution).__name__}")


def _categorical(optuna: Any, key: str, kind: str,
                 items: tuple[tuple[str, Any], ...]) -> Axis:
    """optuna stores categorical values as they are when they are all text, all numbers or
    all flags (so a shared study reads naturally); anything else it sees by id."""
    values = [value for _, value in items]
    native = (all(isinstance(v, str) for v in values)
              or all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                     and math.isfinite(v) for v in values)
              or all(isinstance(v, bool) for v in values))
    native = native and len({format_value(v) for v in values}) == len(values)
    if native:
        values = [v if isinstance(v, (str, bool)) else _plain_number(v) for v in values]
        items = tuple((value_id, value) for (value_id, _), value in zip(items, values,
                                                                        strict=True))
    choices = values if native else [value_id for value_id, _ in items]
    return Axis(key, optuna.distributions.CategoricalDistribution(choices), kind, items,
                by_id=not native)


def _plain_number(value: Any) -> int | float:
    """A Python int or float for numbers optuna cannot store (NumPy scalars)."""
    return int(value) if isinstance(value, numbers.Integral) else float(value)


# --------------------------------------------------------------------------- samplers


def make_sampler(optuna: Any, sampler: Any, *, seed: int | None, axes: list[Axis],
                 trials: int, batch: int, test: str) -> Any:
    """The optuna sampler for ``sampler`` (a name or an optuna sampler object).

    TPE and the GP start with random trials, optuna's 10 by default; here the start is whole
    batches of about 10 trials (8 for batches of 8, 16 for 16), since a model fitted on the
    first batch can already steer the second.
    """
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise _unknown(test, "sampler", sampler, SAMPLERS)
    samplers = optuna.samplers
    startup = batch * max(1, round(_STARTUP / batch))
    with warnings.catch_warnings():
        # Some of these arguments are marked experimental in some optuna versions.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler == "tpe":
            # A batch is asked before any of it is told: constant liar keeps its configurations
            # apart, by treating those still training as bad results.
            return samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup)
        if sampler == "gp":
            return samplers.GPSampler(seed=seed, n_startup_trials=startup)
        if sampler == "cmaes":
            if importlib.util.find_spec("cmaes") is None:
                raise _error(test, "sampler", "'cmaes' needs the cmaes package: pip install cmaes")
            return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if sampler == "random":
            return samplers.RandomSampler(seed=seed)
        return samplers.GridSampler(_grid(axes, trials, test), seed=seed)


def _grid(axes: list[Axis], trials: int, test: str) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for axis in axes:
        values = axis.grid_values()
        if values is None:
            raise _error(test, axis.key, f"the grid sampler needs values to walk through, but "
                                         f"{axis.key!r} is continuous ({axis.kind}); give a "
                                         f"list of values, or another sampler")
        grid[axis.key] = values
    size = math.prod(len(values) for values in grid.values())
    if trials > size:
        raise _error(test, "trials", f"the grid has {size} configurations, fewer than "
                                     f"trials={trials}: a grid never repeats one; ask for at "
                                     f"most {size}")
    return grid


# --------------------------------------------------------------------------- pruners


def make_pruner(optuna: Any, pruner: Any, *, epochs: int, test: str) -> Any:
    """The optuna pruner for ``pruner`` (None, a name or an optuna pruner object); ``epochs``
    is the longest a trial trains.

    The named pruners get their resources from ``epochs`` rather than from optuna's "auto",
    which waits for a first completed trial: a whole first batch would train before any rung
    was recorded, and the second batch's first trial would be judged alone.
    """
    pruners = optuna.pruners
    if pruner is None:
        return pruners.NopPruner()
    if isinstance(pruner, pruners.BasePruner):
        return pruner
    if not isinstance(pruner, str) or pruner not in PRUNERS:
        raise _unknown(test, "pruner", pruner, PRUNERS)
    if pruner == "halving":
        # The first rung after a third of the epochs, then every 3x (for 10 epochs: 3 and 9),
        # a third of the trials going on from each. An earlier first rung (1 epoch) judged too
        # soon on the digits: learning rates that start slowly and end best were cut, and the
        # search reached full training's best in 5 of 10 search seeds (benchmarks/
        # search_study.py); from a third, in 10 of 10 and in fewer epochs than full training.
        return pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 3),
                                               reduction_factor=3)
    if pruner == "hyperband":
        return pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs),
                                       reduction_factor=3)
    return pruners.MedianPruner()


def describe_pruner(pruner: Any) -> str:
    """``SuccessiveHalvingPruner``, for a pruned run's reason."""
    return type(pruner).__name__


# --------------------------------------------------------------------------- storage


def open_storage(optuna: Any, storage: Any, *, test: str) -> Any:
    """None (in memory), an optuna storage, a database URL (optuna's RDB storage) or a file
    path (optuna's journal file, which several processes on one machine may share)."""
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, (str, os.PathLike)):
        raise _error(test, "storage", f"give a file path, a database URL or an optuna storage, "
                                      f"got {storage!r}")
    text = os.fspath(storage)
    if "://" in text:
        if importlib.util.find_spec("sqlalchemy") is None:
            raise _error(test, "storage", f"a database URL needs SQLAlchemy: pip install "
                                          f"sqlalchemy (or use a file path: {text!r})")
        return text
    path = Path(text)
    if not path.parent.is_dir():
        raise _error(test, "storage", f"the folder of {text!r} does not exist")
    if path.is_dir():
        raise _error(test, "storage", f"{text!r} is a folder; give a file path, e.g. "
                                      f"{str(path / 'study.log')!r}")
    journal = getattr(optuna.storages, "journal", None)
    backend: Callable[[str], Any]
    if journal is not None and hasattr(journal, "JournalFileBackend"):
        backend = journal.JournalFileBackend
    else:  # optuna 3.x
        backend = optuna.storages.JournalFileStorage
    return optuna.storages.JournalStorage(backend(str(path)))


def open_study(optuna: Any, *, storage: Any, sampler: Any, pruner: Any, name: str,
               minimize: bool, test: str) -> Any:
    """Create the study, or load the one of that name from ``storage``."""
    direction = "minimize" if minimize else "maximize"
    try:
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                    study_name=name, direction=direction, load_if_exists=True)
    except (ValueError, RuntimeError, OSError) as exc:
        raise _error(test, "storage", f"cannot open study {name!r}: {exc}") from exc
    if study.direction.name.lower() != direction:
        raise _error(test, "objective", f"study {name!r} in this storage was made to "
                                        f"{study.direction.name.lower()}, and this search would "
                                        f"{direction}; give another study_name=")
    return study
