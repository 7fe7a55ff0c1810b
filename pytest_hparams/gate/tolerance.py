"""Tolerances: how far a metric may move in its bad direction before a change is a regression.

A tolerance such as ``accuracy:-0.01`` says how far a metric may move in its bad direction
(accuracy-like metrics down, losses and times up) before the change counts as a regression;
``%`` makes it relative to the baseline's mean. They come from ``--hparams-compare-fail``,
``pytest-hparams compare --fail`` and a marker's ``tolerance=``, the marker overriding the
command line metric by metric. Importing this module is cheap: the marker parser needs it.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CompareExpressionError, SpaceError
from ..metrics import lower_is_better

DEFAULT_ALPHA = 0.05
#: The gate when neither ``--hparams-compare-fail`` nor a marker names one: a significant drop
#: of more than half an accuracy point, halfway between an unchanged model and a one-point drop
#: (benchmarks/gate_power.py measures false alarms and detection at 0.0025 to 0.0075).
DEFAULT_FAIL = ("accuracy:-0.005",)

#: Other names of recorded metrics: ``time`` is each seed's ``wall_seconds``.
ALIASES = {"time": "wall_seconds"}

_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.\-]*)\s*:\s*(?P<sign>[-+])?\s*"
    r"(?P<amount>(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*(?P<percent>%)?\s*$"
)


@dataclass(frozen=True)
class Tolerance:
    """How far ``metric`` may move in its bad direction before the change is a regression.

    ``amount`` is absolute, or a fraction of the baseline's mean when ``relative``.
    """

    metric: str
    amount: float
    relative: bool = False

    @property
    def field(self) -> str:
        """The recorded metric the tolerance reads (``time`` reads ``wall_seconds``)."""
        return ALIASES.get(self.metric, self.metric)

    @property
    def lower_is_better(self) -> bool:
        return lower_is_better(self.field)

    def margin(self, baseline_mean: float) -> float:
        """The allowed change in the bad direction, in the metric's units."""
        if self.relative:
            return self.amount * abs(baseline_mean)
        return self.amount

    def __str__(self) -> str:
        sign = "+" if self.lower_is_better else "-"
        # Enough digits to read back as the same tolerance (:g kept six: 1000001 became 1e+06).
        amount = f"{self.amount * 100:.12g}%" if self.relative else f"{self.amount:.15g}"
        return f"{self.metric}:{sign}{amount}"


def parse_tolerance(text: str) -> Tolerance:
    """Parse ``METRIC:[+-]AMOUNT[%]``: ``accuracy:-0.01``, ``accuracy:-2%``, ``time:+25%``.

    The sign, when given, must point in the metric's bad direction (down for accuracy-like
    metrics, up for losses, errors, times and epochs). Raises CompareExpressionError naming
    the expression.
    """
    match = _EXPRESSION.match(str(text))
    if not match:
        raise CompareExpressionError(
            f"cannot read the tolerance {text!r}: write METRIC:[+-]AMOUNT[%], e.g. "
            f"accuracy:-0.01 (one point of accuracy), accuracy:-2% (2 % of the baseline), "
            f"time:+25% or epochs_to_target:+3"
        )
    metric = match.group("metric")
    amount = float(match.group("amount"))
    if not math.isfinite(amount):
        raise CompareExpressionError(f"tolerance {text!r}: the amount is beyond any number; "
                                     f"write a finite one, e.g. accuracy:-0.01")
    relative = match.group("percent") is not None
    tolerance = Tolerance(metric, amount / 100 if relative else amount, relative)
    sign = match.group("sign")
    if sign is not None and (sign == "+") != tolerance.lower_is_better:
        worse = "grows" if tolerance.lower_is_better else "drops"
        raise CompareExpressionError(
            f"tolerance {text!r}: {metric} is {'lower' if tolerance.lower_is_better else 'higher'}"
            f"-is-better, so it regresses when it {worse}; write {tolerance} (the sign says "
            f"which way is worse)"
        )
    return tolerance


def tolerance_option(text: str) -> Tolerance:
    """``argparse`` type for ``--hparams-compare-fail`` and ``compare --fail``: early errors."""
    try:
        return parse_tolerance(text)
    except CompareExpressionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def alpha_option(text: str) -> float:
    """``argparse`` type for the significance level: a number between 0 and 0.5."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(
            f"the significance level must be a number between 0 and 0.5 (e.g. 0.05), got {text!r}"
        )
    return value


def marker_tolerances(test: str, spec: Any) -> dict[str, Tolerance | None]:
    """The ``tolerance=`` of a test's marker, by metric; None switches a metric's gate off.

    Accepts ``{"accuracy": "-0.02", "time": "+50%", "loss": None}`` (numbers too), one
    expression ``"accuracy:-0.02"`` or a list of them. Raises SpaceError naming the test.
    """
    if spec is None:
        return {}

    def error(problem: str) -> SpaceError:
        return SpaceError(f"{test}: hparams key 'tolerance': {problem}")

    expressions: list[tuple[str, Any]] = []
    if isinstance(spec, str):
        expressions = [("", spec)]
    elif isinstance(spec, Mapping):
        expressions = [(str(metric), value) for metric, value in spec.items()]
    elif isinstance(spec, (list, tuple)):
        expressions = [("", value) for value in spec]
    else:
        raise error(f"give a dict of metric -> tolerance such as {{'accuracy': '-0.02'}}, "
                    f"or 'accuracy:-0.02', got {spec!r}")
    parsed: dict[str, Tolerance | None] = {}
    for metric, value in expressions:
        if metric and value is None:
            parsed[metric] = None
            continue
        if metric and isinstance(value, (int, float)) and not isinstance(value, bool):
            text = f"{metric}:{value}"
        elif isinstance(value, str):
            text = f"{metric}:{value}" if metric else value
        else:
            raise error(f"the tolerance of {metric or 'an entry'!r} must be like '-0.02', "
                        f"'+25%' or None, got {value!r}")
        try:
            tolerance = parse_tolerance(text)
        except CompareExpressionError as exc:
            raise error(str(exc)) from None
        parsed[tolerance.metric] = tolerance
    return parsed


def effective_tolerances(
    rules: Sequence[Tolerance], overrides: Mapping[str, Tolerance | None]
) -> list[Tolerance]:
    """The command line's rules with a test's marker overriding them metric by metric."""
    merged: dict[str, Tolerance | None] = {rule.field: rule for rule in rules}
    for metric, rule in overrides.items():
        merged[ALIASES.get(metric, metric)] = rule
    return [rule for rule in merged.values() if rule is not None]
