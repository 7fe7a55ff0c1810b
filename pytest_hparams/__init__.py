"""pytest-hparams: hyperparameter grids as pytest tests, trained over seeds, compared in tables.

Public API; every other module may change. The names load on first use (PEP 562), so that
loading the pytest plugin, which imports this package, costs nothing until a test needs torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_SOURCES = {
    "augmentation": "data",
    "breast_cancer": "data",
    "choice": "space",
    "compare_metric": "gate.metric_verdict",
    "compare_runs": "gate.verdicts",
    "CompareExpressionError": "errors",
    "Comparison": "gate.verdicts",
    "DeviceUnavailable": "devices",
    "digits": "data",
    "evaluate": "training.loop",
    "fit": "training.fit",
    "fit_lightning": "lightning",
    "HParams": "hparams",
    "HParamsCallback": "lightning",
    "HParamsError": "errors",
    "HParamsWarning": "errors",
    "initialise": "models",
    "int_uniform": "space",
    "log_uniform": "space",
    "lower_is_better": "metrics",
    "markdown_tables": "report",
    "MetricSummary": "metrics",
    "MLP": "models",
    "parse_space": "space",
    "parse_tolerance": "gate.tolerance",
    "plot_curves": "plots",
    "read_run": "runfile",
    "render_tables": "report",
    "resolve_baseline": "saved_runs",
    "resolve_device": "devices",
    "results_frame": "report",
    "ResultsFileError": "errors",
    "RunFile": "runfile",
    "RunRecorder": "recording",
    "save_run": "saved_runs",
    "seed_everything": "recording",
    "SeedRun": "trial",
    "SearchError": "errors",
    "SearchResult": "search",
    "SettingsError": "errors",
    "SmallCNN": "models",
    "Space": "space",
    "SpaceError": "errors",
    "Split": "data",
    "search": "search",
    "sweep": "sweep",
    "Threshold": "metrics",
    "Tolerance": "gate.tolerance",
    "trainer_device": "lightning",
    "TrainSettings": "settings",
    "TrialRecorder": "recording",
    "TrialResult": "trial",
    "uniform": "space",
    "write_run": "runfile",
}

__all__ = [
    "MLP",
    "CompareExpressionError",
    "Comparison",
    "DeviceUnavailable",
    "HParams",
    "HParamsCallback",
    "HParamsError",
    "HParamsWarning",
    "MetricSummary",
    "ResultsFileError",
    "RunFile",
    "RunRecorder",
    "SearchError",
    "SearchResult",
    "SeedRun",
    "SettingsError",
    "SmallCNN",
    "Space",
    "SpaceError",
    "Split",
    "Threshold",
    "Tolerance",
    "TrainSettings",
    "TrialRecorder",
    "TrialResult",
    "augmentation",
    "breast_cancer",
    "choice",
    "compare_metric",
    "compare_runs",
    "digits",
    "evaluate",
    "fit",
    "fit_lightning",
    "initialise",
    "int_uniform",
    "log_uniform",
    "lower_is_better",
    "markdown_tables",
    "parse_space",
    "parse_tolerance",
    "plot_curves",
    "read_run",
    "render_tables",
    "resolve_baseline",
    "resolve_device",
    "results_frame",
    "save_run",
    "search",
    "seed_everything",
    "sweep",
    "trainer_device",
    "uniform",
    "write_run",
]

if TYPE_CHECKING:
    from .data import Split, augmentation, breast_cancer, digits
    from .devices import DeviceUnavailable, resolve_device
    from .errors import (
        CompareExpressionError,
        HParamsError,
        HParamsWarning,
        ResultsFileError,
        SearchError,
        SettingsError,
        SpaceError,
    )
    from .gate.metric_verdict import compare_metric
    from .gate.tolerance import Tolerance, parse_tolerance
    from .gate.verdicts import Comparison, compare_runs
    from .hparams import HParams
    from .lightning import HParamsCallback, fit_lightning, trainer_device
    from .metrics import MetricSummary, Threshold, lower_is_better
    from .models import MLP, SmallCNN, initialise
    from .plots import plot_curves
    from .recording import RunRecorder, TrialRecorder, seed_everything
    from .report import markdown_tables, render_tables, results_frame
    from .runfile import RunFile, read_run, write_run
    from .saved_runs import resolve_baseline, save_run
    from .search import SearchResult, search
    from .settings import TrainSettings
    from .space import Space, choice, int_uniform, log_uniform, parse_space, uniform
    from .sweep import sweep
    from .training.fit import fit
    from .training.loop import evaluate
    from .trial import SeedRun, TrialResult


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_hparams' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
