"""Learning-curve pictures: one PNG per test, the curves' arithmetic, and a missing matplotlib."""

import math
import sys

import pytest

from pytest_hparams import SeedRun, TrialResult, plot_curves
from pytest_hparams.plots import _curve
from tests.conftest import lr_trial, write_run_file

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def _trial(test: str, lr: float, histories: list[list[float]]) -> TrialResult:
    runs = [SeedRun(seed, history=[{"epoch": e, "accuracy": a, "loss": 1 - a}
                                   for e, a in enumerate(history, start=1)],
                    epochs=len(history))
            for seed, history in enumerate(histories)]
    return lr_trial(runs, lr=lr, test=test, target={"accuracy": 0.9})


def test_a_curve_is_the_mean_and_range_over_the_seeds_that_logged_each_epoch():
    # The second seed stopped after two epochs (its target), the third diverged in epoch 2.
    trial = _trial("t.py::test", 0.1, [[0.5, 0.7, 0.8], [0.6, 0.9], [0.4, math.nan]])
    epochs, mean, low, high = _curve(trial, "accuracy")
    assert epochs == [1, 2, 3]
    assert mean == pytest.approx([0.5, 0.8, 0.8])
    assert low == pytest.approx([0.4, 0.7, 0.8]) and high == pytest.approx([0.6, 0.9, 0.8])


def test_one_png_per_test_and_none_for_a_test_without_history(tmp_path):
    trials = [_trial("a.py::test_lr", lr, [[0.5, 0.8], [0.6, 0.85]]) for lr in (0.01, 0.1)]
    trials.append(_trial("b.py::test_one", 0.1, [[0.3]]))
    trials.append(TrialResult(nodeid="c.py::test_final", test="c.py::test_final",
                              runs=[SeedRun(0, final={"accuracy": 0.9})]))
    written = plot_curves(trials, tmp_path / "plots")
    assert [p.name for p in written] == ["a.py_test_lr.png", "b.py_test_one.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written)
    # From a results file, the same pictures.
    write_run_file(tmp_path / "run.json", trials)
    again = plot_curves(tmp_path / "run.json", tmp_path / "again")
    assert [p.name for p in again] == [p.name for p in written]


def test_the_option_writes_the_pictures_of_a_real_run(pytester):
    pytester.makepyfile(
        """
import pytest
import torch
from pytest_hparams import fit

X = torch.randn(64, 4)
Y = (X[:, 0] > 0).long()

@pytest.mark.hparams(lr=[0.01, 0.1], seeds=2, epochs=3)
def test_fit(hparams):
    fit(lambda: torch.nn.Linear(4, 2), (X, Y), None, hparams)

@pytest.mark.hparams(width=[2, 4], epochs=2)
def test_width(hparams):
    fit(lambda: torch.nn.Linear(4, hparams.width), (X, Y), None, hparams)
"""
    )
    result = pytester.runpytest("--hparams-plot=plots")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["hparams: wrote plots/test_the_option*.py_test_fit.png",
                                 "hparams: wrote plots/test_the_option*.py_test_width.png"])
    assert all(p.read_bytes().startswith(PNG) for p in (pytester.path / "plots").iterdir())


def test_without_matplotlib_the_option_is_a_usage_error_that_says_what_to_install(
        pytester, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--hparams-plot=plots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hparams-plot: plots need matplotlib: "
                                 "pip install 'pytest-hparams[[]plot[]]'*"])
