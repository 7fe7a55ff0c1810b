"""Every option value and marker value, fuzzed: each is accepted or is a clear usage error that
names the option (or the test and the marker key), never a traceback or an INTERNALERROR.

Bounded: a few hundred examples each; deterministic under the ``ci`` hypothesis profile.
"""

from __future__ import annotations

import argparse
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_hparams import ResultsFileError, SpaceError
from pytest_hparams.devices import MAX_THREADS, parse_threads
from pytest_hparams.gate.tolerance import alpha_option, tolerance_option
from pytest_hparams.marker import parse_marker
from pytest_hparams.saved_runs import MAX_NAME, check_save_name, resolve_baseline

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Text as people type it and as shells and CI systems mangle it.
_HOSTILE = ["", " ", "0", "-1", "1", "2147483648", "9" * 400, "1e999", "nan", "inf", "-inf",
            "²", "١٢", "1_000", "0x10", "1.5", "auto", "AUTO", "off", "\x00", "\n", "a\nb",
            "\x1b[31m", "main", "main\n", "../x", "a" * 5000, "accuracy:-0.01", "loss:+5%",
            "accuracy:-1e999", "accuracy:+0.01", "512MiB", "1e3GB", "cuda:0", "cpu"]
_text = st.one_of(st.text(max_size=12), st.sampled_from(_HOSTILE),
                  st.from_regex(r"[a-z_]{1,8}:[-+]?[0-9.eE+-]{1,12}%?", fullmatch=True))


@FUZZ
@given(_text)
def test_thread_counts(text):
    try:
        value = parse_threads(text)
    except ValueError as exc:
        assert "is not a thread count" in str(exc) and len(str(exc)) < 300
        return
    assert value in ("auto", "off") or (isinstance(value, int) and 1 <= value <= MAX_THREADS)


@FUZZ
@given(_text)
def test_tolerances(text):
    try:
        rule = tolerance_option(text)
    except argparse.ArgumentTypeError as exc:
        assert "tolerance" in str(exc)
        return
    assert math.isfinite(rule.amount) and rule.amount >= 0
    again = tolerance_option(str(rule))  # what it prints (and saves) reads back the same
    assert (again.metric, again.relative) == (rule.metric, rule.relative)
    assert math.isclose(again.amount, rule.amount, rel_tol=1e-11)


@FUZZ
@given(st.one_of(_text, st.floats().map(repr)))
def test_significance_levels(text):
    try:
        alpha = alpha_option(text)
    except argparse.ArgumentTypeError as exc:
        assert "significance level" in str(exc)
        return
    assert 0 < alpha < 0.5


@FUZZ
@given(_text)
def test_save_names(text):
    try:
        name = check_save_name(text)
    except ValueError as exc:
        assert "the run name" in str(exc)
        return
    assert name == text and len(name) <= MAX_NAME and re.fullmatch(r"[\w.-]+", name, re.ASCII)


@FUZZ
@given(spec=_text)
def test_baseline_specs(tmp_path_factory, spec):
    storage = tmp_path_factory.mktemp("storage")
    try:
        resolve_baseline(spec, storage, machine="box")
    except ResultsFileError as exc:
        assert len(str(exc)) < 1000
        return
    # Nothing is saved: only a path to an existing file can be found.


# --------------------------------------------------------------------------- on the command line

OPTION_VALUES = [
    ("--hparams-threads", ["2147483648", "0", "-1", "²", "1e3", "9" * 40, "4.5", ""]),
    ("--hparams-vectorize-memory", ["9" * 400, "1e999", "0", "-1GB", "1.5XB", "\x00", "nan"]),
    ("--hparams-compare-fail", ["accuracy:-" + "9" * 400, "accuracy:-1e999", ":-0.1",
                                "accuracy:+0.01", "accuracy", "\x1b[2J"]),
    ("--hparams-compare-alpha", ["nan", "inf", "0", "0.5", "1e-400", "x", "-0.1"]),
    ("--hparams-device", ["cuda:" + "9" * 30, "cpu:0", "\x1b", "tpu", "auto:1"]),
    ("--hparams-devices", [",", "cpu,,cpu", "cuda:" + "9" * 50, " "]),
    ("--hparams-save", ["\n", "a/b", "dirty", "x" * 300, "main\n"]),
    ("--hparams-json", ["\x00", "x\x00y"]),
    ("--hparams-compare", ["\x00", "main\n", "a" * 5000, "\x1b[2J"]),
]


@pytest.mark.parametrize("option, value", [(option, value) for option, values in OPTION_VALUES
                                           for value in values])
def test_hostile_option_values_are_usage_errors_naming_the_option(pytester, option, value):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    extra = ["--hparams-compare"] if option == "--hparams-compare-fail" else []
    result = pytester.runpytest(f"{option}={value}", *extra)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert option in output or option.replace("--", "") in output, output


@pytest.mark.parametrize("name, value", [
    ("hparams_max_trials", "1" * 5000), ("hparams_max_trials", "-1"),
    ("hparams_max_trials", "nan"), ("hparams_vectorize_memory", "9" * 400),
    ("hparams_vectorize_memory", "lots"), ("hparams_device", "cuda:" + "9" * 30),
])
def test_hostile_ini_values_are_usage_errors_naming_the_key(pytester, name, value):
    pytester.makeini(f"[pytest]\n{name} = {value}\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.hparams(a=[1, 2])
        def test_a(hparams):
            pass
    """)
    result = pytester.runpytest()
    output = result.stdout.str() + result.stderr.str()
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED), output
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert name in output or name.replace("hparams_", "--hparams-").replace("_", "-") in output


# --------------------------------------------------------------------------- marker values

TEST = "test_fuzz.py::test_it"

_returned = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.integers(), st.floats(),
    st.lists(st.booleans(), max_size=3),
    st.sampled_from([np.array([True, False]), np.array(True), np.bool_(False), np.float64(1.0),
                     torch.tensor(True), torch.tensor([1, 0]), {"a": 1}, (), [],
                     pytest.mark.skip, pytest.mark.skip(reason="x"), [pytest.mark.slow],
                     pytest.mark.xfail.mark, object(), ValueError("x")]),
)


def _returning(value):
    return lambda hparams: value


def _raising(hparams):
    raise RuntimeError("boom")


_functions = st.one_of(_returned.map(_returning), st.just(_raising), _returned)
_marker_options = {
    "xfail": _functions, "marks": _functions,
    "tolerance": st.one_of(_returned, st.dictionaries(st.sampled_from(["accuracy", "loss", ""]),
                                                      st.one_of(_returned, _text), max_size=2),
                           st.lists(_text, max_size=2), _text),
    "device": st.one_of(_returned, st.sampled_from(["cpu", "cuda", "mps", "cuda:7", "tpu", ""])),
    "skip_unavailable": _returned, "vectorize": _returned,
    "seeds": st.one_of(st.integers(-2, 4), st.sampled_from([2**63, 2**64, -(2**63) - 1]),
                       st.lists(st.sampled_from([0, 1, 2**63, 2**64, -1, 1.5, True]), max_size=3),
                       _returned),
    "expect": st.one_of(_returned, st.dictionaries(st.sampled_from(["accuracy", "loss", "x"]),
                                                   st.one_of(_returned, _text), max_size=2)),
}


@st.composite
def marker_kwargs(draw: st.DrawFn) -> dict:
    kwargs: dict = {"lr": draw(st.sampled_from([[0.1], [0.1, 0.2], 0.1]))}
    for option in draw(st.lists(st.sampled_from(sorted(_marker_options)), min_size=1,
                                max_size=2, unique=True)):
        kwargs[option] = draw(_marker_options[option])
    return kwargs


def test_marker_values_parse_or_are_space_errors_naming_the_key():
    seen = {"valid": 0, "invalid": 0}

    @settings(FUZZ, max_examples=500)
    @given(marker_kwargs())
    def check(kwargs: dict) -> None:
        try:
            marker = parse_marker(TEST, (), kwargs)
            for config in marker.space.expand():
                marks = marker.marks_for(config)
                assert all(isinstance(m, (pytest.Mark, pytest.MarkDecorator)) for m in marks)
        except SpaceError as exc:
            seen["invalid"] += 1
            message = str(exc)
            assert re.match(rf"{re.escape(TEST)}: hparams key '\w+': ", message), message
            assert len(message) < 2000
            return
        seen["valid"] += 1

    check()
    assert seen["valid"] >= 25 and seen["invalid"] >= 25, seen


@pytest.mark.parametrize("returned, accepted", [
    (np.array([True, False]), False), (np.bool_(True), True), (torch.tensor(True), True),
    ([True], False), ("a reason", True), (None, True), (0, False),
])
def test_xfail_functions_return_a_truth_or_a_reason(returned, accepted):
    marker = parse_marker(TEST, (), {"lr": [0.1], "xfail": _returning(returned)})
    (config,) = marker.space.expand()
    if accepted:
        marker.marks_for(config)
        return
    with pytest.raises(SpaceError, match=r"hparams key 'xfail': must return True, False, None "
                                         r"or a reason \(text\), got .* for lr=0\.1"):
        marker.marks_for(config)


def test_an_xfail_array_is_a_collection_error_not_an_internal_error(pytester):
    pytester.makepyfile("""
        import numpy as np
        import pytest

        @pytest.mark.hparams(lr=[0.1, 0.2], xfail=lambda hp: np.array([hp.lr > 0.1, True]))
        def test_a(hparams):
            pass
    """)
    result = pytester.runpytest()
    output = result.stdout.str()
    assert "INTERNALERROR" not in output
    result.stdout.fnmatch_lines(["*hparams key 'xfail': must return True, False, None or a "
                                 "reason (text), got array(*) for lr=0.1*"])
