"""Verdicts of configurations and runs: each configuration's metrics and status, baseline
against now, corrected over the run.

Configurations are matched between two runs by test item, then by hyperparameters. Each gated
metric gets a verdict (``metric_verdict``); a configuration whose runs now diverge, run out of
memory or fail where the baseline's ran ok regresses whatever its metrics say. Over a run, the
tests' p-values are corrected for their number (Benjamini-Hochberg by default, or Holm), so
that a suite of 60 unchanged configurations raises a false alarm no more often than one would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..runfile import RunFile
from ..trial import TrialResult, jsonable
from .metric_verdict import MetricComparison, compare_metric
from .options import DEFAULT_CORRECTION, correction_label
from .tolerance import DEFAULT_ALPHA, Tolerance, effective_tolerances, parse_tolerance
from .values import metric_values, run_seeds, status_changes

if TYPE_CHECKING:
    from .statistics import SequentialDesign


# --------------------------------------------------------------------------- configurations


@dataclass
class ConfigComparison:
    """One configuration of one test, matched between the baseline and this run.

    ``status_changes`` lists the seeds whose run now ended worse (diverged, out of memory, an
    error) than in the baseline: the configuration regresses whatever its metrics say.
    """

    test: str
    config_id: str
    baseline: TrialResult | None
    current: TrialResult | None
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status_changes: list[str] = field(default_factory=list)

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
        """Regressed, on a configuration not declared ``xfail``: a test's declared expected
        failure wins, for its item and for the run alike (its verdict says both)."""
        return self.regressed and not self.declared_xfail

    @property
    def regressed(self) -> bool:
        return bool(self.status_changes) or any(m.failed for m in self.metrics)

    @property
    def declared_xfail(self) -> bool:
        return self.current is not None and self.current.outcome in ("xfailed", "xpassed")

    @property
    def needs_seeds(self) -> bool:
        """Whether seeds on demand should train more: a metric is undecided before the design's
        last look, and nothing has failed yet."""
        return not self.failed and any(m.needs_seeds for m in self.metrics)

    @property
    def verdict(self) -> str:
        """The worst of the metrics' verdicts (a worse status is ``regressed``), or the status
        when nothing was compared."""
        if self.status != "compared":
            return self.status
        if self.regressed and self.declared_xfail:
            return "regressed, xfail"
        if self.status_changes:
            return "regressed"
        for verdict in ("not recorded", "regressed", "inconclusive", "improved", "unchanged"):
            if any(m.verdict == verdict for m in self.metrics):
                return verdict
        return "not gated"

    def explain(self, baseline_name: str = "the baseline") -> str:
        """The failure message of a regressed configuration: one line per failed metric (and
        the status), then the details."""
        failed = [m for m in self.metrics if m.failed]
        lines = [m.summary() for m in failed]
        if self.status_changes:
            lines.insert(0, f"status regressed: {status_summary(self)}")
        lines.append(f"{self.trial.nodeid} against {baseline_name}:")
        if self.status_changes:
            lines += ["status (a run that stops is a regression, whatever its metrics):",
                      *(f"  {change}" for change in self.status_changes)]
        for metric in failed:
            lines += [f"{metric.metric}:", *metric.details()]
        return "\n".join([*lines, *self.notes])


def status_summary(config: ConfigComparison) -> str:
    """``diverged on 3 of 5 seeds, ok in the baseline``."""
    assert config.current is not None
    statuses: dict[str, int] = {}
    for run in config.current.runs:
        if run.status != "ok":
            statuses[run.status] = statuses.get(run.status, 0) + 1
    total = len(config.current.runs)
    shown = ", ".join(f"{status} on {n} of {total} seed{'s' if total != 1 else ''}"
                      for status, n in statuses.items())
    return f"{shown} now, where the baseline ran ok"


def compare_trial(
    baseline: TrialResult | None,
    current: TrialResult | None,
    rules: Sequence[Tolerance],
    alpha: float = DEFAULT_ALPHA,
    *,
    correction: str = "none",
    family: int = 1,
) -> ConfigComparison:
    """Compare one configuration under ``rules`` and the current trial's own tolerances.

    Each metric is judged as one of ``family`` tests of the run under ``correction`` (the
    default: alone, at ``alpha``); seeds both sides ran are paired, and a trial trained with
    seeds on demand is judged look by look (its ``seed_design``).
    """
    either = current or baseline
    assert either is not None
    result = ConfigComparison(either.test or either.nodeid, either.config_id, baseline, current)
    if result.status != "compared":
        return result
    assert baseline is not None and current is not None
    if _canonical(baseline.hparams) != _canonical(current.hparams):
        result.notes.append(f"hyperparameters changed: {_hparams_change(baseline, current)}")
    result.status_changes = status_changes(baseline, current)
    design = seed_design(current, alpha)
    result.notes += design_notes(current)
    seeds = (run_seeds(baseline), run_seeds(current))
    for rule in gated_rules(rules, current):
        before = metric_values(baseline, rule.field, beside=current)
        now = metric_values(current, rule.field, beside=baseline)
        if before is None and now is None:
            continue
        result.metrics.append(compare_metric(before, now, rule, alpha, seeds=seeds,
                                             design=design, correction=correction,
                                             family=family))
    return result


def gated_rules(rules: Sequence[Tolerance], trial: TrialResult) -> list[Tolerance]:
    """The command line's rules, overridden metric by metric by the trial's marker."""
    overrides = {m: (parse_tolerance(t) if t is not None else None)
                 for m, t in trial.tolerance.items()}
    return effective_tolerances(rules, overrides)


def seed_design(trial: TrialResult, alpha: float) -> SequentialDesign | None:
    """The sequential design a trial was trained under (seeds on demand), or None.

    The trial records its looks and the level of its regression boundary (the run's alpha
    shared among the run's tests); the "clearly within" boundary spends ``alpha``.
    """
    recorded = trial.seed_design
    looks = recorded.get("looks") if isinstance(recorded, Mapping) else None
    level = recorded.get("alpha") if isinstance(recorded, Mapping) else None
    if not looks or not isinstance(level, (int, float)) or not 0 < level < 1:
        return None
    from .statistics import SequentialDesign

    try:
        return SequentialDesign(tuple(int(n) for n in looks), float(level), alpha)
    except (TypeError, ValueError):
        return None


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


def design_notes(trial: TrialResult) -> list[str]:
    """What seeds on demand could not do for this trial: the baseline lacked seeds it needed,
    or the test chose its own seeds."""
    recorded = trial.seed_design if isinstance(trial.seed_design, Mapping) else {}
    notes = []
    requested, held = recorded.get("requested"), recorded.get("held")
    if isinstance(requested, str) and isinstance(held, int):
        least, _, most = requested.partition(":")
        if held < int(most or 0):
            stop = (f"so it stops at {held}" if held >= int(least or 0) else
                    f"fewer than the {least} it starts with, so a fixed-sample test of the seeds "
                    f"trained decided (paired where the baseline has them, else Welch)")
            notes.append(f"seeds on demand {requested}: the baseline holds {held} of the {most} "
                         f"seeds this configuration may train, {stop}; save the baseline with "
                         f"--hparams-compare-seeds={requested} so that it trains all {most}")
    if recorded.get("own_seeds"):
        notes.append(f"seeds on demand: {recorded['own_seeds']}")
    return notes


class BaselineIndex:
    """A baseline's trials found as ``match_trials`` pairs them: by test item (nodeid), else
    by test and hyperparameters."""

    def __init__(self, trials: Sequence[TrialResult]) -> None:
        self.by_node = {t.nodeid: t for t in trials}
        self.by_values = {(t.test, _canonical(t.hparams)): t for t in trials}

    def find(self, nodeid: str, test: str, hparams: Mapping[str, Any]) -> TrialResult | None:
        found = self.by_node.get(nodeid)
        return found if found is not None else self.by_values.get((test, _canonical(hparams)))


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
    """A whole run against its baseline: every configuration's verdict and the warnings.

    ``correction`` (``bh``, ``holm`` or ``none``) adjusted the p-values of ``tests`` tests.
    """

    baseline: RunFile
    configs: list[ConfigComparison]
    rules: list[Tolerance]
    alpha: float
    warnings: list[str] = field(default_factory=list)
    tests_not_run: list[str] = field(default_factory=list)
    correction: str = DEFAULT_CORRECTION
    tests: int = 0

    @property
    def regressions(self) -> list[ConfigComparison]:
        return [c for c in self.configs if c.failed]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    @property
    def correction_label(self) -> str:
        return correction_label(self.correction, self.tests)

    def counts(self) -> dict[str, int]:
        """How many configurations got each verdict, worst first."""
        counts: dict[str, int] = {}
        for config in self.configs:
            counts[config.verdict] = counts.get(config.verdict, 0) + 1
        order = ("not recorded", "regressed", "regressed, xfail", "inconclusive", "improved",
                 "unchanged", "not gated", "new", "missing", "not run")
        return {k: counts[k] for k in order if k in counts}


def compare_runs(
    baseline: RunFile,
    current: Sequence[TrialResult],
    rules: Sequence[Tolerance],
    alpha: float = DEFAULT_ALPHA,
    *,
    environment: Mapping[str, Any] | None = None,
    correction: str = DEFAULT_CORRECTION,
    family: int = 0,
) -> Comparison:
    """Compare this run's trials against a baseline run, configuration by configuration, and
    correct the verdicts for the number of tests (at least ``family``, when the run planned
    more than it compared).

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
    tests = _correct(configs, correction, family)
    warnings = environment_warnings(baseline, environment) if environment is not None else []
    if current and baseline.trials and all(c.status == "new" for c in configs):
        warnings.append("no configuration of this run is in the baseline: is it the right file?")
    return Comparison(baseline, configs, list(rules), alpha, warnings, list(not_run),
                      correction, tests)


def _correct(configs: list[ConfigComparison], correction: str, family: int) -> int:
    """Judge every tested metric again with p-values adjusted over all of them; return how
    many tests the correction counted."""
    tested = [(config, index) for config in configs
              for index, metric in enumerate(config.metrics) if metric.statistical]
    tests = max(len(tested), family)
    if not tested:
        return tests
    from .statistics import adjust

    worse = adjust([config.metrics[i].p_worse for config, i in tested], correction, tests)
    better = adjust([config.metrics[i].p_better for config, i in tested], correction, tests)
    label = correction_label(correction, tests) if correction != "none" else ""
    for (config, index), w, b in zip(tested, worse, better, strict=True):
        config.metrics[index] = config.metrics[index].judged(float(w), float(b), label)
    return tests


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
