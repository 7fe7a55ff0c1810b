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
    """One metric over seeds: the mean and its spread."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> MetricSummary:
        return cls(tuple(float(v) for v in values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / self.n if self.values else math.nan

    @property
    def std(self) -> float:
        """The sample standard deviation (ddof=1); 0 for a single seed."""
        if self.n < 2:
            return 0.0 if self.values else math.nan
        m = self.mean
        return math.sqrt(math.fsum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        """Student-t 95 % interval of the mean; the point itself for one seed."""
        if self.n < 2 or not math.isfinite(self.std):
            return (self.mean, self.mean)
        from scipy import stats

        half = float(stats.t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n)
        return (self.mean - half, self.mean + half)

    def as_dict(self) -> dict[str, object]:
        lo, hi = self.ci95
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "ci95": [lo, hi], "n": self.n, "values": list(self.values)}
