"""Learning curves as pictures: one PNG per test, a line per configuration (matplotlib).

Each line is a metric's mean over the configuration's seeds, epoch by epoch, in a band from the
lowest to the highest seed; a target is a dashed line. matplotlib is optional
(``pip install 'pytest-hparams[plot]'``); without it, asking for plots is a clear error.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import HParamsError
from .report import load_trials, printable, varied_keys
from .trial import TrialResult

#: The curves drawn, in this order, where the runs recorded them.
CURVES = ("accuracy", "loss", "train_loss")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: The longest file name written (the usual limit is 255 bytes).
_MAX_STEM = 100
#: The largest magnitude drawn: beyond it a value is off any chart (a diverging loss), and an
#: axis spanning it could not place its ticks. Such values are left out like NaN.
_DRAWN = 1e100
#: The smallest positive value a logarithmic axis shows.
_LOG_LOW = 1e-100


def check_matplotlib() -> None:
    """Raise HParamsError with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HParamsError("plots need matplotlib: pip install 'pytest-hparams[plot]' "
                           "(or pip install matplotlib)") from None


def plot_curves(source: Iterable[TrialResult] | str | os.PathLike[str],
                folder: str | Path) -> list[Path]:
    """Write one PNG of learning curves per test into ``folder``; return the files written.
    ``source`` is trial records or a results file (``--hparams-json``).

    Tests whose runs logged no per-epoch history (an own loop that only finished) are left out.
    """
    check_matplotlib()
    groups: dict[str, list[TrialResult]] = {}
    for trial in load_trials(source):
        groups.setdefault(trial.test or trial.nodeid, []).append(trial)
    folder = Path(folder)
    written: list[Path] = []
    for test, group in groups.items():
        metrics = [m for m in CURVES if any(_has_curve(t, m) for t in group)][:2]
        if not metrics:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_file_stem(test, [p.stem for p in written])}.png"
        _figure(test, group, metrics).savefig(path, dpi=100)
        written.append(path)
    return written


def _file_stem(test: str, taken: list[str]) -> str:
    """A file name for ``test``'s picture: its name made safe, cut to ``_MAX_STEM``, with a
    hash of the whole name when it was cut or another test's name came out the same."""
    stem = _UNSAFE.sub("_", test).strip("_") or "test"
    if len(stem) <= _MAX_STEM and stem not in taken:
        return stem
    digest = hashlib.sha1(test.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{stem[:_MAX_STEM - 11]}-{digest}"


def _text(text: str) -> str:
    """Text for matplotlib: printable, and ``$`` not read as the start of mathematics."""
    return printable(text).replace("$", r"\$")


def _has_curve(trial: TrialResult, metric: str) -> bool:
    return any(metric in row for run in trial.runs for row in run.history)


def _figure(test: str, trials: list[TrialResult], metrics: list[str]) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5.5 * len(metrics), 4.2), layout="constrained")
    keys = varied_keys(trials)
    for axes, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics,
                            strict=True):
        log = metric.endswith("loss") and _fits_a_log_scale(trials, metric)
        for trial in trials:
            epochs, mean, low, high = _curve(trial, metric)
            if not epochs:
                continue
            label = _text(", ".join(f"{k}={trial.label(k)}" for k in keys) or trial.config_id)
            (line,) = axes.plot(epochs, mean, label=label, linewidth=1.5)
            if len(trial.runs) > 1:
                axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15,
                                  linewidth=0)
            target = trial.target.get(metric)
            if target is not None and _drawable(target) and (target > _LOG_LOW or not log):
                axes.axhline(target, color="grey", linestyle="--", linewidth=1)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(_text(metric.replace("_", " ")))
        if log:
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
    seeds = max((len(t.runs) for t in trials), default=0)
    figure.suptitle(f"{_text(test[:200])}\nmean over {seeds} seed{'s' * (seeds != 1)}, band: "
                    f"lowest to highest seed", fontsize=10)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    if handles:
        figure.axes[0].legend(handles, labels, fontsize=8, loc="best")
    return figure


def _drawable(value: float) -> bool:
    return math.isfinite(value) and abs(value) < _DRAWN


def _fits_a_log_scale(trials: list[TrialResult], metric: str) -> bool:
    """Whether every value drawn is positive enough for a log axis (a negative loss, or one of
    1e-300, is drawn on a linear axis instead)."""
    values = [v for trial in trials for mean in _curve(trial, metric)[1:] for v in mean]
    return bool(values) and all(v > _LOG_LOW for v in values)


def _curve(trial: TrialResult, metric: str) -> tuple[list[int], list[float], list[float],
                                                       list[float]]:
    """Epoch by epoch, the mean, lowest and highest value over the seeds that logged that epoch
    (seeds that stopped early at their target, or diverged, end sooner; values that are not
    finite or beyond ``_DRAWN`` are left out)."""
    by_epoch: dict[int, list[float]] = {}
    for run in trial.runs:
        for index, row in enumerate(run.history, start=1):
            value = row.get(metric)
            if value is not None and _drawable(value):
                by_epoch.setdefault(_epoch(row.get("epoch"), index), []).append(value)
    epochs = sorted(by_epoch)
    values = [by_epoch[e] for e in epochs]
    return (epochs, [sum(v) / len(v) for v in values], [min(v) for v in values],
            [max(v) for v in values])


def _epoch(value: object, index: int) -> int:
    """A history row's epoch: its own when a whole, finite number, else its place."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and value == int(value) and 0 <= value <= 2**53:
        return int(value)
    return index
