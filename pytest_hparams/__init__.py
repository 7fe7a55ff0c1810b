"""pytest-hparams: hyperparameter grids as pytest tests, trained over seeds, compared in tables.

Public API; every other module may change.
"""

from .data import Split, augmentation, breast_cancer, digits
from .devices import DeviceUnavailable, resolve_device
from .errors import (
    CompareExpressionError,
    HParamsError,
    ResultsFileError,
    SearchError,
    SettingsError,
    SpaceError,
)
from .gate import Comparison, Tolerance, compare_metric, compare_runs, parse_tolerance
from .hparams import HParams
from .metrics import MetricSummary, Threshold, lower_is_better
from .models import MLP, SmallCNN, initialise
from .plots import plot_curves
from .recording import RunRecorder, TrialRecorder, seed_everything
from .report import markdown_tables, render_tables, results_frame
from .search import SearchResult, search
from .settings import TrainSettings
from .space import Space, choice, int_uniform, log_uniform, parse_space, uniform
from .storage import resolve_baseline, save_run
from .store import RunFile, read_run, write_run
from .sweep import sweep
from .train import evaluate, fit
from .trial import SeedRun, TrialResult

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "CompareExpressionError",
    "Comparison",
    "DeviceUnavailable",
    "HParams",
    "HParamsError",
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
    "uniform",
    "write_run",
]
