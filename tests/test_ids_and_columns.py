"""Ids that read as their values, and table columns that do not depend on which rows ran."""

import json

from hypothesis import given
from hypothesis import strategies as st

from pytest_hparams.space import format_value

GRID = """
import pytest
from pytest_hparams import MLP, fit

X = __import__("torch").randn(64, 4)
Y = (X[:, 0] > 0).long()

@pytest.mark.hparams(lr=[0.1, 1.0], width=[4, 8], seeds=1, epochs=1)
def test_grid(hparams):
    fit(lambda hp: MLP(4, 2, hidden=hp.width), (X, Y), (X, Y), hparams)
    assert not (hparams.lr == 1.0 and hparams.width == 8), "planted failure"
"""


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_reads_as_a_float_and_round_trips(value):
    text = format_value(value)
    assert float(text) == value
    assert any(c in text for c in ".e"), text


def test_integers_stay_integers():
    assert [format_value(v) for v in (1, 10, -3)] == ["1", "10", "-3"]


def test_a_whole_float_keeps_its_point_in_the_id_so_k_selects_it(pytester):
    pytester.makepyfile(test_grid=GRID)
    result = pytester.runpytest("-p", "no:cacheprovider", "--co", "-q", "-k", "1.0")
    result.stdout.fnmatch_lines(["test_grid.py::test_grid[lr=1.0-width=4]",
                                 "test_grid.py::test_grid[lr=1.0-width=8]"])


def test_a_rerun_of_the_failures_keeps_every_column_of_the_grid(pytester):
    pytester.makepyfile(test_grid=GRID)
    pytester.runpytest().assert_outcomes(passed=3, failed=1)
    rerun = pytester.runpytest("--lf", "--hparams-json=run.json")
    rerun.assert_outcomes(failed=1)
    rerun.stdout.re_match_lines([r"\s+lr\s+width\s+accuracy.*", r"\s+1\.0\s+8\s+.*failed.*"])
    trial, = json.loads((pytester.path / "run.json").read_text())["trials"]
    assert trial["axes"] == ["lr", "width"]


def test_an_axis_with_one_value_is_not_a_column_next_to_real_axes(pytester):
    pytester.makepyfile(test_grid=GRID.replace("width=[4, 8]", "width=[4]")
                        .replace("hparams.width == 8", "False"))
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"\s+lr\s+accuracy.*"])
