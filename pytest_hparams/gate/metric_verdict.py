"""One metric of one configuration, baseline against now: the test, the verdict, the words.

When both sides ran the same seeds (seed s builds the same initial weights and draws the same
batches on both), the gate tests the per-seed differences with a paired t-test; otherwise it
compares the two samples with Welch's t-test. Either tests H0 "the change is within the
tolerance" (a non-inferiority test): a configuration regresses only when the data show, at
confidence ``1 - alpha`` after the run-level correction, that the change goes beyond it. With
one seed on a side, or no spread at all, the tolerance alone decides. A seed whose value is not
finite now, while it was in the baseline, is a regression: it is never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..metrics import MetricSummary
from .options import correction_label
from .tolerance import DEFAULT_ALPHA, Tolerance

if TYPE_CHECKING:
    from .statistics import SequentialDesign

#: Verdicts that fail a test item.
FAILING = ("regressed", "not recorded")


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def seed_list(seeds: Sequence[int]) -> str:
    """``0-4``, ``0, 2, 5`` or ``0-2, 7``: seeds as a reader scans them."""
    parts: list[str] = []
    ordered = sorted(seeds)
    start = previous = ordered[0] if ordered else 0
    for seed in [*ordered[1:], None]:
        if seed is not None and seed == previous + 1:
            previous = seed
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if seed is not None:
            start = previous = seed
    return ", ".join(parts) if ordered else "none"


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one configuration, baseline against now, and the verdict.

    ``baseline`` and ``current`` are the values compared (paired: the seeds both ran, in the
    candidate's order); ``delta`` is now minus baseline (means over seeds); ``interval`` its
    two-sided ``1 - 2 alpha`` interval, whose bound crosses the tolerance exactly when the
    one-sided test at ``alpha`` rejects. ``p_worse`` and ``p_better`` are the one-sided
    p-values of a regression and of an improvement beyond the tolerance (None when the
    tolerance alone decided); ``adjusted`` is the deciding one after the run-level correction.
    ``test`` says which test ran on which seeds; ``sequential`` where seeds on demand stopped.
    """

    tolerance: Tolerance
    baseline: tuple[float, ...]
    current: tuple[float, ...]
    alpha: float
    verdict: str
    method: str
    p_worse: float | None = None
    p_better: float | None = None
    interval: tuple[float, float] | None = None
    test: str = ""
    paired: bool = False
    sequential: str = ""
    within: bool = False
    needs_seeds: bool = False
    correction: str = ""
    adjusted: float | None = None
    notes: tuple[str, ...] = ()

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
    def gain(self) -> float:
        """The change in the metric's good direction: positive is better."""
        return -self.delta if self.tolerance.lower_is_better else self.delta

    @property
    def margin(self) -> float:
        return self.tolerance.margin(self.baseline_mean)

    @property
    def p_value(self) -> float | None:
        """The p-value of the test that decided (before the run-level correction)."""
        return self.p_better if self.verdict == "improved" else self.p_worse

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING

    @property
    def statistical(self) -> bool:
        """Whether a test decided (and the run-level correction applies)."""
        return self.p_worse is not None

    def judged(self, worse: float | None, better: float | None, correction: str = "",
               ) -> MetricComparison:
        """The verdict with the run-level correction's adjusted p-values ``worse`` (of a
        regression) and ``better`` (of an improvement); ``correction`` names it."""
        if not self.statistical or worse is None:
            return self
        if worse <= self.alpha:
            verdict, adjusted = "regressed", worse
        elif better is not None and better <= self.alpha:
            verdict, adjusted = "improved", better
        else:
            verdict, adjusted = self._undecided(), worse
        return replace(self, verdict=verdict, adjusted=adjusted, correction=correction,
                       method=self._method(verdict))

    def _undecided(self) -> str:
        if self.within:
            return "unchanged"
        beyond = self.gain < -self.margin and not math.isclose(self.gain, -self.margin,
                                                               abs_tol=1e-12)
        return "inconclusive" if beyond else "unchanged"

    def _method(self, verdict: str) -> str:
        p = self.p_better if verdict == "improved" else self.p_worse
        assert p is not None
        bound = self.margin if verdict == "improved" else -self.margin
        what = "gain" if verdict == "improved" else "change"
        return f"{self.test}: p = {_p(p)} for H0: the {what} is within {self._signed(bound)}"

    def _signed(self, gain_bound: float) -> str:
        """A bound on the gain, as a change of the metric."""
        return f"{(-gain_bound if self.tolerance.lower_is_better else gain_bound):+.4g}"

    def summary(self) -> str:
        """One line: the verdict, now against the baseline, the change and the test."""
        rule = self.tolerance
        if self.verdict == "not recorded":
            before = _described(self.baseline_summary)
            return f"{rule.metric} not recorded: the baseline has {before}, this run no value"
        now = f"{self.current_mean:.4g}" if self.current else "no finite value"
        text = (f"{rule.metric} {self.verdict}: {now} now, {self.baseline_mean:.4g} in the "
                f"baseline (")
        if self.current:
            text += f"Δ {self.delta:+.3g}, "
        text += f"allowed {rule}"
        if self.p_value is not None:
            text += f", {'paired' if self.paired else 'Welch'} p = {_p(self.p_value)}"
            if self.adjusted is not None and self.correction:
                text += f", adjusted {_p(self.adjusted)}"
        return text + ")"

    def explain(self) -> str:
        """Obtained, baseline, change, interval, p-value and tolerance, for a failure message."""
        return "\n".join([self.summary(), *self.details()])

    def details(self) -> list[str]:
        """The lines under the summary: spreads, change and interval, tolerance, the test, the
        correction, seeds on demand and, when inconclusive, what to do."""
        if self.verdict == "not recorded":
            return []
        lines = [f"  now      {_described(self.current_summary)}",
                 f"  baseline {_described(self.baseline_summary)}"]
        if self.current:
            change = f"  change   {self.delta:+.4g}"
            if self.baseline_mean:
                change += f" ({self.delta / abs(self.baseline_mean):+.1%})"
            if self.interval is not None:
                change += (f", {1 - 2 * self.alpha:.0%} interval [{self.interval[0]:+.4g}, "
                           f"{self.interval[1]:+.4g}]")
            lines.append(change)
        bound = self.margin if self.tolerance.lower_is_better else -self.margin
        lines.append(f"  allowed  {self.tolerance} (a change of {bound:+.4g})")
        lines.append(f"  test     {self.method}")
        if self.statistical and self.correction:
            adjusted = self.adjusted if self.adjusted is not None else self.p_worse
            assert adjusted is not None
            relation = "≤" if adjusted <= self.alpha else ">"
            lines.append(f"  run      {self.correction}: adjusted p = {_p(adjusted)} {relation} "
                         f"α = {self.alpha:g}")
        elif self.statistical:
            lines.append(f"  run      α = {self.alpha:g}, no correction over the run's tests")
        if self.sequential:
            lines.append(f"  seeds    {self.sequential}")
        lines += [f"  note     {note}" for note in self.notes]
        if self.verdict == "inconclusive":
            lines.append(f"  next     {inconclusive_advice(len(self.current))}")
        return lines


def inconclusive_advice(seeds: int) -> str:
    """What to do about an inconclusive verdict, which passes."""
    return (f"the mean moved beyond the tolerance, but {seeds} seed{'s' if seeds != 1 else ''} "
            f"cannot tell that from seed noise (this passes): train more seeds on both sides "
            f"(--hparams-compare-seeds=MIN:MAX adds them where needed, from a baseline that "
            f"holds them), or widen the tolerance if a change this size is acceptable")


def _floats(values: Iterable[float | None] | None) -> list[float]:
    if values is None:
        return []
    return [math.nan if v is None else float(v) for v in values]


def _finite(value: float) -> bool:
    return math.isfinite(value)


def compare_metric(
    baseline: Iterable[float | None] | None,
    current: Iterable[float | None] | None,
    tolerance: Tolerance,
    alpha: float = DEFAULT_ALPHA,
    *,
    seeds: tuple[Sequence[int], Sequence[int]] | None = None,
    design: SequentialDesign | None = None,
    correction: str = "none",
    family: int = 1,
) -> MetricComparison:
    """Compare one metric's per-seed values, baseline against now, under ``tolerance``.

    ``seeds`` (the baseline's and the candidate's, aligned with the values) lets the seeds
    both sides ran be paired; ``design`` (seeds on demand) judges the paired differences look
    by look; ``correction`` and ``family`` judge this test as one of ``family`` in the run.

    Verdicts: ``regressed`` (beyond the tolerance in the bad direction, significantly; or a
    seed with no finite value now that had one in the baseline), ``improved`` (beyond it in the
    good direction, significantly), ``inconclusive`` (the mean moved beyond the tolerance the
    bad way, not significantly: add seeds), ``unchanged``, ``not recorded`` (the baseline has
    values, this run none: fails) and ``no baseline`` (nothing to compare against: passes).
    """
    raw = _compare(_floats(baseline), _floats(current), tolerance, alpha, seeds, design)
    if not raw.statistical:
        return raw
    from .statistics import adjust

    assert raw.p_worse is not None and raw.p_better is not None
    worse, better = (float(adjust([p], correction, family)[0])
                     for p in (raw.p_worse, raw.p_better))
    label = correction_label(correction, family, alone=True) if correction != "none" else ""
    return raw.judged(worse, better, label)


def _compare(base: list[float], now: list[float], tolerance: Tolerance, alpha: float,
             seeds: tuple[Sequence[int], Sequence[int]] | None,
             design: SequentialDesign | None) -> MetricComparison:
    """The evidence, judged at ``alpha`` with no correction."""
    if not any(_finite(v) for v in base):
        return MetricComparison(tolerance, (), tuple(v for v in now if _finite(v)), alpha,
                                "no baseline", "nothing to compare: the baseline has no finite "
                                "value")
    if not now:
        return MetricComparison(tolerance, tuple(v for v in base if _finite(v)), (), alpha,
                                "not recorded", "this run has no value")
    base_seeds, now_seeds = seeds if seeds is not None else (None, None)
    pairable = (base_seeds is not None and now_seeds is not None
                and len(set(base_seeds)) == len(base_seeds)
                and len(set(now_seeds)) == len(now_seeds)
                and (set(now_seeds) <= set(base_seeds) or set(base_seeds) <= set(now_seeds)))
    if pairable:
        assert base_seeds is not None and now_seeds is not None
        by_seed = dict(zip(base_seeds, base, strict=True))
        pairs = [(s, by_seed[s], v) for s, v in zip(now_seeds, now, strict=True)
                 if s in by_seed]
        had = [s for s, old, new in pairs if _finite(old) and not _finite(new)]
        unrun = [s for s, v in zip(now_seeds, now, strict=True)
                 if s not in by_seed and not _finite(v)]
        if had or unrun:
            why = []
            if had:
                why.append(f"{_seeds_word(had)} {seed_list(had)} gave no finite value now "
                           f"(finite in the baseline)")
            if unrun:
                why.append(f"{_seeds_word(unrun)} {seed_list(unrun)} gave no finite value now "
                           f"(not run in the baseline)")
            return _lost(tolerance, base, now, alpha, "; ".join(why))
        usable = [(s, old, new) for s, old, new in pairs if _finite(old) and _finite(new)]
        if len(usable) >= 2:
            return _paired(tolerance, usable, alpha, design, len(now), len(base))
        unpaired = "fewer than 2 seeds to pair"
    else:
        unpaired = "not the same seeds" if seeds is not None else ""
        lost_now = sum(not _finite(v) for v in now)
        lost_before = sum(not _finite(v) for v in base)
        if lost_now * len(base) > lost_before * len(now):
            return _lost(tolerance, base, now, alpha,
                         f"{lost_now} of {len(now)} seeds gave no finite value now "
                         f"({lost_before} of {len(base)} in the baseline)")
    before = tuple(v for v in base if _finite(v))
    after = tuple(v for v in now if _finite(v))
    if not after:
        return MetricComparison(tolerance, before, after, alpha, "no baseline",
                                "nothing to compare: no seed has a finite value on both sides")
    if len(before) < 2 or len(after) < 2:
        return _by_tolerance(tolerance, before, after, alpha,
                             f"tolerance only: {min(len(before), len(after))} seed on one "
                             f"side, no spread to test against")
    if len(set(before)) == 1 and len(set(after)) == 1:
        return _by_tolerance(tolerance, before, after, alpha,
                             "tolerance only: every seed gave the same value on both sides")
    return _welch(tolerance, before, after, alpha, unpaired)


def _seeds_word(seeds: Sequence[int]) -> str:
    return "seeds" if len(seeds) != 1 else "seed"


def _lost(tolerance: Tolerance, base: list[float], now: list[float], alpha: float,
          why: str) -> MetricComparison:
    return MetricComparison(tolerance, tuple(v for v in base if _finite(v)),
                            tuple(v for v in now if _finite(v)), alpha, "regressed",
                            f"not finite: {why}")


def _orientation(tolerance: Tolerance) -> float:
    return -1.0 if tolerance.lower_is_better else 1.0


def _by_tolerance(tolerance: Tolerance, before: tuple[float, ...], after: tuple[float, ...],
                  alpha: float, method: str, **fields: object) -> MetricComparison:
    result = MetricComparison(tolerance, before, after, alpha, "unchanged", method,
                              **fields)  # type: ignore[arg-type]
    gain, margin = result.gain, result.margin
    # A change of exactly the tolerance is within it, whatever the float rounding.
    if gain < -margin and not math.isclose(gain, -margin, abs_tol=1e-12):
        verdict = "regressed"
    elif gain > margin and not math.isclose(gain, margin, abs_tol=1e-12):
        verdict = "improved"
    else:
        verdict = "unchanged"
    return replace(result, verdict=verdict)


def _scaled_gains(tolerance: Tolerance, before: Sequence[float], after: Sequence[float],
                  margin: float) -> tuple[list[float], float, int]:
    """Per-seed gains and the margin, both times ``2**-exponent``: exact, and far from
    overflow for metrics near the float limit."""
    exponent = math.frexp(max([abs(v) for v in (*before, *after, margin)]))[1]
    sign = _orientation(tolerance)
    gains = [sign * (math.ldexp(new, -exponent) - math.ldexp(old, -exponent))
             for old, new in zip(before, after, strict=True)]
    return gains, math.ldexp(margin, -exponent), exponent


def _paired(tolerance: Tolerance, usable: list[tuple[int, float, float]], alpha: float,
            design: SequentialDesign | None, ran_now: int, ran_before: int) -> MetricComparison:
    import numpy as np

    from .statistics import REGRESSED, WITHIN, paired_interval, paired_p

    seeds = [s for s, _, _ in usable]
    before = tuple(old for _, old, _ in usable)
    after = tuple(new for _, _, new in usable)
    n = len(usable)
    shell = MetricComparison(tolerance, before, after, alpha, "unchanged", "", paired=True)
    gains, margin, exponent = _scaled_gains(tolerance, before, after, shell.margin)
    test = f"paired t-test on the differences of the {n} seeds both ran ({seed_list(seeds)})"
    notes = []
    if ran_before > n and design is None:  # seeds on demand leaves the rest out by design
        extra = ran_before - n
        notes.append(f"{extra} more {_seeds_word(range(extra))} of the baseline, not run now, "
                     f"{'are' if extra != 1 else 'is'} not compared")
    if ran_now > n:
        extra = ran_now - n
        notes.append(f"{extra} {_seeds_word(range(extra))} of this run without a baseline "
                     f"value to pair with {'are' if extra != 1 else 'is'} not compared")
    if all(gain == 0 for gain in gains):
        return _by_tolerance(tolerance, before, after, alpha,
                             "tolerance only: no seed changed: every difference is exactly 0",
                             test=test, paired=True, notes=tuple(notes))
    if len(set(gains)) == 1:
        test = (f"paired sign test: each of the {n} seeds both ran ({seed_list(seeds)}) "
                f"changed by exactly {shell.delta:+.4g}, no spread for a t-test")
    low, high = paired_interval(np.asarray(gains), 1 - 2 * alpha)
    ends = sorted(_orientation(tolerance) * math.ldexp(float(end), exponent)
                  for end in (low, high))
    interval = (ends[0], ends[1])
    sequential, within, needs_seeds = "", False, False
    usable_design = design is not None and n >= design.looks[0] and n == ran_now
    if usable_design:
        assert design is not None
        looks = tuple(look for look in design.looks if look <= n)
        outcome = design.outcome(paired_p(np.asarray(gains), margin, looks))
        p_worse = float(outcome.p)
        decision = int(outcome.decision)
        within = decision == WITHIN
        needs_seeds = decision not in (WITHIN, REGRESSED) and looks[-1] < design.looks[-1]
        sequential = _sequential_story(design, looks, decision)
        test += f", looking at {', '.join(map(str, looks))} seeds (seeds on demand)"
    else:
        p_worse = float(paired_p(np.asarray(gains), margin).worse[0])
        if design is not None:
            notes.append(f"seeds on demand did not apply: {_why_fixed(design, n, ran_now)}")
    p_better = float(paired_p(np.asarray(gains), margin).better[0])
    result = replace(shell, p_worse=p_worse, p_better=p_better, interval=interval, test=test,
                     sequential=sequential, within=within, needs_seeds=needs_seeds,
                     notes=tuple(notes))
    return result.judged(p_worse, p_better)


def _why_fixed(design: SequentialDesign, pairs: int, ran_now: int) -> str:
    if pairs < ran_now:
        return (f"only {pairs} of the {ran_now} seeds trained have a finite value on both "
                f"sides; a fixed-sample test decided")
    return f"{pairs} pairs, fewer than the {design.looks[0]} of its first look"


def _sequential_story(design: SequentialDesign, looks: tuple[int, ...], decision: int) -> str:
    most = design.looks[-1]
    at = looks[-1]
    if decision > 0:
        why = "regressed"
    elif decision < 0:
        why = "clearly within the tolerance"
    elif at < most:
        why = "undecided: more seeds follow"
    else:
        why = "undecided at the most seeds the design allows"
    return (f"on demand, looks at {', '.join(map(str, design.looks))} seeds (α spent "
            f"O'Brien-Fleming-like on a regression, Pocock-like on clearly within): stopped "
            f"at {at} of {most}: {why}")


def _welch(tolerance: Tolerance, before: tuple[float, ...], after: tuple[float, ...],
           alpha: float, unpaired: str) -> MetricComparison:
    import numpy as np

    from .statistics import welch_p

    shell = MetricComparison(tolerance, before, after, alpha, "unchanged", "")
    sign = _orientation(tolerance)
    result = welch_p(np.asarray([sign * v for v in before]), np.asarray([sign * v for v in after]),
                     shell.margin, 1 - 2 * alpha)
    ends = sorted(sign * float(end) for end in (result.low, result.high))
    why = f": {unpaired}" if unpaired else ""
    test = f"one-sided Welch t-test, {len(after)} vs {len(before)} seeds (now vs baseline{why})"
    p_worse, p_better = float(result.worse), float(result.better)
    judged = replace(shell, p_worse=p_worse, p_better=p_better, interval=(ends[0], ends[1]),
                     test=test)
    return judged.judged(p_worse, p_better)


def format_p(comparison: MetricComparison) -> str:
    """The p-value as a table shows it: ``-`` when the tolerance alone decided."""
    return "-" if comparison.p_value is None else _p(comparison.p_value)


def format_adjusted(comparison: MetricComparison) -> str:
    """The adjusted p-value as a table shows it."""
    return "-" if comparison.adjusted is None or not comparison.correction else _p(
        comparison.adjusted)


def _described(summary: MetricSummary) -> str:
    return summary.text(seeds=True, empty="no value")
