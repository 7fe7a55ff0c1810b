"""A baseline comparison rendered: header, one table per test, verdict line; text or Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from ..report import printable, varied_keys
from ..trial import TrialResult
from .metric_verdict import MetricComparison, format_adjusted, format_p, inconclusive_advice
from .verdicts import Comparison, ConfigComparison, status_summary


@dataclass
class ComparisonTable:
    """One test's configurations against the baseline, as text cells."""

    test: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str]


def baseline_label(comparison: Comparison) -> str:
    """The baseline's file, commit and time, in one line."""
    run = comparison.baseline
    path = str(run.path) if run.path else "the baseline"
    commit = run.commit or {}
    parts = []
    if commit.get("id") and commit["id"] != "unversioned":
        text = f"commit {str(commit['id'])[:12]}"
        if commit.get("branch") and commit["branch"] != "(unknown)":
            text += f" on {commit['branch']}"
        if commit.get("dirty"):
            text += " with uncommitted changes"
        parts.append(text)
    if run.created:
        parts.append(f"run {run.created[:19].replace('T', ' ')} UTC")
    return f"{path} ({', '.join(parts)})" if parts else path


def header_lines(comparison: Comparison) -> list[str]:
    """The baseline, the gate in force (rules, level, correction, tests, seeds on demand) and
    the warnings about where the baseline ran."""
    rules = ", ".join(str(rule) for rule in comparison.rules) or "none"
    if comparison.tests == 0:
        correction = "no test to correct"
    elif comparison.correction == "none":
        correction = "no correction: each test at α on its own"
    else:
        rate = ("the chance of any false alarm in the run" if comparison.correction == "holm"
                else "the expected share of false alarms among the regressions reported, and "
                     "the chance of any false alarm when nothing regressed")
        correction = f"{comparison.correction_label} (keeps at or under α {rate})"
    lines = [
        f"baseline: {baseline_label(comparison)}",
        f"gate: {rules}, α = {comparison.alpha:g}, {correction}",
        "tests: a one-sided paired t-test on the per-seed differences where both runs trained "
        "the same seeds, else Welch's t-test; a marker's tolerance= overrides the rule per test",
    ]
    looks = sorted({tuple(c.current.seed_design.get("looks", ())) for c in comparison.configs
                    if c.current is not None and c.current.seed_design} - {()})
    if looks:
        shown = "; ".join(", ".join(map(str, plan)) for plan in looks)
        lines.append(f"seeds on demand: looks at {shown} seeds; a configuration stops at the "
                     f"first look that decides (regressed: α spent O'Brien-Fleming-like; "
                     f"clearly within the tolerance: Pocock-like)")
    lines += [f"warning: {warning}" for warning in comparison.warnings]
    return lines


def verdict_line(comparison: Comparison) -> str:
    """``2 regressed, 1 improved, 30 unchanged, 3 new`` and the overall outcome."""
    counts = comparison.counts()
    text = ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) or "nothing compared"
    if comparison.tests_not_run:
        n = len(comparison.tests_not_run)
        text += f"; {n} test{'s' if n != 1 else ''} of the baseline did not run"
    outcome = "FAILED: regressions beyond tolerance" if comparison.failed else "passed"
    return f"{outcome} ({text})"


def _delta(metric: MetricComparison) -> str:
    if not metric.baseline or not metric.current:
        return "-"
    text = f"{metric.delta:+.3g}"
    if metric.baseline_mean:
        text += f" ({metric.delta / abs(metric.baseline_mean):+.1%})"
    return text


def _interval(metric: MetricComparison) -> str:
    if metric.interval is None:
        return "-"
    return f"[{metric.interval[0]:+.3g}, {metric.interval[1]:+.3g}]"


def _seeds(metric: MetricComparison) -> str:
    """``5 paired`` when the seeds were paired, else ``5→4`` (baseline→now)."""
    if metric.paired:
        return f"{len(metric.current)} paired"
    before, after = len(metric.baseline), len(metric.current)
    return f"{before or '-'}→{after or '-'}"


def build_comparison_table(test: str, configs: list[ConfigComparison],
                           comparison: Comparison) -> ComparisonTable:
    """The table of one test: a row per configuration and gated metric (and a status row
    where runs now stop that ran ok in the baseline)."""
    trials: list[TrialResult] = [c.trial for c in configs]
    keys = varied_keys(trials)
    metrics = {m.metric for c in configs for m in c.metrics}
    show_metric = len(metrics) > 1 or any(c.status_changes for c in configs)
    corrected = comparison.correction != "none"
    level = f"{1 - 2 * comparison.alpha:.0%}"
    headers = [*keys] if keys else ["configuration"]
    if show_metric:
        headers.append("metric")
    headers += ["baseline", "now", "seeds", "Δ", f"{level} interval\nof Δ", "p"]
    if corrected:
        headers.append(f"adjusted\np ({comparison.correction.upper()})")
    headers.append("verdict")
    rows: list[list[str]] = []
    notes: list[str] = []
    for config in configs:
        label = ([_clip(printable(config.trial.label(k))) for k in keys] if keys
                 else [_clip(printable(config.config_id))])
        if not config.metrics and not config.status_changes:
            empty = ["-"] * (len(headers) - len(label) - 1)
            rows.append([*label, *empty, config.verdict])
            continue
        if config.status_changes:
            rows.append(_status_row(label, config, len(headers)))
            label = [""] * len(label)
            notes.append(f"{config.config_id}: {status_summary(config)} "
                         f"({'; '.join(config.status_changes)})")
        for metric in config.metrics:
            row = _metric_row(label, metric, show_metric, corrected)
            if metric.failed and config.declared_xfail:  # the declared xfail wins: not a failure
                row[-1] = row[-1].lower().replace("regressed", "regressed, xfail", 1)
            rows.append(row)
            label = [""] * len(label)
            if metric.verdict == "regressed" and metric.p_worse is None and \
                    metric.method.startswith("not finite"):
                notes.append(f"{config.config_id}: {metric.metric} {metric.method}")
        notes += [f"{config.config_id}: {note}" for note in config.notes]
    if any("†" in row[-1] for row in rows):
        notes.append("† no test decided: no seed changed, one seed on a side, no spread over "
                     "seeds, a value that is no longer finite, or a run that now stops")
    inconclusive = [c for c in configs if c.verdict == "inconclusive"]
    if inconclusive:
        seeds = min(len(m.current) for c in inconclusive for m in c.metrics
                    if m.verdict == "inconclusive")
        notes.append(f"inconclusive: {inconclusive_advice(seeds)}")
    title = f"{test}: {len(configs)} configuration{'s' if len(configs) != 1 else ''}"
    if not show_metric and metrics:
        rule = next(m.tolerance for c in configs for m in c.metrics)
        title += f", {rule.metric} (tolerance {rule})"
    # labels, reasons and names come from tests and files: none may move the cursor, recolour
    # the terminal or break a row
    return ComparisonTable(test, printable(title), headers, rows,
                           [printable(note) for note in notes])


def _status_row(label: list[str], config: ConfigComparison, width: int) -> list[str]:
    assert config.current is not None
    bad = sum(run.status != "ok" for run in config.current.runs)
    now = f"{bad} of {len(config.current.runs)} stopped"
    cells = [*label, "status", "ok", now]
    verdict = "regressed, xfail †" if config.declared_xfail else "REGRESSED †"
    return [*cells, *["-"] * (width - len(cells) - 1), verdict]


def _metric_row(label: list[str], metric: MetricComparison, show_metric: bool,
                corrected: bool) -> list[str]:
    """One gated metric of one configuration, as cells; † marks a verdict without a test."""
    verdict = metric.verdict.upper() if metric.failed else metric.verdict
    if metric.p_value is None and metric.verdict not in ("no baseline", "not recorded"):
        verdict += " †"
    before, after = metric.baseline_summary, metric.current_summary
    cells = [*label, *([metric.metric] if show_metric else []), before.text(), after.text(),
             _seeds(metric), _delta(metric), _interval(metric), format_p(metric)]
    if corrected:
        cells.append(format_adjusted(metric))
    return [*cells, verdict]


_LABEL_WIDTH = 24


def _clip(text: str) -> str:
    return text if len(text) <= _LABEL_WIDTH else text[: _LABEL_WIDTH - 1] + "…"


def comparison_tables(comparison: Comparison) -> list[ComparisonTable]:
    groups: dict[str, list[ConfigComparison]] = {}
    for config in comparison.configs:
        groups.setdefault(config.test, []).append(config)
    return [build_comparison_table(test, configs, comparison) for test, configs in groups.items()]


def render_comparison(comparison: Comparison) -> str:
    """The comparison for the terminal: header, one table per test, the verdict line."""
    parts = ["\n".join(printable(line) for line in header_lines(comparison))]
    for table in comparison_tables(comparison):
        text = tabulate(table.rows, headers=table.headers, tablefmt="simple",
                        disable_numparse=True)
        parts.append("\n".join([table.title, text, *table.notes]))
    if comparison.tests_not_run:
        shown = ", ".join(printable(test) for test in comparison.tests_not_run[:5])
        more = len(comparison.tests_not_run) - 5
        parts.append(f"not run now (deselected or removed): {shown}"
                     + (f" and {more} more" if more > 0 else ""))
    parts.append(verdict_line(comparison))
    return "\n\n".join(parts)


def markdown_comparison(comparison: Comparison, heading: str = "##") -> str:
    """The comparison as GitHub Markdown, for ``--hparams-markdown`` and the step summary."""
    icon = "❌" if comparison.failed else "✅"
    lines = [f"{heading} {icon} Baseline comparison: {verdict_line(comparison)}", ""]
    lines += [f"- {printable(line)}" for line in header_lines(comparison)]
    for table in comparison_tables(comparison):
        headers = [h.replace("\n", " ") for h in table.headers]
        rows = [[cell.replace("|", "\\|") for cell in row] for row in table.rows]
        body = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
        lines += ["", f"{heading}# {table.title}", "", body]
        if table.notes:
            lines += [""] + [f"- {note}" for note in table.notes]
    if comparison.tests_not_run:
        lines += ["", "Not run now (deselected or removed): "
                  + ", ".join(f"`{printable(t)}`" for t in comparison.tests_not_run)]
    return "\n".join(lines) + "\n"


def append_markdown(path: str | Path, text: str) -> None:
    """Append ``text`` to a Markdown file (the results tables, or GitHub's step summary)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n" + text)
