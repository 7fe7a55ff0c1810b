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
