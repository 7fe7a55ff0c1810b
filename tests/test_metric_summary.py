"""Summaries over seeds: mean and spread of any finite floats, exact to rounding, no overflow."""

import math
import sys
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_hparams import MetricSummary
from pytest_hparams.metrics import scale_exponent, times_power_of_two

SMALLEST = Decimal(math.ulp(0.0))  # the smallest subnormal: below it, nothing is relative
RELATIVE = Decimal(2) ** -50  # a few units in the last place


@st.composite
def seeds_at_one_scale(draw: st.DrawFn) -> list[float]:
    """Per-seed values of one metric: alike in magnitude, of either sign, at any scale."""
    scale = 10.0 ** draw(st.integers(-307, 300))
    mantissas = st.floats(-9.9, 9.9, allow_nan=False, allow_subnormal=False)
    return [m * scale for m in draw(st.lists(mantissas, min_size=1, max_size=12))]


ANY_FINITE = st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=12)


def exact(values: list[float]) -> tuple[Decimal, Decimal]:
    """The mean and sample standard deviation of ``values``, with 60 exact digits."""
    fractions = [Fraction(v) for v in values]
    mean = sum(fractions) / len(fractions)
    squares = sum((f - mean) * (f - mean) for f in fractions)
    variance = squares / (len(values) - 1) if len(values) > 1 else Fraction(0)
    with localcontext() as context:
        context.prec = 60
        return (Decimal(mean.numerator) / mean.denominator,
                (Decimal(variance.numerator) / variance.denominator).sqrt())


def close(obtained: float, expected: Decimal) -> bool:
    if math.isinf(obtained):  # only where the true value is beyond the float range
        return expected.copy_abs() > Decimal(sys.float_info.max)
    return abs(Decimal(obtained) - expected) <= RELATIVE * expected.copy_abs() + SMALLEST


@given(st.one_of(seeds_at_one_scale(), ANY_FINITE))
def test_mean_and_spread_are_exact_to_rounding_at_any_magnitude(values):
    summary = MetricSummary.of(values)
    mean, std = exact(values)
    assert close(summary.mean, mean), (summary.mean, mean)
    assert close(summary.std, std), (summary.std, std)
    assert min(values) <= summary.mean <= max(values)
    low, high = summary.ci95
    assert low <= summary.mean <= high


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1.0])
def test_seeds_near_1e200_or_1e_minus_200_summarise_like_the_same_seeds_near_one(scale):
    unit = MetricSummary.of([0.9, 0.91, -0.905, 0.895])
    scaled = MetricSummary.of([v * scale for v in unit.values])
    assert scaled.mean == pytest.approx(unit.mean * scale, rel=1e-14)
    assert scaled.std == pytest.approx(unit.std * scale, rel=1e-14)
    assert [b / scale for b in scaled.ci95] == pytest.approx(list(unit.ci95), rel=1e-12)


def test_non_finite_values_make_the_mean_non_finite_and_the_spread_nan():
    assert MetricSummary.of([1.0, math.inf]).mean == math.inf
    assert math.isnan(MetricSummary.of([math.inf, -math.inf]).mean)
    assert math.isnan(MetricSummary.of([1.0, math.nan]).mean)
    assert math.isnan(MetricSummary.of([1.0, math.inf]).std)
    assert math.isnan(MetricSummary.of([]).mean) and math.isnan(MetricSummary.of([]).std)
    assert MetricSummary.of([3.0]).std == 0.0 and MetricSummary.of([3.0]).ci95 == (3.0, 3.0)


def test_scaling_by_a_power_of_two_is_exact_and_saturates_beyond_the_float_range():
    values = [3e200, -1e200, 7e199]
    exponent = scale_exponent(values)
    scaled = [times_power_of_two(v, -exponent) for v in values]
    assert 0.5 <= max(abs(v) for v in scaled) < 1
    assert [times_power_of_two(v, exponent) for v in scaled] == values
    assert scale_exponent([0.0, math.nan]) == 0
    assert times_power_of_two(-1.0, 2000) == -math.inf
