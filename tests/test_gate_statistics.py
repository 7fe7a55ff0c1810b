"""The gate's statistics against references: paired and Welch t-tests (scipy), Holm and
Benjamini-Hochberg (written out the textbook way), and the sequential design's error rates."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_hparams.gate.options import SeedsOnDemand, correction_option, seeds_option
from pytest_hparams.gate.statistics import (
    OPEN,
    REGRESSED,
    WITHIN,
    SequentialDesign,
    adjust,
    paired_interval,
    paired_p,
    spent,
    welch_p,
)

# Gains in accuracy points' range, spread enough that the t statistic is well defined.
gains = st.lists(st.floats(-0.05, 0.05), min_size=2, max_size=10).filter(
    lambda values: np.std(values) > 1e-6)
margins = st.floats(0.0, 0.02)


@given(gains, margins)
def test_the_paired_test_is_scipys_one_sample_t_test_against_the_tolerance(values, margin):
    test = paired_p(np.array(values), margin)
    below = stats.ttest_1samp(values, -margin, alternative="less").pvalue
    above = stats.ttest_1samp(values, margin, alternative="greater").pvalue
    assert test.worse[0] == pytest.approx(below, rel=1e-9, abs=1e-12)
    assert test.within[0] == pytest.approx(1 - below, rel=1e-9, abs=1e-12)
    assert test.better[0] == pytest.approx(above, rel=1e-9, abs=1e-12)


@given(gains)
def test_the_paired_interval_is_scipys(values):
    low, high = paired_interval(np.array(values), 0.9)
    ci = stats.ttest_1samp(values, 0).confidence_interval(0.9)
    assert (float(low), float(high)) == pytest.approx((ci.low, ci.high), rel=1e-9, abs=1e-12)


samples = st.lists(st.floats(0.5, 1.0), min_size=2, max_size=8).filter(
    lambda values: np.std(values) > 1e-6)


@given(samples, samples, margins)
def test_the_welch_test_is_scipys_with_the_tolerance_moved_onto_a_sample(base, now, margin):
    test = welch_p(np.array(base), np.array(now), margin, 0.9)
    worse = stats.ttest_ind(np.array(now) + margin, base, equal_var=False, alternative="less")
    better = stats.ttest_ind(np.array(now) - margin, base, equal_var=False,
                             alternative="greater")
    assert float(test.worse) == pytest.approx(worse.pvalue, rel=1e-7, abs=1e-12)
    assert float(test.better) == pytest.approx(better.pvalue, rel=1e-7, abs=1e-12)
    ci = stats.ttest_ind(now, base, equal_var=False).confidence_interval(0.9)
    assert (float(test.low), float(test.high)) == pytest.approx((ci.low, ci.high), rel=1e-7,
                                                                abs=1e-12)


def test_exactly_zero_differences_are_clearly_within_with_no_division_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division by zero or NaN would warn
        test = paired_p(np.zeros((2, 5)), 0.005, (3, 5))
    assert test.worse.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert test.within.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    outcome = SequentialDesign((3, 5), 0.05, 0.05).outcome(test)
    assert outcome.decision.tolist() == [WITHIN, WITHIN] and outcome.look.tolist() == [0, 0]
    assert not np.isnan(outcome.p).any()


def test_identical_nonzero_differences_get_the_sign_tests_p_value():
    # Three seeds that each lost exactly two validation examples are not "infinitely
    # significant": all three on one side of the tolerance has chance 1/8 under H0.
    beyond = paired_p(np.full(3, -0.01), 0.005)
    within = paired_p(np.full(3, -0.001), 0.005)
    at = paired_p(np.full(3, -0.005), 0.005)
    assert (beyond.worse[0], within.worse[0], at.worse[0]) == (0.125, 1.0, 0.5)
    assert (beyond.within[0], within.within[0], at.within[0]) == (1.0, 0.125, 0.5)
    assert paired_p(np.full(6, 0.02), 0.005).better[0] == 0.5 ** 6


def test_metrics_near_the_float_limit_are_tested_like_the_same_metrics_near_one():
    values = np.array([0.3, -0.1, 0.2, 0.05])
    plain = paired_p(values, 0.1)
    huge = paired_p(values * 1e300, 0.1e300)
    assert huge.worse[0] == pytest.approx(plain.worse[0], rel=1e-12)


# --------------------------------------------------------------------------- corrections


def holm_by_hand(p):
    m, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def bh_by_hand(p):
    m, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, m * p[i] / (rank + 1))
        adjusted[i] = min(1.0, running)
    return adjusted


p_values = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30)


@given(p_values)
def test_holm_and_bh_adjust_as_their_definitions_say(p):
    assert adjust(np.array(p), "holm").tolist() == pytest.approx(holm_by_hand(p))
    assert adjust(np.array(p), "bh").tolist() == pytest.approx(bh_by_hand(p))
    assert adjust(np.array(p), "none").tolist() == p


@given(p_values, st.integers(0, 10))
def test_untested_members_of_the_family_count_as_p_one(p, extra):
    padded = adjust(np.array([*p, *[1.0] * extra]), "holm")[: len(p)]
    assert adjust(np.array(p), "holm", len(p) + extra).tolist() == pytest.approx(padded.tolist())
    padded = adjust(np.array([*p, *[1.0] * extra]), "bh")[: len(p)]
    assert adjust(np.array(p), "bh", len(p) + extra).tolist() == pytest.approx(padded.tolist())


def test_missing_tests_stay_missing_and_do_not_count():
    adjusted = adjust(np.array([0.01, np.nan, 0.02]), "bh")
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2]].tolist() == pytest.approx([0.02, 0.02])


@given(p_values)
def test_bh_rejects_at_least_what_holm_rejects(p):
    holm, bh = adjust(np.array(p), "holm"), adjust(np.array(p), "bh")
    assert (bh <= holm + 1e-12).all()


# --------------------------------------------------------------------------- sequential


def test_spending_functions_spend_the_level_by_the_last_look():
    for spending in ("obrien-fleming", "pocock"):
        fractions = np.array([0.25, 0.5, 1.0])
        used = spent(spending, 0.05, fractions)
        assert used[-1] == pytest.approx(0.05) and (np.diff(used) > 0).all()
    design = SequentialDesign((3, 5, 8), 0.01, 0.05)
    assert design.regression_levels.sum() == pytest.approx(0.01)
    assert design.within_levels.sum() == pytest.approx(0.05)
    # O'Brien-Fleming-like: little early; Pocock-like: much early.
    assert design.regression_levels[0] < design.regression_levels[-1] / 10
    assert design.within_levels[0] > design.within_levels[-1]


def test_one_look_is_the_fixed_paired_t_test():
    values = np.array([[-0.02, -0.01, -0.015, -0.03, -0.005]])
    test = paired_p(values, 0.005)
    outcome = SequentialDesign((5,), 0.05, 0.05).outcome(test)
    assert outcome.p[0] == pytest.approx(test.worse[0, 0])
    assert outcome.decision[0] == (REGRESSED if test.worse[0, 0] <= 0.05 else OPEN)


@pytest.mark.parametrize("looks", [(3, 5, 8), (3, 4, 5, 6, 7, 8), (4, 6, 9, 14)])
def test_each_error_rate_stays_under_its_level_when_the_change_is_the_tolerance(looks):
    # 40,000 configurations whose change is exactly the tolerance: the worst case for both
    # errors; three standard errors of slack for the simulation.
    rng = np.random.default_rng(0)
    values = rng.normal(-0.005, 0.009, (40_000, looks[-1]))
    design = SequentialDesign(looks, 0.05, 0.05)
    outcome = design.outcome(paired_p(values, 0.005, looks))
    slack = 3 * math.sqrt(0.05 * 0.95 / 40_000)
    assert (outcome.decision == REGRESSED).mean() <= 0.05 + slack
    assert (outcome.decision == WITHIN).mean() <= 0.05 + slack
    # The repeated p-value is at most alpha exactly where the boundary was crossed, and is
    # a valid p-value at smaller levels too.
    assert ((outcome.p <= 0.05) == (outcome.decision == REGRESSED)).all()
    assert (outcome.p <= 0.01).mean() <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 40_000)


def test_a_clear_regression_stops_early_and_a_clear_non_change_at_the_first_look():
    rng = np.random.default_rng(1)
    design = SequentialDesign((3, 5, 8), 0.05, 0.05)
    regressed = design.outcome(paired_p(rng.normal(-0.05, 0.0005, (200, 8)), 0.005, (3, 5, 8)))
    assert (regressed.decision == REGRESSED).all() and (regressed.look == 0).all()
    unchanged = design.outcome(paired_p(rng.normal(0.0, 0.0005, (200, 8)), 0.005, (3, 5, 8)))
    assert (unchanged.decision == WITHIN).all() and (unchanged.look == 0).all()


def test_looks_taken_so_far_leave_an_undecided_configuration_open():
    design = SequentialDesign((3, 5, 8), 0.05, 0.05)
    undecided = np.array([[-0.01, 0.004, -0.008]])
    outcome = design.outcome(paired_p(undecided, 0.005, (3,)))
    assert outcome.decision[0] == OPEN


@pytest.mark.parametrize("looks", [(), (1, 3), (3, 3), (5, 3)])
def test_a_design_needs_increasing_looks_of_two_seeds_or_more(looks):
    with pytest.raises(ValueError, match="looks must be increasing"):
        SequentialDesign(looks, 0.05, 0.05)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("text, least, most, looks", [
    ("3:8", 3, 8, (3, 5, 8)),
    (" 3 : 12 ", 3, 12, (3, 5, 8, 12)),
    ("2:2", 2, 2, (2,)),
    ("4:20", 4, 20, (4, 6, 9, 14, 20)),
])
def test_seeds_on_demand_reads_min_max_and_looks_at_growing_counts(text, least, most, looks):
    seeds = seeds_option(text)
    assert (seeds.least, seeds.most, seeds.looks()) == (least, most, looks)
    assert str(seeds) == f"{least}:{most}"


def test_the_seed_plan_continues_the_markers_seeds():
    seeds = SeedsOnDemand(3, 8)
    assert seeds.plan((0, 1, 2, 3, 4)) == (0, 1, 2, 3, 4, 5, 6, 7)
    assert seeds.plan((10, 3)) == (10, 3, 11, 12, 13, 14, 15, 16)
    assert seeds.plan(tuple(range(20))) == tuple(range(8))
    assert seeds.looks(5) == (3, 5) and seeds.looks(6) == (3, 5, 6) and seeds.looks(2) == ()


@pytest.mark.parametrize("text", ["3", "1:5", "5:3", "a:b", "3:8:9", "", "3:100000"])
def test_bad_seeds_on_demand_are_argument_errors_with_an_example(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="write MIN:MAX with 2 <= MIN <= MAX"):
        seeds_option(text)


def test_corrections_are_read_case_blind_and_bad_ones_named():
    import argparse

    assert [correction_option(t) for t in ("BH", "holm", " none ")] == ["bh", "holm", "none"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"one of bh, holm, none.*'bonferroni'"):
        correction_option("bonferroni")


@settings(max_examples=50)
@given(st.integers(2, 30), st.integers(0, 40))
def test_looks_grow_and_end_at_the_most_seeds(least, more):
    seeds = SeedsOnDemand(least, least + more)
    looks = seeds.looks()
    assert looks[0] == least and looks[-1] == least + more
    assert list(looks) == sorted(set(looks))
