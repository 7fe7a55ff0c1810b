"""Trial records rendered: a pandas DataFrame, one comparison table per test, CSV and Markdown."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from .metrics import better, lower_is_better
from .runfile import atomic_write_text, read_run
from .space import format_value
from .trial import TrialResult

if TYPE_CHECKING:
    import pandas as pd

TABLE_WIDTH = 100
#: Characters never printed as they are: C0 and C1 controls (terminal escapes, newlines,
#: carriage returns), DEL and the bidirectional overrides that reorder what a terminal shows.
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(32), *range(127, 160)]}
_CONTROLS.update({code: f"\\u{code:04x}" for code in [0x200E, 0x200F, *range(0x202A, 0x202F),
                                                      *range(0x2066, 0x206A)]})
_CONTROLS.update({ord("\n"): "\\n", ord("\t"): " ", ord("\r"): "\\r"})
# Lone surrogates (a JSON file may hold "\ud800") cannot be encoded for a terminal or a file.
_CONTROLS.update({code: f"\\u{code:04x}" for code in range(0xD800, 0xE000)})
_FRAME_COLUMNS = ("test", "nodeid", "id", "status", "outcome", "reason", "seeds", "device")


def load_trials(source: Iterable[TrialResult] | str | os.PathLike[str]) -> list[TrialResult]:
    """Trial records, or those of a results file (``--hparams-json``)."""
    if isinstance(source, (str, os.PathLike)):
        return read_run(source).trials
    return list(source)


def results_frame(source: Iterable[TrialResult] | str | os.PathLike[str]) -> pd.DataFrame:
    """One row per configuration: test, id, each hyperparameter, then for every metric its
    mean and ``_std`` over seeds, epochs/seconds to target, wall seconds, status and reason.

    ``source`` is a results JSON file (``--hparams-json``) or trial records.
    """
    import pandas as pd  # imported here: half a second that every pytest start would pay

    rows = []
    for trial in load_trials(source):
        row: dict[str, Any] = {"test": trial.test, "nodeid": trial.nodeid, "id": trial.config_id}
        for key, value in trial.hparams.items():
            row[key if key not in _FRAME_COLUMNS else f"hp_{key}"] = (
                trial.labels[key] if key in trial.labels else _cell_value(value))
        for key in trial.axes:  # a @pytest.mark.parametrize argument: its id text
            if key not in trial.hparams and key in trial.labels:
                row[key if key not in _FRAME_COLUMNS else f"hp_{key}"] = trial.labels[key]
        for name, summary in trial.metrics.items():
            row[name] = summary.mean
            row[f"{name}_std"] = summary.std
        row["epochs_to_target"] = trial.epochs_to_target.mean
        row["seconds_to_target"] = trial.seconds_to_target.mean
        row["reached_target"] = trial.reached
        row["wall_seconds"] = trial.wall_seconds.mean
        row.update(status=trial.status, outcome=trial.outcome, reason=trial.reason,
                   seeds=len(trial.runs), device=trial.device)
        rows.append(row)
    return pd.DataFrame(rows)


def _cell_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return format_value(value)


def primary_metric(trials: list[TrialResult]) -> str | None:
    """The metric that ranks rows: the first target metric, else accuracy, else loss."""
    for trial in trials:
        if trial.target:
            return next(iter(trial.target))
    names: dict[str, None] = {}
    for trial in trials:
        names.update(dict.fromkeys(trial.metric_names))
    for preferred in ("accuracy", "loss"):
        if preferred in names:
            return preferred
    return next(iter(names), None)


def varied_keys(trials: list[TrialResult]) -> list[str]:
    """The hyperparameters that vary over the test's space: the axes its trials recorded, so
    that a run of a few rows (``-k``, ``--lf``) keeps the columns of the whole grid."""
    keys: dict[str, None] = {}
    for trial in trials:
        keys.update(dict.fromkeys(trial.axes))
    return list(keys)


def printable(text: str) -> str:
    """``text`` safe to print in a table: control characters and lone surrogates shown as
    escapes (``\\x1b``, ``\\n``, ``\\udc80``), so that a label or a reason from a test or a
    file cannot move the cursor, recolour the terminal, break a row or fail to encode."""
    return str(text).translate(_CONTROLS)


def _num(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


@dataclass
class Table:
    """One test's comparison table, as text cells."""

    test: str
    headers: list[str]
    rows: list[list[str]]
    title: str  # what was run: configurations, seeds, target, device
    footer: str
    notes: list[str]
    hparam_columns: int = 0  # they follow the best-row mark, in columns 1..hparam_columns


def _best_index(trials: list[TrialResult], metric: str | None) -> int | None:
    best: int | None = None
    for index, trial in enumerate(trials):
        if metric is None or trial.status != "ok" or trial.outcome not in ("passed", "xpassed", ""):
            continue
        value = trial.metric(metric).mean
        if math.isnan(value):
            continue
        if best is None or better(metric, value, trials[best].metric(metric).mean):
            best = index
    return best


def build_table(test: str, trials: list[TrialResult], *, held_out: bool = True) -> Table:
    """The comparison table of one test function's configurations; ``held_out=False`` leaves
    out the test-set column."""
    metric = primary_metric(trials)
    keys = varied_keys(trials)
    has_target = any(t.target for t in trials)
    show_loss = metric != "loss" and any("loss" in t.metric_names for t in trials)
    held_out = _held_out_metric(trials, metric) if held_out else None
    best = _best_index(trials, metric)
    headers = ["", *keys]
    if metric:
        headers.append(f"{printable(metric)}\n(mean ± std)")
    if held_out:
        headers.append(f"test\n{printable(metric)}")
    if show_loss:
        headers.append("loss")
    if has_target:
        headers += ["epochs\nto target", "seconds\nto target"]
    devices = sorted({t.device for t in trials if t.device})
    by_device = len(devices) > 1  # trials spread over devices (xdist workers): say which ran where
    headers += [*(["device"] if by_device else []), "wall s\nper seed", "status"]
    rows, notes = [], []
    for index, trial in enumerate(trials):
        row = ["*" if index == best else "", *(printable(trial.label(k)) for k in keys)]
        if metric:
            summary = trial.metric(metric)
            cell = _num(summary.mean)
            if summary.n > 1 and not math.isnan(summary.mean):
                cell += f" ± {_num(summary.std)}"
            row.append(cell)
        if held_out:
            row.append(_num(trial.metric(held_out).mean))
        if show_loss:
            row.append(_num(trial.loss))
        if has_target:
            n = len(trial.runs)
            row.append(f"{_num(trial.epochs_to_target.mean, 1)} ({trial.reached}/{n})")
            row.append(_num(trial.seconds_to_target.mean, 2))
        status = printable(trial.outcome or trial.status)
        if trial.runs and trial.status not in ("ok", trial.outcome or trial.status):
            status += f", {printable(trial.status)}"
        if trial.reason and (trial.status != "ok" or trial.outcome != "passed"):
            notes.append(printable(trial.reason))
            status += f" [{len(notes)}]"
        device = [printable(trial.device)] if by_device else []
        rows.append([*row, *device, _num(trial.wall_seconds.mean, 2), status])
    seeds = sorted({len(t.runs) for t in trials})
    seed_text = "/".join(str(s) for s in seeds) or "0"
    plural = "s" if len(trials) != 1 else ""
    title = f"{len(trials)} configuration{plural} × {seed_text} seed{'' if seeds == [1] else 's'}"
    if has_target:
        target = next(t.target for t in trials if t.target)
        title += ", target " + ", ".join(
            f"{k} {'<=' if lower_is_better(k) else '>='} {v:g}" for k, v in target.items())
    if devices:
        title += f", on {', '.join(devices)}"
    footer = f"* best {metric} (mean over seeds)" if best is not None else ""
    return Table(printable(test), [printable(h) if h in keys else h for h in headers], rows,
                 printable(title), printable(footer), notes, len(keys))


def _held_out_metric(trials: list[TrialResult], metric: str | None) -> str | None:
    """``test_<metric>`` when a run recorded it (``fit(test=...)``): the held-out figure."""
    name = f"test_{metric}"
    return name if metric and any(name in t.metric_names for t in trials) else None


def group_by_test(trials: Iterable[TrialResult]) -> dict[str, list[TrialResult]]:
    """Trials by test function, for the tests that trained (recorded at least one run)."""
    groups: dict[str, list[TrialResult]] = {}
    for trial in trials:
        groups.setdefault(trial.test or trial.nodeid, []).append(trial)
    return {test: group for test, group in groups.items() if any(t.runs for t in group)}


def render_table(table: Table, width: int = TABLE_WIDTH) -> str:
    """The table as text; the notes under it (why a row failed) are cut to ``width``."""
    parts = [_truncate(table.test, width), textwrap.fill(table.title, width), _fit(table, width)]
    parts += [_truncate(f"[{i}] {note}", width) for i, note in enumerate(table.notes, 1)]
    if table.footer:
        parts.append(table.footer)
    return "\n".join(parts)


def _fit(table: Table, width: int) -> str:
    """Tabulate within ``width``: cut the widest hyperparameter column while that helps, and
    with too many hyperparameters for columns, wrap them into one ``configuration`` column."""
    hparams = range(1, 1 + table.hparam_columns)
    headers, rows = list(table.headers), [list(row) for row in table.rows]
    while True:
        text = _tabulate(headers, rows)
        overflow = max(len(line) for line in text.splitlines()) - width
        widths = {c: max(len(cell) for cell in [*headers[c].split("\n"), *(r[c] for r in rows)])
                  for c in hparams}
        widest = max(widths, key=widths.__getitem__, default=None)
        if overflow <= 0 or widest is None:
            return text
        if widths[widest] <= 6:
            break
        limit = max(6, widths[widest] - overflow)
        headers[widest] = _truncate(headers[widest], limit)
        for row in rows:
            row[widest] = _truncate(row[widest], limit)
    rest = [0, *range(1 + table.hparam_columns, len(table.headers))]
    fixed = max(len(line) for line in _tabulate([table.headers[c] for c in rest],
                                                [[r[c] for c in rest] for r in table.rows])
                .splitlines())
    room = max(12, width - fixed - 2)
    keys = table.headers[1:1 + table.hparam_columns]
    cells = []
    for row in table.rows:
        pairs = " ".join(f"{k}={v}" for k, v in zip(keys, row[1:], strict=False))
        cells.append("\n".join(textwrap.wrap(pairs, room)))
    return _tabulate([table.headers[0], "configuration", *table.headers[1 + table.hparam_columns:]],
                     [[row[0], cell, *row[1 + table.hparam_columns:]]
                      for row, cell in zip(table.rows, cells, strict=True)])


def _tabulate(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def render_tables(trials: Iterable[TrialResult], width: int = TABLE_WIDTH) -> str:
    """Every test's comparison table for the terminal."""
    return "\n\n".join(render_table(_terminal_table(test, group, width), width)
                       for test, group in group_by_test(trials).items())


def _terminal_table(test: str, trials: list[TrialResult], width: int) -> Table:
    """The table with its test-set column where that fits in ``width``; without it where the
    column would push the table over and make its hyperparameters wrap."""
    table = build_table(test, trials)
    if max(len(line) for line in _tabulate(table.headers, table.rows).splitlines()) <= width:
        return table
    return build_table(test, trials, held_out=False)


def markdown_tables(trials: Iterable[TrialResult], heading: str = "###") -> str:
    """Every test's comparison table as GitHub Markdown."""
    sections = []
    for test, group in group_by_test(trials).items():
        table = build_table(test, group)
        headers = [h.replace("\n", " ").replace("|", "\\|") for h in table.headers]
        rows = [[cell.replace("|", "\\|") for cell in row] for row in table.rows]
        body = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
        notes = "".join(f"\n[{i}] {note}" for i, note in enumerate(table.notes, 1))
        sections.append(f"{heading} {table.test}\n\n{table.title}\n\n{body}\n{notes}\n\n"
                        f"{table.footer}".rstrip())
    return "\n\n".join(sections) + "\n"


def write_csv(trials: Iterable[TrialResult], path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, results_frame(list(trials)).to_csv(index=False))


def write_markdown(trials: Iterable[TrialResult], path: str | os.PathLike[str]) -> None:
    atomic_write_text(Path(path), markdown_tables(trials))
