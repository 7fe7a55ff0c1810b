"""Verdicts with seeds: pairing, the run-level correction, seeds on demand, statuses that
worsen, targets missed and values that are no longer finite."""

import math
import warnings

import pytest

from pytest_hparams import RunFile, SeedRun, compare_metric, compare_runs, parse_tolerance
from pytest_hparams.gate.tables import markdown_comparison, render_comparison
from pytest_hparams.gate.values import metric_values, status_changes
from pytest_hparams.gate.verdicts import compare_trial
from tests.conftest import lr_trial

ACCURACY = parse_tolerance("accuracy:-0.005")
BASE = [0.95, 0.96, 0.955, 0.952, 0.958]


def trial(values, *, seeds=None, lr=0.1, metric="accuracy", statuses=None, **fields):
    seeds = list(seeds if seeds is not None else range(len(values)))
    runs = [SeedRun(seed=s, final={metric: v}, epochs=10,
                    status=(statuses[i] if statuses else "ok"))
            for i, (s, v) in enumerate(zip(seeds, values, strict=True))]
    return lr_trial(runs, lr=lr, **fields)


def both(before, now, seeds=(range(5), range(5)), **kwargs):
    return compare_metric(before, now, ACCURACY, seeds=(list(seeds[0]), list(seeds[1])),
                          **kwargs)


# --------------------------------------------------------------------------- pairing


def test_the_same_seeds_on_both_sides_are_paired_and_the_message_says_so():
    # Every seed lost about a point, which seed noise of 0.016 hides from Welch's test.
    wide = [0.93, 0.97, 0.95, 0.94, 0.96]
    now = [v - 0.01 + d for v, d in zip(wide, [0.001, -0.001, 0.0005, 0.0, -0.0005],
                                        strict=True)]
    paired = both(wide, now)
    welch = compare_metric(wide, now, ACCURACY)
    assert paired.paired and paired.verdict == "regressed"
    assert not welch.paired and welch.verdict == "inconclusive"
    assert paired.method.startswith("paired t-test on the differences of the 5 seeds both ran "
                                    "(0-4): p = ")
    assert "one-sided Welch t-test, 5 vs 5 seeds (now vs baseline)" in welch.method


def test_seeds_that_differ_fall_back_to_welch_and_say_why():
    result = both(BASE, [v - 0.01 for v in BASE], seeds=(range(5), range(5, 10)))
    assert not result.paired
    assert result.method.startswith("one-sided Welch t-test, 5 vs 5 seeds (now vs baseline: "
                                    "not the same seeds)")


def test_a_candidate_with_fewer_seeds_than_the_baseline_is_paired_on_those_it_ran():
    result = both([*BASE, 0.9, 0.91], [0.951, 0.958, 0.957],
                  seeds=(range(7), range(3)))
    assert result.paired and len(result.current) == len(result.baseline) == 3
    assert "the 3 seeds both ran (0-2)" in result.method
    assert "4 more seeds of the baseline, not run now, are not compared" in result.notes


def test_an_unchanged_model_gives_exactly_zero_differences_and_a_clear_unchanged():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no NaN
        result = both(BASE, list(BASE), correction="bh", family=60)
    assert result.verdict == "unchanged" and result.p_value is None
    assert result.method == "tolerance only: no seed changed: every difference is exactly 0"
    assert result.interval is None and not math.isnan(result.delta)


def test_every_seed_moving_by_the_same_amount_gets_the_sign_test():
    moved = [v - 0.01 for v in BASE]
    moved[1:] = [BASE[i] + (moved[0] - BASE[0]) for i in range(1, 5)]  # exactly equal steps
    result = both(BASE, moved)
    assert result.verdict == "regressed" and result.p_worse == 0.5 ** 5
    assert result.method.startswith("paired sign test: each of the 5 seeds both ran (0-4) "
                                    "changed by exactly -0.01, no spread for a t-test: p = ")
    assert both(BASE, moved, correction="bh", family=2).verdict == "inconclusive"
    assert both(BASE, [v - 0.004 for v in BASE]).verdict == "unchanged"


# --------------------------------------------------------------------------- correction


def noisy_drop(drop, spread=0.004):
    offsets = [0.0, spread, -spread, spread / 2, -spread / 2]
    return [v - drop + d for v, d in zip(BASE, offsets, strict=True)]


def run_of(shifts):
    baseline = RunFile([trial(BASE, lr=i / 10) for i in range(len(shifts))])
    current = [trial(noisy_drop(shift), lr=i / 10) for i, shift in enumerate(shifts)]
    return baseline, current


def test_the_correction_is_applied_over_the_run_and_stated_in_the_header():
    # One clear regression among 20 configurations, each with a p-value near 0.005.
    baseline, current = run_of([0.012] + [0.0] * 19)
    alone = compare_runs(baseline, current[:1], [ACCURACY], correction="none")
    p = alone.configs[0].metrics[0].p_worse
    assert 0.05 / 20 < p < 0.05
    corrected = {method: compare_runs(baseline, current, [ACCURACY], correction=method)
                 for method in ("none", "holm", "bh")}
    assert corrected["none"].failed and not corrected["holm"].failed
    assert not corrected["bh"].failed
    metric = corrected["holm"].configs[0].metrics[0]
    assert metric.adjusted == pytest.approx(min(1.0, 20 * p))
    assert metric.verdict == "inconclusive"
    header = render_comparison(corrected["bh"]).splitlines()[1]
    assert header.startswith("gate: accuracy:-0.005, α = 0.05, Benjamini-Hochberg over 20 "
                             "tests (keeps at or under α the expected share of false alarms")
    assert "Holm over 20 tests (keeps at or under α the chance of any false alarm in the run)" \
        in render_comparison(corrected["holm"])
    assert "no correction: each test at α on its own" in render_comparison(corrected["none"])


def test_bh_reports_more_of_a_change_that_hurts_many_configurations_than_holm():
    baseline, current = run_of([0.012] * 10 + [0.0] * 10)
    holm = compare_runs(baseline, current, [ACCURACY], correction="holm")
    bh = compare_runs(baseline, current, [ACCURACY], correction="bh")
    assert len(bh.regressions) == 10 and len(holm.regressions) < 10


def test_the_table_shows_raw_and_adjusted_p_values():
    baseline, current = run_of([0.012, 0.0])
    text = markdown_comparison(compare_runs(baseline, current, [ACCURACY], correction="holm"))
    header = next(line for line in text.splitlines() if line.startswith("| lr"))
    assert [cell.strip() for cell in header.split("|")][-4:-1] == ["p", "adjusted p (HOLM)",
                                                                   "verdict"]


def test_an_item_judged_alone_uses_the_planned_family():
    before, now = trial(BASE), trial(noisy_drop(0.012))
    alone = compare_trial(before, now, [ACCURACY])
    in_a_run = compare_trial(before, now, [ACCURACY], correction="bh", family=20)
    assert alone.failed and not in_a_run.failed
    assert "Benjamini-Hochberg over 20 tests (this item judged alone, before the rest of the " \
        "run: the run's table adjusts with every test's p): adjusted p = " in \
        in_a_run.metrics[0].explain()


# --------------------------------------------------------------------------- seeds on demand


def test_a_trial_trained_on_demand_is_judged_look_by_look():
    before = trial([*BASE, 0.951, 0.953, 0.957])
    now = trial(noisy_drop(0.002)[:3])
    now.seed_design = {"looks": [3, 5, 8], "alpha": 0.05, "requested": "3:8", "held": 8}
    result = compare_trial(before, now, [ACCURACY])
    metric = result.metrics[0]
    assert metric.sequential.startswith("on demand, looks at 3, 5, 8 seeds")
    assert metric.needs_seeds == result.needs_seeds == (metric.verdict != "unchanged"
                                                        or not metric.within)
    assert "3 more seeds of the baseline" not in " ".join(metric.notes)


def test_a_baseline_without_the_seeds_on_demand_needs_is_named_in_the_notes():
    now = trial(BASE)
    now.seed_design = {"looks": [3, 5], "alpha": 0.05, "requested": "3:8", "held": 5}
    notes = compare_trial(trial(BASE), now, [ACCURACY]).notes
    assert notes == ["seeds on demand 3:8: the baseline holds 5 of the 8 seeds this "
                     "configuration may train, so it stops at 5; save the baseline with "
                     "--hparams-compare-seeds=3:8 so that it trains all 8"]
    now.seed_design = {"requested": "3:8", "held": 2}
    [note] = compare_trial(trial(BASE[:2]), now, [ACCURACY]).notes
    assert "holds 2 of the 8 seeds" in note and "fewer than the 3 it starts with" in note


# --------------------------------------------------------------------------- statuses


def test_a_configuration_whose_runs_now_diverge_regresses_whatever_its_metrics_say():
    # The case: accuracy unchanged within noise, but every seed now diverges.
    before = trial([0.955, 0.95, 0.96])
    now = trial([0.955, 0.95, 0.96], statuses=["diverged"] * 3)
    for run in now.runs:
        run.reason = "loss became inf at epoch 1"
    result = compare_trial(before, now, [ACCURACY])
    assert result.failed and result.verdict == "regressed"
    text = result.explain()
    assert text.startswith("status regressed: diverged on 3 of 3 seeds now, where the baseline "
                           "ran ok")
    assert "  seed 0: diverged (loss became inf at epoch 1); ok in the baseline" in text
    table = render_comparison(compare_runs(RunFile([before]), [now], [ACCURACY]))
    assert "status" in table and "3 of 3 stopped" in table and "REGRESSED †" in table


def test_labels_reasons_and_names_from_tests_and_files_cannot_drive_the_terminal():
    """A label, a reason or a test name holding control characters (a parametrisation, an
    edited baseline) is shown escaped in the terminal and in Markdown, never as itself."""
    evil = "\x1b[2J\x1b[31mred\nnext"
    fields = {"test": f"t.py::test_{evil}", "hparams": {"lr": evil}, "config_id": f"lr={evil}"}
    before = trial([0.955, 0.95, 0.96], **fields)
    now = trial([0.955, 0.95, 0.96], statuses=["diverged"] * 3, **fields)
    for run in now.runs:
        run.reason = f"loss became inf {evil}"
    comparison = compare_runs(RunFile([before]), [now], [ACCURACY])
    for text in (render_comparison(comparison), markdown_comparison(comparison)):
        assert "\x1b" not in text and "red\nnext" not in text
        assert "\\x1b[31mred\\nnext" in text
        assert "REGRESSED" in text


def test_only_a_worse_status_counts_and_interrupted_runs_are_not_the_models_fault():
    flaky = trial(BASE[:3], statuses=["ok", "diverged", "ok"])
    assert status_changes(flaky, trial(BASE[:3], statuses=["ok", "diverged", "ok"])) == []
    assert status_changes(trial(BASE[:3]), trial(BASE[:3],
                                                 statuses=["interrupted", "ok", "ok"])) == []
    assert status_changes(trial(BASE[:3]), trial(BASE[:3], statuses=["ok", "oom", "ok"])) \
        == ["seed 1: oom; ok in the baseline"]
    # A seed the baseline did not run counts when every baseline seed ran ok.
    new_seed = trial([0.9], seeds=[7], statuses=["error"])
    assert status_changes(trial(BASE[:3]), new_seed) == [
        "seed 7: error; the baseline's seeds all ran ok"]
    assert status_changes(flaky, new_seed) == []


def test_a_seed_that_never_reached_its_target_does_not_look_fast():
    target = {"accuracy": 0.9}

    def with_target(epochs_to_target, epochs):
        runs = [SeedRun(seed=i, final={"accuracy": 0.95}, epochs=e, epochs_to_target=t)
                for i, (t, e) in enumerate(zip(epochs_to_target, epochs, strict=True))]
        return lr_trial(runs, target=target)

    before = with_target([5, 6, 6], [10, 10, 10])
    diverged = with_target([None, None, None], [1, 1, 1])
    assert metric_values(diverged, "epochs_to_target", beside=before) == [11.0, 11.0, 11.0]
    rule = parse_tolerance("epochs_to_target:+3")
    result = compare_trial(before, diverged, [rule])
    assert result.metrics[0].verdict == "regressed"
    assert result.metrics[0].current_mean == 11.0


def test_a_seed_with_no_finite_value_now_is_a_regression_not_a_dropped_seed():
    loss = parse_tolerance("loss:+5%")
    result = compare_metric([1.0, 1.02, 0.98, 1.01, 0.99], [1.0, None, math.nan, math.inf, None],
                            loss, seeds=(list(range(5)), list(range(5))))
    assert result.verdict == "regressed" and result.failed
    assert result.method == ("not finite: seeds 1-4 gave no finite value now (finite in the "
                             "baseline)")
    unpaired = compare_metric([1.0, 1.02, 0.98, 1.01, 0.99],
                              [1.0, None, math.nan, math.inf, None], loss)
    assert unpaired.method == "not finite: 4 of 5 seeds gave no finite value now (0 of 5 in " \
                              "the baseline)"
    # The same seeds non-finite on both sides are left out, not held against the change.
    same = compare_metric([1.0, math.nan, 0.98], [1.0, math.nan, 0.98], loss,
                          seeds=([0, 1, 2], [0, 1, 2]))
    assert same.verdict == "unchanged"
