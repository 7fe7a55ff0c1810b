"""The baseline comparison lists rows in collection order, however xdist's workers finish."""

import re

GRID = """
import time
import pytest

@pytest.mark.hparams(lr=[0.4, 0.3, 0.2, 0.1], seeds=2)
def test_lr(hparams, hparams_trial):
    time.sleep(hparams.lr * 3)  # the first rows finish last
    for run in hparams_trial.runs():
        run.log_epoch(accuracy=0.9, loss=0.1)
"""


def test_comparison_rows_follow_collection_order_under_xdist(pytester):
    pytester.makepyfile(test_grid=GRID)
    pytester.runpytest_subprocess("--hparams-save=main", "-p", "no:cacheprovider"
                                  ).assert_outcomes(passed=4)
    result = pytester.runpytest_subprocess("-n", "2", "--hparams-compare=main",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    text = result.stdout.str()
    section = text[text.index("hyperparameter baseline comparison"):]
    rows = re.findall(r"^(0\.\d)\s", section, flags=re.MULTILINE)
    assert rows == ["0.4", "0.3", "0.2", "0.1"]


XFAIL_GRID = """
import pytest

ACCURACY = {accuracy}

@pytest.mark.hparams(lr=[0.1, 0.2], seeds=3,
                     xfail=lambda hp: hp.lr == 0.2 and "known to miss its threshold")
def test_lr(hparams, hparams_trial):
    for run in hparams_trial.runs():
        run.log_epoch(accuracy=ACCURACY + 0.001 * run.seed, loss=0.1)
    assert hparams.lr == 0.1, "below the bar"
"""


def test_a_regression_on_an_xfail_configuration_stays_xfailed_and_is_not_counted(pytester):
    pytester.makepyfile(test_grid=XFAIL_GRID.format(accuracy=0.9))
    pytester.runpytest("--hparams-save=main").assert_outcomes(passed=1, xfailed=1)
    pytester.makepyfile(test_grid=XFAIL_GRID.format(accuracy=0.9).replace(
        "ACCURACY + 0.001",
        "ACCURACY - (0.2 + 0.01 * run.seed if hparams.lr == 0.2 else 0) + 0.001"))
    result = pytester.runpytest("--hparams-compare=main")
    result.assert_outcomes(passed=1, xfailed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["0.2 * regressed, xfail", "passed (1 regressed, xfail, "
                                 "1 unchanged)"])


PLAIN = """
import pytest

@pytest.mark.hparams(lr=[0.1], seeds=2)
def test_lr(hparams, hparams_trial):
    assert hparams.lr > 0  # a real loop would train with it
    for run in hparams_trial.runs():
        run.log_epoch(accuracy=0.9 + 0.01 * run.seed, loss=0.1)
"""


def test_a_first_run_without_a_baseline_is_a_usage_error_that_names_the_way_out(pytester):
    pytester.makepyfile(test_grid=PLAIN)
    result = pytester.runpytest("--hparams-compare=main")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--hparams-compare=main: *no saved run 'main'*"
                                 "--hparams-compare-missing=save*"])


def test_compare_missing_save_saves_the_first_run_under_the_compared_name(pytester):
    pytester.makepyfile(test_grid=PLAIN)
    first = pytester.runpytest("--hparams-compare=main", "--hparams-compare-missing=save")
    assert first.ret == 0
    first.stdout.fnmatch_lines(["hparams: no baseline yet (*): nothing is gated; this run is "
                                "saved as main instead", "hparams: saved run *_main.json"])
    second = pytester.runpytest("--hparams-compare=main", "--hparams-compare-missing=save")
    assert second.ret == 0
    second.stdout.fnmatch_lines(["*hyperparameter baseline comparison*"])
    assert "nothing is gated" not in second.stdout.str()


def test_compare_missing_skip_gates_nothing_and_saves_nothing(pytester):
    pytester.makepyfile(test_grid=PLAIN)
    result = pytester.runpytest("--hparams-compare=base.json", "--hparams-compare-missing=skip")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["hparams: no baseline yet (base.json: no such baseline file): "
                                 "nothing is gated"])
    assert not (pytester.path / "base.json").exists()
