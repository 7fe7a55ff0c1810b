"""Verdicts over seeds: each configuration's metrics, baseline against now, under tolerances.

With two or more seeds on both sides a configuration regresses only when the data show, at
confidence ``1 - alpha``, that the change goes beyond the tolerance: a one-sided Welch t-test of
H0 "the change is within tolerance" (``scipy.stats.ttest_ind(equal_var=False)``; a
non-inferiority test). A change smaller than the tolerance therefore fails at most ``alpha`` of
the time, and an unchanged model far less often. With one seed on either side there is no
spread to test against, and the tolerance alone decides. Configurations are matched between
two runs by test item, then by hyperparameters.
"""

from __future__ import annotations

import difflib
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CompareExpressionError
from ..metrics import MetricSummary, scale_exponent, times_power_of_two
from ..runfile import RunFile
from ..trial import TrialResult, jsonable
from .tolerance import ALIASES, DEFAULT_ALPHA, Tolerance, effective_tolerances, parse_tolerance

#: Verdicts that fail a test item.
FAILING = ("regressed", "not recorded")


# --------------------------------------------------------------------------- values


def metric_values(trial: TrialResult, name: str) -> list[float] | None:
    """The per-seed values of metric ``name`` (an alias allowed), or None if not recorded.

    A seed that did not reach the target counts, for ``epochs_to_target``, as one epoch more
    than it trained and, for ``seconds_to_target``, as its whole wall time: lower bounds of
    what it would have needed, so that missing the target reads as slower, not as absent.
    """
    name = ALIASES.get(name, name)
    runs = trial.runs
    if not runs:
        return None
    if name == "wall_seconds":
        return [run.wall_seconds for run in runs]
    if name in ("epochs_to_target", "seconds_to_target"):
        if not trial.target:
            return None
        if name == "epochs_to_target":
            return [float(r.epochs_to_target if r.reached_target else r.epochs + 1) for r in runs]
        return [float(r.seconds_to_target if r.seconds_to_target is not None else r.wall_seconds)
                for r in runs]
    if not any(name in run.final for run in runs):
        return None
    return [run.final.get(name, math.nan) for run in runs]


def recorded_metrics(trials: Iterable[TrialResult]) -> list[str]:
    """Every metric name a tolerance could use on these trials, aliases included."""
    names: dict[str, None] = {}
    for trial in trials:
        names.update(dict.fromkeys(trial.metric_names))
        if trial.runs:
            names.update(dict.fromkeys(("wall_seconds", "time")))
        if trial.target and trial.runs:
            names.update(dict.fromkeys(("epochs_to_target", "seconds_to_target")))
    return list(names)


def check_metrics(rules: Sequence[Tolerance], trials: Sequence[TrialResult], where: str) -> None:
    """Raise CompareExpressionError for a rule whose metric none of ``trials`` recorded."""
    known = recorded_metrics(trials)
    for rule in rules:
        if rule.metric in known:
            continue
        close = difflib.get_close_matches(rule.metric, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise CompareExpressionError(
            f"{rule}: no trial in {where} recorded the metric {rule.metric!r} (recorded: "
            f"{', '.join(known) or 'nothing'}){hint}"
        )


# --------------------------------------------------------------------------- one metric


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one configuration, baseline against now, and the verdict.

    ``delta`` is now minus baseline (means over seeds); ``interval`` is its two-sided
    ``1 - 2 alpha`` Welch interval, whose bound crosses the tolerance exactly when the
    one-sided test at ``alpha`` rejects; ``p_value`` belongs to the test that decided.
    """

    tolerance: Tolerance
    baseline: tuple[float, ...]
    current: tuple[float, ...]
    alpha: float
    verdict: str
    method: str
    p_value: float | None = None
    interval: tuple[float, float] | None = None

    @property
    def metric(self) -> str:
        return self.tolerance.metric

    @property
    def baseline_summary(self) -> MetricSummary:
        return MetricSummary(self.baseline)

    @property
    def current_summary(self) -> MetricSummary:
        return MetricSummary(self.current)

    @property
    def baseline_mean(self) -> float:
        return self.baseline_summary.mean

    @property
    def current_mean(self) -> float:
        return self.current_summary.mean

    @property
    def delta(self) -> float:
        return self.current_mean - self.baseline_mean

    @property
    def margin(self) -> float:
        return self.tolerance.margin(self.baseline_mean)

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING

    def summary(self) -> str:
        """One line: the verdict, now against the baseline, the change and the test."""
        rule = self.tolerance
        if self.verdict == "not recorded":
            return (f"{rule.metric} not recorded: the baseline has "
                    f"{_spread(self.baseline_summary)}, this run no finite value")
        text = (f"{rule.metric} {self.verdict}: {self.current_mean:.4g} now, "
                f"{self.baseline_mean:.4g} in the baseline (Δ {self.delta:+.3g}, allowed {rule}")
        if self.p_value is not None:
            text += f", p = {_p(self.p_value)}"
        return text + ")"

    def explain(self) -> str:
        """Obtained, baseline, change, interval, p-value and tolerance, for a failure message."""
        return "\n".join([self.summary(), *self.details()])

    def details(self) -> list[str]:
        """The lines under the summary: spreads, change and interval, tolerance, the test."""
        if self.verdict == "not recorded":
            return []
        lines = [f"  now      {_spread(self.current_summary)}",
                 f"  baseline {_spread(self.baseline_summary)}"]
        change = f"  change   {self.delta:+.4g}"
        if self.baseline_mean:
            change += f" ({self.delta / abs(self.baseline_mean):+.1%})"
        if self.interval is not None:
            level = 1 - 2 * self.alpha
            change += f", {level:.0%} interval [{self.interval[0]:+.4g}, {self.interval[1]:+.4g}]"
        lines.append(change)
        bound = self.margin if self.tolerance.lower_is_better else -self.margin
        lines.append(f"  allowed  {self.tolerance} (a change of {bound:+.4g})")
        lines.append(f"  test     {self.method}")
        return lines


def _spread(summary: MetricSummary) -> str:
    if not summary.n:
        return "no value"
    if summary.n == 1:
        return f"{summary.mean:.4g} (1 seed)"
    return f"{summary.mean:.4g} ± {summary.std:.2g} ({summary.n} seeds)"


def _finite(values: Iterable[float] | None) -> tuple[float, ...]:
    if values is None:
        return ()
    return tuple(float(v) for v in values if v is not None and math.isfinite(v))


def compare_metric(
    baseline: Iterable[float] | None,
    current: Iterable[float] | None,
    tolerance: Tolerance,
    alpha: float = DEFAULT_ALPHA,
) -> MetricComparison:
    """Compare one metric's per-seed values, baseline against now, under ``tolerance``.

    Verdicts: ``regressed`` (beyond the tolerance in the bad direction, and significant),
    ``improved`` (beyond the tolerance in the good direction, and significant),
    ``inconclusive`` (the mean moved beyond the tolerance the bad way, but not significantly:
    add seeds), ``unchanged``, ``not recorded`` (the baseline has values, this run none: fails)
    and ``no baseline`` (nothing to compare against: passes). Non-finite values are left out.
    """
    base, now = _finite(baseline), _finite(current)
    if not base:
        return MetricComparison(tolerance, base, now, alpha, "no baseline",
                                "nothing to compare: the baseline has no finite value")
    if not now:
        return MetricComparison(tolerance, base, now, alpha, "not recorded",
                                "this run has no finite value")
    before, after = MetricSummary(base), MetricSummary(now)
    margin = tolerance.margin(before.mean)
    # In the metric's "good" orientation: positive is better.
    gain = _good_sign(tolerance) * (after.mean - before.mean)
    if len(base) < 2 or len(now) < 2:
        return _by_tolerance(tolerance, base, now, alpha, gain, margin,
                             f"tolerance only: {min(len(base), len(now))} seed on one side, "
                             f"no spread to test against")
    if before.std == 0 and after.std == 0:
        return _by_tolerance(tolerance, base, now, alpha, gain, margin,
                             "tolerance only: every seed gave the same value on both sides")
    return _by_welch_test(tolerance, base, now, alpha, gain, margin)


def _good_sign(tolerance: Tolerance) -> float:
    return -1.0 if tolerance.lower_is_better else 1.0


def _by_welch_test(tolerance: Tolerance, base: tuple[float, ...], now: tuple[float, ...],
                   alpha: float, gain: float, margin: float) -> MetricComparison:
    from scipy import stats

    sign = _good_sign(tolerance)
    # The t statistic does not change when both samples and the margin are scaled alike; scaled
    # by a power of two (exact) to near 1, values of 1e200 do not overflow when squared.
    exponent = scale_exponent([*base, *now])

    def scaled(values: Iterable[float]) -> list[float]:
        return [times_power_of_two(v, -exponent) for v in values]

    good, reference = scaled(sign * v for v in now), scaled(sign * v for v in base)
    allowance = times_power_of_two(margin, -exponent)
    with warnings.catch_warnings():
        # scipy warns of precision loss when one side's seeds nearly agree; the test stays valid.
        warnings.simplefilter("ignore", RuntimeWarning)
        # H0: gain >= -margin (within tolerance); H1: gain < -margin (a regression).
        worse = stats.ttest_ind([v + allowance for v in good], reference, equal_var=False,
                                alternative="less")
        # H0: gain <= +margin; H1: gain > +margin (an improvement beyond the tolerance).
        better = stats.ttest_ind([v - allowance for v in good], reference, equal_var=False,
                                 alternative="greater")
        two_sided = stats.ttest_ind(scaled(now), scaled(base), equal_var=False)
    ci = two_sided.confidence_interval(confidence_level=1 - 2 * alpha)
    interval = (times_power_of_two(float(ci.low), exponent),
                times_power_of_two(float(ci.high), exponent))
    p_worse, p_better = float(worse.pvalue), float(better.pvalue)
    allowed = f"{-sign * margin:+.4g}"
    if p_worse < alpha:
        verdict, p = "regressed", p_worse
        method = f"p = {_p(p)} < α = {alpha:g} for H0: the change is within {allowed}"
    elif p_better < alpha:
        verdict, p = "improved", p_better
        method = f"p = {_p(p)} < α = {alpha:g} for H0: the gain is within {sign * margin:+.4g}"
    else:
        verdict = "inconclusive" if gain < -margin else "unchanged"
        p = p_worse
        method = f"p = {_p(p)} ≥ α = {alpha:g} for H0: the change is within {allowed}"
    method += f" (one-sided Welch t-test, {len(now)} vs {len(base)} seeds)"
    return MetricComparison(tolerance, base, now, alpha, verdict, method, p, interval)


def _by_tolerance(tolerance: Tolerance, base: tuple[float, ...], now: tuple[float, ...],
                  alpha: float, gain: float, margin: float, method: str) -> MetricComparison:
    # A change of exactly the tolerance is within it, whatever the float rounding.
    if gain < -margin and not math.isclose(gain, -margin, abs_tol=1e-12):
        verdict = "regressed"
    elif gain > margin and not math.isclose(gain, margin, abs_tol=1e-12):
        verdict = "improved"
    else:
        verdict = "unchanged"
    return MetricComparison(tolerance, base, now, alpha, verdict, method)


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def format_p(comparison: MetricComparison) -> str:
    """The p-value as a table shows it: ``-`` when the tolerance alone decided."""
    return "-" if comparison.p_value is None else _p(comparison.p_value)


# --------------------------------------------------------------------------- configurations


@dataclass
class ConfigComparison:
    """One configuration of one test, matched between the baseline and this run."""

    test: str
    config_id: str
    baseline: TrialResult | None
    current: TrialResult | None
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def trial(self) -> TrialResult:
        trial = self.current or self.baseline
        assert trial is not None
        return trial

    @property
    def status(self) -> str:
        """``new``, ``missing``, ``not run`` or ``compared``."""
        if self.baseline is None:
            return "new"
        if self.current is None:
            return "missing"
        if not self.current.runs:
            return "not run"
        return "compared"

    @property
    def failed(self) -> bool:
        return any(m.failed for m in self.metrics)

    @property
    def verdict(self) -> str:
        """The worst of the metrics' verdicts, or the status when nothing was compared."""
        if self.status != "compared":
            return self.status
        for verdict in ("not recorded", "regressed", "inconclusive", "improved", "unchanged"):
            if any(m.verdict == verdict for m in self.metrics):
                return verdict
        return "not gated"

    def explain(self, baseline_name: str = "the baseline") -> str:
        """The failure message of a regressed configuration: one line per failed metric, then
        the details."""
        failed = [m for m in self.metrics if m.failed]
        lines = [m.summary() for m in failed]
        lines.append(f"{self.trial.nodeid} against {baseline_name}:")
        for metric in failed:
            lines += [f"{metric.metric}:", *metric.details()]
        return "\n".join([*lines, *self.notes])


def compare_trial(
    baseline: TrialResult | None,
    current: TrialResult | None,
    rules: Sequence[Tolerance],
    alpha: float = DEFAULT_ALPHA,
) -> ConfigComparison:
    """Compare one configuration under ``rules`` and the current trial's own tolerances."""
    either = current or baseline
    assert either is not None
    result = ConfigComparison(either.test or either.nodeid, either.config_id, baseline, current)
    if result.status != "compared":
        return result
    assert baseline is not None and current is not None
    if _canonical(baseline.hparams) != _canonical(current.hparams):
        result.notes.append(f"hyperparameters changed: {_hparams_change(baseline, current)}")
    overrides = {m: (parse_tolerance(t) if t is not None else None)
                 for m, t in current.tolerance.items()}
    for rule in effective_tolerances(rules, overrides):
        before = metric_values(baseline, rule.field)
        now = metric_values(current, rule.field)
        if before is None and now is None:
            continue
        result.metrics.append(compare_metric(before, now, rule, alpha))
    return result


def _hparams_change(baseline: TrialResult, current: TrialResult) -> str:
    keys = dict.fromkeys([*baseline.hparams, *current.hparams])
    missing = object()
    changes = []
    for key in keys:
        old, new = baseline.hparams.get(key, missing), current.hparams.get(key, missing)
        if old is missing or new is missing or _canonical({key: old}) != _canonical({key: new}):
            shown = ["-" if value is missing else repr(value) for value in (old, new)]
            changes.append(f"{key} {shown[0]} → {shown[1]}")
    return ", ".join(changes)


def match_trials(
    baseline: Sequence[TrialResult], current: Sequence[TrialResult]
) -> list[tuple[TrialResult | None, TrialResult | None]]:
    """Pair trials by test item (nodeid: the test and its configuration id), then, for the
    rest, by test and hyperparameters; unpaired ones come back with None on the other side."""
    by_node = {t.nodeid: t for t in baseline}
    pairs: list[tuple[TrialResult | None, TrialResult | None]] = []
    unmatched: list[TrialResult] = []
    for trial in current:
        before = by_node.pop(trial.nodeid, None)
        if before is None:
            unmatched.append(trial)
        else:
            pairs.append((before, trial))
    by_values = {(t.test, _canonical(t.hparams)): t for t in by_node.values()}
    for trial in unmatched:
        before = by_values.pop((trial.test, _canonical(trial.hparams)), None)
        pairs.append((before, trial))
    pairs += [(t, None) for t in by_values.values()]
    return pairs


def _canonical(hparams: Mapping[str, Any]) -> str:
    """Hyperparameters as a run file stores them (a tuple reads back as a list)."""
    return json.dumps({str(k): jsonable(v) for k, v in hparams.items()}, sort_keys=True,
                      default=str)


# --------------------------------------------------------------------------- runs


@dataclass
class Comparison:
    """A whole run against its baseline: every configuration's verdict and the warnings."""

    baseline: RunFile
    configs: list[ConfigComparison]
    rules: list[Tolerance]
    alpha: float
    warnings: list[str] = field(default_factory=list)
    tests_not_run: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[ConfigComparison]:
        return [c for c in self.configs if c.failed]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def counts(self) -> dict[str, int]:
        """How many configurations got each verdict, worst first."""
        counts: dict[str, int] = {}
        for config in self.configs:
            counts[config.verdict] = counts.get(config.verdict, 0) + 1
        order = ("not recorded", "regressed", "inconclusive", "improved", "unchanged",
                 "not gated", "new", "missing", "not run")
        return {k: counts[k] for k in order if k in counts}


def compare_runs(
    baseline: RunFile,
    current: Sequence[TrialResult],
    rules: Sequence[Tolerance],
    alpha: float = DEFAULT_ALPHA,
    *,
    environment: Mapping[str, Any] | None = None,
) -> Comparison:
    """Compare this run's trials against a baseline run, configuration by configuration.

    Configurations only in the baseline are ``missing`` when their test ran now; tests that
    did not run at all (deselected, removed) are listed in ``tests_not_run`` instead.
    """
    ran = {t.test for t in current}
    configs: list[ConfigComparison] = []
    not_run: dict[str, None] = {}
    for before, now in match_trials(baseline.trials, current):
        if now is None and before is not None and before.test not in ran:
            not_run[before.test] = None
            continue
        configs.append(compare_trial(before, now, rules, alpha))
    warnings = environment_warnings(baseline, environment) if environment is not None else []
    if current and baseline.trials and all(c.status == "new" for c in configs):
        warnings.append("no configuration of this run is in the baseline: is it the right file?")
    return Comparison(baseline, configs, list(rules), alpha, warnings, list(not_run))


def environment_warnings(baseline: RunFile, current: Mapping[str, Any]) -> list[str]:
    """What differs between the baseline's machine, torch and device and this run's."""
    warnings = []
    old, new = baseline.machine, current.get("machine_info", {}) or {}
    machine_keys = [("node", "host"), ("system", "system"), ("machine", "architecture"),
                    ("python_version", "Python")]
    for key, label in machine_keys:
        if old.get(key) and new.get(key) and old[key] != new[key]:
            warnings.append(f"{label} differs: {old[key]} in the baseline, {new[key]} now")
    old_cpu = (old.get("cpu") or {}).get("brand_raw")
    new_cpu = (new.get("cpu") or {}).get("brand_raw")
    if old_cpu and new_cpu and old_cpu != new_cpu:
        warnings.append(f"CPU differs: {old_cpu} in the baseline, {new_cpu} now")
    for key, label in (("torch", "torch"), ("cuda", "CUDA")):
        before, now = baseline.environment.get(key), current.get(key)
        if key in baseline.environment and before != now:
            warnings.append(f"{label} differs: {before} in the baseline, {now} now")
    before_device, now_device = baseline.extra.get("device"), current.get("device")
    if before_device and now_device and before_device != now_device:
        warnings.append(f"device differs: {before_device} in the baseline, {now_device} now")
    if baseline.extra.get("exitstatus") == 2:
        warnings.append("the baseline run was interrupted: some configurations may be missing")
    return warnings
