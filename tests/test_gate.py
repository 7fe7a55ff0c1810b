"""The gate without pytest: tolerance expressions, verdicts over seeds, matching, warnings."""

import argparse
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pytest_hparams import (
    CompareExpressionError,
    RunFile,
    SeedRun,
    SpaceError,
    Tolerance,
    compare_metric,
    compare_runs,
    parse_tolerance,
)
from pytest_hparams.gate.tables import markdown_comparison
from pytest_hparams.gate.tolerance import effective_tolerances, marker_tolerances, tolerance_option
from pytest_hparams.gate.values import check_metrics, metric_values
from pytest_hparams.gate.verdicts import environment_warnings, match_trials
from tests.conftest import lr_trial

ACCURACY = parse_tolerance("accuracy:-0.01")


def trial(values, *, lr=0.1, test="t.py::test_lr", metric="accuracy", target=None,
          epochs=None, nodeid=None):
    runs = [SeedRun(seed=i, final={metric: v}, epochs=10, wall_seconds=1.0 + i,
                    epochs_to_target=(epochs[i] if epochs else None),
                    seconds_to_target=(0.5 if epochs and epochs[i] else None))
            for i, v in enumerate(values)]
    trial = lr_trial(runs, lr=lr, test=test, target=target or {})
    trial.nodeid = nodeid or trial.nodeid
    return trial


# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize("text, metric, amount, relative, shown", [
    ("accuracy:-0.01", "accuracy", 0.01, False, "accuracy:-0.01"),
    ("accuracy:-2%", "accuracy", 0.02, True, "accuracy:-2%"),
    ("accuracy:0.01", "accuracy", 0.01, False, "accuracy:-0.01"),
    ("time:+25%", "time", 0.25, True, "time:+25%"),
    ("epochs_to_target:+3", "epochs_to_target", 3.0, False, "epochs_to_target:+3"),
    (" loss : +5 % ", "loss", 0.05, True, "loss:+5%"),
    ("test_accuracy:-1e-3", "test_accuracy", 0.001, False, "test_accuracy:-0.001"),
])
def test_tolerance_expressions(text, metric, amount, relative, shown):
    rule = parse_tolerance(text)
    assert (rule.metric, rule.relative, str(rule)) == (metric, relative, shown)
    assert rule.amount == pytest.approx(amount)


@pytest.mark.parametrize("text, message", [
    ("accuracy", "cannot read the tolerance 'accuracy'"),
    ("accuracy:-", "write METRIC:[+-]AMOUNT[%]"),
    ("accuracy:-x", "cannot read"),
    (":-0.01", "cannot read"),
    ("accuracy:--1", "cannot read"),
    ("accuracy:+0.01", "accuracy is higher-is-better, so it regresses when it drops; write "
                       "accuracy:-0.01"),
    ("loss:-5%", "loss is lower-is-better, so it regresses when it grows; write loss:+5%"),
])
def test_bad_tolerance_expressions_name_the_expression(text, message):
    with pytest.raises(CompareExpressionError) as info:
        parse_tolerance(text)
    assert message in str(info.value)
    with pytest.raises(argparse.ArgumentTypeError):
        tolerance_option(text)


def test_time_reads_wall_seconds_and_relative_margins_scale_with_the_baseline():
    rule = parse_tolerance("time:+25%")
    assert rule.field == "wall_seconds" and rule.lower_is_better
    assert rule.margin(2.0) == pytest.approx(0.5)
    assert parse_tolerance("accuracy:-0.01").margin(0.5) == 0.01


def test_marker_tolerances_accept_dicts_strings_lists_and_none():
    parsed = marker_tolerances("t::x", {"accuracy": "-0.02", "time": "+50%", "loss": None,
                                        "epochs_to_target": 2})
    assert str(parsed["accuracy"]) == "accuracy:-0.02"
    assert str(parsed["time"]) == "time:+50%"
    assert parsed["loss"] is None
    assert str(parsed["epochs_to_target"]) == "epochs_to_target:+2"
    assert list(marker_tolerances("t::x", "accuracy:-1%")) == ["accuracy"]
    assert list(marker_tolerances("t::x", ["accuracy:-1%", "loss:+1"])) == ["accuracy", "loss"]


@pytest.mark.parametrize("spec, message", [
    (0.01, "give a dict of metric -> tolerance"),
    ({"accuracy": "-x"}, "cannot read the tolerance 'accuracy:-x'"),
    ({"accuracy": [1]}, "the tolerance of 'accuracy' must be like '-0.02'"),
    ({"accuracy": "+0.02"}, "accuracy is higher-is-better"),
])
def test_bad_marker_tolerances_name_the_test_and_key(spec, message):
    with pytest.raises(SpaceError) as info:
        marker_tolerances("t.py::test_x", spec)
    text = str(info.value)
    assert text.startswith("t.py::test_x: hparams key 'tolerance': ") and message in text


def test_a_marker_overrides_the_command_line_per_metric():
    rules = [parse_tolerance("accuracy:-0.01"), parse_tolerance("time:+25%")]
    merged = effective_tolerances(rules, {"accuracy": parse_tolerance("accuracy:-0.05"),
                                          "wall_seconds": None})
    assert [str(r) for r in merged] == ["accuracy:-0.05"]


def test_an_unknown_metric_is_an_error_with_a_suggestion():
    with pytest.raises(CompareExpressionError) as info:
        check_metrics([parse_tolerance("acuracy:-0.01")], [trial([0.9])], "the baseline b.json")
    text = str(info.value)
    assert "acuracy:-0.01: no trial in the baseline b.json recorded the metric 'acuracy'" in text
    assert "did you mean accuracy?" in text
    check_metrics([parse_tolerance("time:+10%")], [trial([0.9])], "b.json")
    with pytest.raises(CompareExpressionError, match="epochs_to_target"):
        check_metrics([parse_tolerance("epochs_to_target:+1")], [trial([0.9])], "b.json")


# --------------------------------------------------------------------------- verdicts


def test_a_real_drop_beyond_tolerance_regresses_with_p_and_interval():
    result = compare_metric([0.95, 0.96, 0.955, 0.952, 0.958], [0.92, 0.93, 0.925, 0.921, 0.927],
                            ACCURACY)
    assert result.verdict == "regressed" and result.failed
    assert result.p_value < 0.05
    assert result.delta == pytest.approx(-0.0304)
    low, high = result.interval
    assert low < result.delta < high < -0.01
    text = result.explain()
    assert text.startswith("accuracy regressed: 0.9246 now, 0.955 in the baseline (Δ -0.0304, "
                           "allowed accuracy:-0.01, Welch p = ")
    assert "one-sided Welch t-test, 5 vs 5 seeds (now vs baseline)" in text
    assert "  run      α = 0.05, no correction over the run's tests" in text


def test_a_drop_within_noise_is_not_a_regression():
    # The mean drops beyond the tolerance, but the seeds spread too much to tell.
    result = compare_metric([0.95, 0.90, 0.97], [0.91, 0.96, 0.90], ACCURACY)
    assert result.delta < -0.01
    assert result.verdict == "inconclusive" and not result.failed
    assert result.p_value >= 0.05


def test_an_improvement_is_shown_and_passes():
    result = compare_metric([0.90, 0.91, 0.905], [0.95, 0.96, 0.955], ACCURACY)
    assert result.verdict == "improved" and not result.failed


def test_lower_is_better_metrics_regress_when_they_grow():
    rule = parse_tolerance("loss:+10%")
    assert compare_metric([1.0, 1.02, 0.98], [1.5, 1.52, 1.48], rule).verdict == "regressed"
    assert compare_metric([1.0, 1.02, 0.98], [0.5, 0.52, 0.48], rule).verdict == "improved"
    assert compare_metric([1.0, 1.02, 0.98], [1.05, 1.07, 1.03], rule).verdict == "unchanged"


LOSSES = [1.0, 1.1, 0.9, 1.05, 0.95]


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_metrics_near_1e200_or_1e_minus_200_are_judged_like_the_same_metrics_near_one(scale):
    rule = parse_tolerance("loss:+5%")
    for factor, verdict in ((1.0, "unchanged"), (1.5, "regressed"), (0.5, "improved")):
        unit = compare_metric(LOSSES, [v * factor for v in LOSSES], rule)
        scaled = compare_metric([v * scale for v in LOSSES],
                                [v * factor * scale for v in LOSSES], rule)
        assert unit.verdict == scaled.verdict == verdict
        assert scaled.p_value == pytest.approx(unit.p_value, rel=1e-9)
        assert [end / scale for end in scaled.interval] == pytest.approx(list(unit.interval))


def test_two_runs_whose_losses_are_near_1e200_get_a_verdict_and_a_table():
    baseline = RunFile([trial([v * 1e200 for v in LOSSES], metric="loss")])
    worse = [trial([v * 1.5e200 for v in LOSSES], metric="loss")]
    comparison = compare_runs(baseline, worse, [parse_tolerance("loss:+5%")])
    assert comparison.counts() == {"regressed": 1}
    assert "baseline 1e+200 ± 7.9e+198 (5 seeds)" in comparison.configs[0].explain()
    assert "1e+200 ± 7.9e+198 | 1.5e+200 ± 1.2e+199 | 5 paired" in markdown_comparison(comparison)


def test_one_seed_falls_back_to_the_tolerance_and_says_so():
    dropped = compare_metric([0.95], [0.93], ACCURACY)
    assert dropped.verdict == "regressed" and dropped.p_value is None
    assert "tolerance only: 1 seed on one side" in dropped.method
    assert compare_metric([0.95, 0.96], [0.945], ACCURACY).verdict == "unchanged"  # exactly -0.01
    assert compare_metric([0.95, 0.96], [0.948], ACCURACY).verdict == "unchanged"


def test_identical_seeds_on_both_sides_use_the_tolerance():
    assert compare_metric([1.0, 1.0], [1.0, 1.0], ACCURACY).verdict == "unchanged"
    result = compare_metric([1.0, 1.0], [0.9, 0.9], ACCURACY)
    assert result.verdict == "regressed" and "every seed gave the same value" in result.method


def test_missing_and_non_finite_values():
    assert compare_metric([0.9, 0.91], [], ACCURACY).verdict == "not recorded"
    assert compare_metric([0.9, 0.91], [math.nan, math.inf], ACCURACY).failed
    assert compare_metric(None, [0.9], ACCURACY).verdict == "no baseline"
    kept = compare_metric([0.9, 0.91, math.nan], [0.9, 0.91], ACCURACY)
    assert kept.baseline == (0.9, 0.91) and kept.verdict == "unchanged"


samples = st.lists(st.floats(0.5, 1.0), min_size=2, max_size=8)


@given(samples, samples, st.floats(0.0, 0.05))
def test_swapping_the_runs_swaps_regression_and_improvement(before, now, amount):
    rule = Tolerance("accuracy", amount)
    forward, backward = compare_metric(before, now, rule), compare_metric(now, before, rule)
    assert (forward.verdict == "regressed") == (backward.verdict == "improved")
    assert (forward.verdict == "improved") == (backward.verdict == "regressed")


@given(samples, samples, st.floats(-0.3, 0.3), st.floats(0.0, 0.05))
def test_shifting_both_runs_changes_nothing(before, now, shift, amount):
    rule = Tolerance("accuracy", amount)
    plain = compare_metric(before, now, rule)
    moved = compare_metric([v + shift for v in before], [v + shift for v in now], rule)
    assume(plain.p_value is None or abs(plain.p_value - 0.05) > 1e-6)
    assert plain.verdict == moved.verdict


@given(samples, samples, st.floats(0.0, 0.2))
def test_a_worse_candidate_is_never_judged_better(before, now, drop):
    assume(len(set(before)) > 1 or len(set(now)) > 1)
    rank = {"improved": 0, "unchanged": 1, "inconclusive": 2, "regressed": 3}
    plain = compare_metric(before, now, ACCURACY)
    worse = compare_metric(before, [v - drop for v in now], ACCURACY)
    assert rank[worse.verdict] >= rank[plain.verdict]
    if plain.p_value is not None and worse.p_value is not None and plain.verdict != "improved" \
            and worse.verdict != "improved":
        assert worse.p_value <= plain.p_value + 1e-9


@given(samples, samples, st.floats(0.0, 0.05))
def test_a_regression_always_lies_beyond_the_tolerance(before, now, amount):
    result = compare_metric(before, now, Tolerance("accuracy", amount))
    if result.verdict == "regressed":
        assert result.delta < -amount
        if result.interval is not None:
            assert result.interval[1] < -amount + 1e-9


# --------------------------------------------------------------------------- values


def test_time_to_target_counts_a_seed_that_missed_as_needing_more():
    t = trial([0.9, 0.8], target={"accuracy": 0.85}, epochs=[4, None])
    assert metric_values(t, "epochs_to_target") == [4.0, 11.0]
    assert metric_values(t, "seconds_to_target") == [0.5, 2.0]
    assert metric_values(t, "time") == [1.0, 2.0]
    assert metric_values(trial([0.9]), "epochs_to_target") is None
    assert metric_values(trial([0.9]), "loss") is None


# --------------------------------------------------------------------------- matching


def test_trials_match_by_node_id_then_by_hyperparameters_not_by_position():
    base = [trial([0.9], lr=0.1), trial([0.8], lr=0.2), trial([0.7], lr=0.3)]
    renamed = trial([0.7], lr=0.3, nodeid="t.py::test_lr[renamed]")
    now = [trial([0.8], lr=0.2), renamed, trial([0.6], lr=0.4)]
    pairs = {(b.nodeid if b else None, c.nodeid if c else None) for b, c in
             match_trials(base, now)}
    assert pairs == {
        ("t.py::test_lr[lr=0.2]", "t.py::test_lr[lr=0.2]"),
        ("t.py::test_lr[lr=0.3]", "t.py::test_lr[renamed]"),
        (None, "t.py::test_lr[lr=0.4]"),
        ("t.py::test_lr[lr=0.1]", None),
    }


def test_a_run_comparison_reports_new_missing_and_tests_that_did_not_run():
    base = RunFile([trial([0.9, 0.91], lr=0.1), trial([0.8, 0.81], lr=0.2),
                    trial([0.9, 0.9], test="t.py::test_other")])
    now = [trial([0.9, 0.91], lr=0.1), trial([0.7, 0.71], lr=0.5)]
    comparison = compare_runs(base, now, [ACCURACY])
    verdicts = {c.config_id: c.verdict for c in comparison.configs}
    assert verdicts == {"lr=0.1": "unchanged", "lr=0.5": "new", "lr=0.2": "missing"}
    assert comparison.tests_not_run == ["t.py::test_other"]
    assert not comparison.failed
    assert comparison.counts() == {"unchanged": 1, "new": 1, "missing": 1}


def test_changed_hyperparameters_under_the_same_id_are_noted():
    before, now = trial([0.9, 0.91]), trial([0.9, 0.91])
    now.hparams["epochs"] = 5
    comparison = compare_runs(RunFile([before]), [now], [ACCURACY])
    assert comparison.configs[0].notes == ["hyperparameters changed: epochs - → 5"]


def test_saved_marker_tolerances_of_the_candidate_override_the_rules():
    before, now = trial([0.95, 0.96, 0.955]), trial([0.92, 0.931, 0.924])
    assert compare_runs(RunFile([before]), [now], [ACCURACY]).failed
    now.tolerance = {"accuracy": "accuracy:-0.05"}
    assert not compare_runs(RunFile([before]), [now], [ACCURACY]).failed
    now.tolerance = {"accuracy": None}
    assert compare_runs(RunFile([before]), [now], [ACCURACY]).configs[0].verdict == "not gated"


def test_environment_differences_are_warned_about():
    base = RunFile([], environment={"machine_info": {"node": "ci-1", "cpu": {"brand_raw": "A"}},
                                    "torch": "2.12.0", "cuda": None},
                   extra={"device": "cuda", "exitstatus": 2})
    warnings = environment_warnings(base, {"machine_info": {"node": "laptop",
                                                            "cpu": {"brand_raw": "B"}},
                                           "torch": "2.13.0", "cuda": None, "device": "cpu"})
    assert warnings == [
        "host differs: ci-1 in the baseline, laptop now",
        "CPU differs: A in the baseline, B now",
        "torch differs: 2.12.0 in the baseline, 2.13.0 now",
        "device differs: cuda in the baseline, cpu now",
        "the baseline run was interrupted: some configurations may be missing",
    ]


def test_hyperparameters_read_back_from_json_are_not_a_change():
    before, now = trial([0.9, 0.91]), trial([0.9, 0.91])
    before.hparams["setup"], now.hparams["setup"] = ["adam", 0.003], ("adam", 0.003)
    assert compare_runs(RunFile([before]), [now], [ACCURACY]).configs[0].notes == []
