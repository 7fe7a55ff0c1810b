"""The gate's tests of a change against a tolerance: paired or Welch, sequential, corrected.

Everything works on numpy arrays whose last axis runs over seeds (or, for the corrections, over
the tests of one run), so that the gate, one configuration at a time, and
``benchmarks/gate_power.py``, hundreds of thousands of simulated configurations at once, run the
very same code. Values are gains: the change in the metric's good direction (candidate minus
baseline for an accuracy, baseline minus candidate for a loss), so that a regression beyond the
tolerance is a mean gain below ``-margin``.

- ``paired_p``: the paired t-test on per-seed differences of H0 "mean gain >= -margin" (within
  the tolerance) against "mean gain < -margin" (a regression), and of the mirror hypothesis,
  at each look (after the first ``n`` seeds).
- ``welch_p``: the same hypotheses for samples that do not share seeds (Welch's t-test).
- ``SequentialDesign``: seeds on demand. Two one-sided tests of the same point, the change
  being exactly the tolerance: "regressed" spends ``alpha`` over the looks with the Lan-DeMets
  O'Brien-Fleming-type function, "clearly within the tolerance" spends ``beta`` with the
  Pocock-type function, and each look tests at the level its increment of the spending function
  allows. By Bonferroni's inequality over the looks each error rate is at most its level, for
  any number of seeds, since each look's t-test is exact under normal seed noise.
- ``adjust``: Holm's and Benjamini-Hochberg's adjusted p-values over the tests of one run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .options import CORRECTIONS

#: Sequential decisions, as ``SequentialDesign.outcome`` returns them.
REGRESSED, OPEN, WITHIN = 1, 0, -1

SPENDING_FUNCTIONS = ("obrien-fleming", "pocock")


# --------------------------------------------------------------------------- fixed tests


def _exponent(*arrays: np.ndarray) -> np.ndarray:
    """Per row (all but the last axis), the ``e`` for which the row's largest finite magnitude
    times ``2**-e`` lies in [0.5, 1): scaling by it is exact, and keeps sums and squares far
    from overflow, so that metrics near 1e200 are judged like the same metrics near 1."""
    largest = np.zeros(np.broadcast_shapes(*(a.shape[:-1] for a in arrays)))
    for array in arrays:
        finite = np.where(np.isfinite(array), np.abs(array), 0.0)
        largest = np.maximum(largest, finite.max(axis=-1, initial=0.0))
    return np.frexp(largest)[1]


def _ties(excess: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """``excess`` with values within rounding of zero set to zero: a change of exactly the
    tolerance is within it, whatever the float rounding."""
    return np.where(np.abs(excess) <= 1e-12 * np.maximum(1.0, np.abs(margin)), 0.0, excess)


def _one_sided(excess: np.ndarray, se: np.ndarray, df: np.ndarray | int,
               flat_p: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """p-values of ``excess < 0`` and of ``excess > 0`` from a t statistic ``excess / se``.
    Without spread (``se == 0``) the sign decides: ``flat_p`` for the side it shows, 1 for the
    other, and 0.5 each exactly at zero."""
    flat = ~(se > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = excess / np.where(flat, 1.0, se)
        below, above = stats.t.cdf(t, df), stats.t.sf(t, df)
    sign = np.sign(excess)
    below = np.where(flat, np.where(sign < 0, flat_p, np.where(sign > 0, 1.0, 0.5)), below)
    above = np.where(flat, np.where(sign > 0, flat_p, np.where(sign < 0, 1.0, 0.5)), above)
    return below, above


@dataclass(frozen=True)
class PairedTest:
    """Paired t-tests at each look: arrays ``(..., looks)``.

    ``worse`` is the p-value of a regression beyond the tolerance (H0: mean gain >= -margin),
    ``within`` that of a change clearly within it (H0: mean gain <= -margin), ``better`` that of
    an improvement beyond it (H0: mean gain <= +margin).
    """

    worse: np.ndarray
    within: np.ndarray
    better: np.ndarray


def paired_p(gains: np.ndarray, margin: float | np.ndarray,
             looks: tuple[int, ...] | None = None) -> PairedTest:
    """The paired t-tests after the first ``n`` seeds, for each ``n`` in ``looks`` (default:
    all of them); ``gains`` is ``(..., seeds)`` with at least two seeds at the first look.

    Gains that are all equal have no spread for a t-test. When they are all exactly zero (the
    candidate reproduced the baseline on every seed) the change is clearly within the
    tolerance: p 1 for a regression, 0 for "within". When they are all the same other value,
    the sign test decides: all n seeds on one side of the tolerance has p ``0.5 ** n`` under
    H0 (accuracies are counts of examples, so n seeds can tie by chance; the t-test's
    "infinitely significant" would be a false alarm waiting to happen).
    """
    gains = np.asarray(gains, dtype=float)
    margins = np.broadcast_to(np.asarray(margin, dtype=float), gains.shape[:-1])
    exponent = _exponent(gains, margins[..., None])
    scaled, scaled_margin = np.ldexp(gains, -exponent[..., None]), np.ldexp(margins, -exponent)
    worse, within, better = [], [], []
    for n in looks or (gains.shape[-1],):
        sample = scaled[..., :n]
        mean = sample.mean(axis=-1)
        se = sample.std(axis=-1, ddof=1) / math.sqrt(n)
        sign_test = 0.5 ** n
        below, above = _one_sided(_ties(mean + scaled_margin, scaled_margin), se, n - 1,
                                  sign_test)
        improved = _one_sided(_ties(mean - scaled_margin, scaled_margin), se, n - 1,
                              sign_test)[1]
        zero = (sample == 0).all(axis=-1)
        worse.append(np.where(zero, 1.0, below))
        within.append(np.where(zero, 0.0, above))
        better.append(np.where(zero, 1.0, improved))
    return PairedTest(*(np.stack(p, axis=-1) for p in (worse, within, better)))


def t_interval(mean: np.ndarray, se: np.ndarray, df: np.ndarray | float, level: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided ``level`` t interval around ``mean`` (the point itself without spread)."""
    with np.errstate(invalid="ignore"):
        half = np.where(se > 0, stats.t.isf((1 - level) / 2, df) * se, 0.0)
    return mean - half, mean + half


def paired_interval(gains: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided ``level`` interval of the mean gain over seeds."""
    gains = np.asarray(gains, dtype=float)
    exponent = _exponent(gains)
    scaled, n = np.ldexp(gains, -exponent[..., None]), gains.shape[-1]
    low, high = t_interval(scaled.mean(axis=-1), scaled.std(axis=-1, ddof=1) / math.sqrt(n),
                           n - 1, level)
    return np.ldexp(low, exponent), np.ldexp(high, exponent)


@dataclass(frozen=True)
class WelchTest:
    """Welch t-tests of samples that do not share seeds: p-values as in ``PairedTest`` (no
    ``within``: seeds on demand pairs) and the interval of the change."""

    worse: np.ndarray
    better: np.ndarray
    low: np.ndarray
    high: np.ndarray


def welch_p(base: np.ndarray, now: np.ndarray, margin: float | np.ndarray, level: float
            ) -> WelchTest:
    """Welch's t-tests of a regression and of an improvement beyond the tolerance, and the
    two-sided ``level`` interval of the change (now minus base), for samples ``(..., seeds)``
    in the good orientation with two or more seeds each."""
    base, now = np.asarray(base, dtype=float), np.asarray(now, dtype=float)
    margins = np.broadcast_to(np.asarray(margin, dtype=float), np.broadcast_shapes(
        base.shape[:-1], now.shape[:-1]))
    largest = _exponent(base, now, margins[..., None])
    base, now = np.ldexp(base, -largest[..., None]), np.ldexp(now, -largest[..., None])
    scaled_margin = np.ldexp(margins, -largest)
    nb, nn = base.shape[-1], now.shape[-1]
    vb, vn = base.var(axis=-1, ddof=1) / nb, now.var(axis=-1, ddof=1) / nn
    se = np.sqrt(vb + vn)
    gain = now.mean(axis=-1) - base.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (vb + vn) ** 2 / (vb ** 2 / (nb - 1) + vn ** 2 / (nn - 1))
    df = np.where(se > 0, df, 1.0)
    worse = _one_sided(_ties(gain + scaled_margin, scaled_margin), se, df)[0]
    better = _one_sided(_ties(gain - scaled_margin, scaled_margin), se, df)[1]
    low, high = t_interval(gain, se, df, level)
    return WelchTest(worse, better, np.ldexp(low, largest), np.ldexp(high, largest))


# --------------------------------------------------------------------------- sequential


def spent(spending: str, level: float, fraction: np.ndarray) -> np.ndarray:
    """The error a Lan-DeMets spending function allows by ``fraction`` of the planned seeds."""
    fraction = np.asarray(fraction, dtype=float)
    if spending == "obrien-fleming":
        return 2 * stats.norm.sf(stats.norm.isf(level / 2) / np.sqrt(fraction))
    if spending == "pocock":
        return level * np.log1p((math.e - 1) * fraction)
    raise ValueError(f"unknown spending function {spending!r}: one of "
                     f"{', '.join(SPENDING_FUNCTIONS)}")


@dataclass(frozen=True)
class SequentialOutcome:
    """Where each configuration stands after the looks so far (arrays over configurations).

    ``decision`` is REGRESSED, WITHIN (clearly within the tolerance) or OPEN (neither: more
    seeds, or inconclusive at the last look); ``look`` the index of the look that decided (the
    last one taken when open); ``p`` the repeated p-value of a regression over the looks up to
    there: at most ``alpha`` exactly when the regression boundary was crossed, and a valid
    p-value at every level (so that a run-level correction can use it).
    """

    decision: np.ndarray
    look: np.ndarray
    p: np.ndarray


@dataclass(frozen=True)
class SequentialDesign:
    """Seeds on demand: a look after ``looks[k]`` seeds, stopping at the first that decides.

    ``alpha`` bounds the chance of a "regressed" verdict, over all looks, when the change is
    exactly the tolerance (it is smaller for smaller changes); ``beta`` bounds the chance of
    stopping as "clearly within the tolerance" when the change is exactly the tolerance
    (smaller for larger regressions). One look is the fixed-sample paired t-test.
    """

    looks: tuple[int, ...]
    alpha: float
    beta: float
    regression_spending: str = "obrien-fleming"
    within_spending: str = "pocock"

    def __post_init__(self) -> None:
        if not self.looks or self.looks[0] < 2 or list(self.looks) != sorted(set(self.looks)):
            raise ValueError(f"looks must be increasing seed counts of at least 2, got "
                             f"{self.looks}")

    def _levels(self, spending: str, level: float) -> np.ndarray:
        fractions = np.asarray(self.looks, dtype=float) / self.looks[-1]
        return np.diff(spent(spending, level, fractions), prepend=0.0)

    @property
    def regression_levels(self) -> np.ndarray:
        """The level of each look's test of a regression; they add up to ``alpha``."""
        return self._levels(self.regression_spending, self.alpha)

    @property
    def within_levels(self) -> np.ndarray:
        """The level of each look's test of "clearly within"; they add up to ``beta``."""
        return self._levels(self.within_spending, self.beta)

    def outcome(self, test: PairedTest) -> SequentialOutcome:
        """Apply the design to paired tests at the looks taken so far (``paired_p`` at
        ``looks[:k]``)."""
        worse, within = np.asarray(test.worse), np.asarray(test.within)
        taken = worse.shape[-1]
        regression = self.regression_levels[:taken]
        crossed_up = worse <= regression
        crossed_down = within <= self.within_levels[:taken]
        decided = crossed_up | crossed_down
        first = np.where(decided.any(axis=-1), decided.argmax(axis=-1), taken - 1)
        pick = first[..., None]
        up = np.take_along_axis(crossed_up, pick, axis=-1)[..., 0]
        down = np.take_along_axis(crossed_down, pick, axis=-1)[..., 0]
        decision = np.where(up, REGRESSED, np.where(down, WITHIN, OPEN))
        # The repeated p-value: the smallest level at which some look so far crossed.
        ratios = worse * (self.alpha / regression)
        reached = np.arange(taken) <= pick
        p = np.minimum(1.0, np.where(reached, ratios, np.inf).min(axis=-1))
        return SequentialOutcome(decision, first, p)


# --------------------------------------------------------------------------- corrections


def adjust(p: np.ndarray, method: str, family: int | None = None) -> np.ndarray:
    """Adjusted p-values over the last axis: a test rejects when its adjusted p is at or under
    the level.

    ``holm`` bounds the chance of any false alarm in the run (the family-wise error rate);
    ``bh`` (Benjamini-Hochberg) bounds the expected share of false alarms among the
    regressions reported, which is the same chance when nothing changed; ``none`` leaves p
    alone. ``family`` counts tests beyond those given (their p-values taken as 1). NaN marks
    no test and stays NaN.
    """
    p = np.asarray(p, dtype=float)
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}: one of {', '.join(CORRECTIONS)}")
    if method == "none":
        return p.copy()
    present = ~np.isnan(p)
    m = np.maximum(present.sum(axis=-1, keepdims=True), family or 0)
    order = np.argsort(np.where(present, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(np.where(present, p, 1.0), order, axis=-1)
    rank = np.arange(1, p.shape[-1] + 1)
    if method == "holm":
        multiplier = np.maximum(m - rank + 1, 1)
        adjusted = np.maximum.accumulate(np.minimum(1.0, multiplier * ranked), axis=-1)
    else:
        scaled = np.minimum(1.0, m * ranked / rank)
        adjusted = np.flip(np.minimum.accumulate(np.flip(scaled, -1), axis=-1), -1)
    result = np.empty_like(p)
    np.put_along_axis(result, order, adjusted, axis=-1)
    return np.where(present, result, np.nan)
