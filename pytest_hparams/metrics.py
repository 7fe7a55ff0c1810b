"""What metrics mean: which way is better, thresholds on them, and summaries over seeds."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: Substrings that make a metric "lower is better"; every other metric is "higher is better".
LOWER_IS_BETTER = ("loss", "error", "time", "seconds", "epochs", "wall", "perplexity", "mse",
                   "mae", "rmse", "latency", "memory")


def lower_is_better(metric: str) -> bool:
    """True for losses, errors, times and epoch counts; False for accuracy-like metrics."""
    name = metric.lower()
    return any(part in name for part in LOWER_IS_BETTER)


def better(metric: str, a: float, b: float) -> bool:
    """Whether value ``a`` of ``metric`` is strictly better than ``b``."""
    return a < b if lower_is_better(metric) else a > b


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
_THRESHOLD = re.compile(r"^\s*(>=|<=|>|<)?\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Threshold:
    """A requirement on one metric's value, such as ``accuracy >= 0.9``."""

    metric: str
    op: str
    value: float

    def holds(self, obtained: float) -> bool:
        return not math.isnan(obtained) and _OPS[self.op](obtained, self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def parse_threshold(metric: str, spec: object) -> Threshold:
    """Parse ``">=0.9"``, ``"< 0.5"`` or a bare number (then the metric's direction decides)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        text = str(spec)
    elif isinstance(spec, str):
        text = spec
    else:
        raise ValueError(f"threshold for {metric!r} must be like '>=0.9' or a number, got {spec!r}")
    match = _THRESHOLD.match(text)
    if not match:
        raise ValueError(
            f"cannot read the threshold {text!r} for {metric!r}; write it like '>=0.9' or '<0.5'"
        )
    op = match.group(1) or ("<=" if lower_is_better(metric) else ">=")
    return Threshold(metric, op, float(match.group(2)))


@dataclass(frozen=True)
class MetricSummary:
    """One metric over seeds: the mean and its spread.

    Computed exactly, on the values as integers over one power of two, and rounded once: correct
    to the last digit for values near 1e300 or 1e-300 and of mixed signs, with no overflow on
    the way. A spread beyond the float range is inf. A NaN makes the mean NaN, an infinity makes
    it infinite, and either makes the spread NaN.
    """

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> MetricSummary:
        return cls(tuple(float(v) for v in values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        if not self.values:
            return math.nan
        if not _all_finite(self.values):
            return sum(v for v in self.values if not math.isfinite(v))  # NaN for inf - inf
        numerators, shift = _common_denominator(self.values)
        return sum(numerators) / (self.n << shift)  # int / int: rounded once, never overflows

    @property
    def std(self) -> float:
        """The sample standard deviation (ddof=1); 0 for a single seed."""
        if self.n < 2:
            return 0.0 if self.values else math.nan
        if not _all_finite(self.values):
            return math.nan
        numerators, shift = _common_denominator(self.values)
        total = sum(numerators)
        # The variance is (n sum(m * m) - sum(m)**2) / (n (n - 1) 4**shift), exactly.
        squares = self.n * sum(m * m for m in numerators) - total * total
        return _sqrt_of_ratio(squares, self.n * (self.n - 1) << 2 * shift)

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        """Student-t 95 % interval of the mean; the point itself for one seed."""
        std = self.std
        if self.n < 2 or math.isnan(std):
            return (self.mean, self.mean)
        from scipy import stats

        # Divided first: a spread near the float limit still gives a finite half-width.
        half = std / math.sqrt(self.n) * float(stats.t.ppf(0.975, self.n - 1))
        return (self.mean - half, self.mean + half)

    def text(self, *, seeds: bool = False, empty: str = "-") -> str:
        """``0.946 ± 0.0054``, with `` (5 seeds)`` when ``seeds``; ``empty`` without values."""
        if not self.n:
            return empty
        count = f" ({self.n} seed{'s' if self.n != 1 else ''})" if seeds else ""
        if self.n == 1:
            return f"{self.mean:.4g}{count}"
        return f"{self.mean:.4g} ± {self.std:.2g}{count}"

    def as_dict(self) -> dict[str, object]:
        lo, hi = self.ci95
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "ci95": [lo, hi], "n": self.n, "values": list(self.values)}


def scale_exponent(values: Iterable[float]) -> int:
    """The ``e`` for which the largest finite magnitude among ``values``, times ``2**-e``, lies
    in [0.5, 1) (0 when there is none): scaling by a power of two is exact, and the scaled
    values' sums and squares stay far from overflow and underflow."""
    return math.frexp(max((abs(v) for v in values if math.isfinite(v)), default=0.0))[1]


def times_power_of_two(value: float, exponent: int) -> float:
    """``value * 2**exponent``, exactly where the result is a normal float; +-inf beyond the
    float range, where ``math.ldexp`` raises."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(math.inf, value)


def _all_finite(values: tuple[float, ...]) -> bool:
    return all(math.isfinite(v) for v in values)


def _common_denominator(values: tuple[float, ...]) -> tuple[list[int], int]:
    """Finite ``values`` as integers ``m`` over one power of two: ``v == m / 2**shift``."""
    ratios = [v.as_integer_ratio() for v in values]  # each denominator is a power of two
    shift = max(denominator.bit_length() - 1 for _, denominator in ratios)
    return [m << (shift - d.bit_length() + 1) for m, d in ratios], shift


def _sqrt_of_ratio(numerator: int, denominator: int) -> float:
    """``sqrt(numerator / denominator)`` for non-negative integers of any size: the ratio is
    brought near 1 by an even power of two, so that it converts to a float without overflow."""
    if numerator == 0:
        return 0.0
    half = (numerator.bit_length() - denominator.bit_length()) // 2
    if half >= 0:
        ratio = numerator / (denominator << 2 * half)
    else:
        ratio = (numerator << -2 * half) / denominator
    return times_power_of_two(math.sqrt(ratio), half)
