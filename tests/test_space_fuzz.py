"""Marker specifications fuzzed: every one expands or fails with a SpaceError naming its key."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_hparams import SpaceError, choice, int_uniform, log_uniform, parse_space, uniform
from pytest_hparams.space import OPTIONS, Choice, IntUniform, LogUniform, Uniform

TEST = "test_fuzz.py::test_it"
EXAMPLES = 1200

_ints = st.one_of(st.integers(-3, 12), st.integers(),
                  st.sampled_from([0, -1, 10**6, 2**63, 10**30, 2**1024]))
_floats = st.one_of(st.floats(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]))
_scalars = st.one_of(
    st.none(), st.booleans(), _ints, _floats, st.text(max_size=6), st.binary(max_size=4),
    st.complex_numbers(max_magnitude=10), st.fractions(max_denominator=7).map(Fraction),
    st.decimals(allow_nan=True, places=2),
)


def _callables() -> st.SearchStrategy:
    functions = [
        lambda h: True, lambda h: False, lambda h: None, lambda h: 1 / 0,
        lambda h: h.missing, lambda h: np.array([1, 2]), lambda h: "a reason",
        lambda h: len(h) % 2 == 0, lambda: True, pytest.mark.skip,
    ]
    return st.sampled_from(functions)


_distributions = st.one_of(
    st.builds(choice, *[_scalars] * 2), st.builds(choice), st.builds(choice, st.lists(_scalars)),
    st.builds(uniform, _scalars, _scalars), st.builds(uniform, _floats, _floats),
    st.builds(log_uniform, _scalars, _scalars), st.builds(log_uniform, _floats, _floats),
    st.builds(int_uniform, _scalars, _scalars), st.builds(int_uniform, _ints, _ints),
    st.builds(Uniform, st.floats(-1e308, 1e308), st.floats(-1e308, 1e308)),
    st.builds(LogUniform, _ints, _ints), st.builds(IntUniform, _floats, _ints),
    st.builds(Choice, st.tuples(_scalars, _scalars)),
)

_arrays = st.one_of(
    st.lists(_floats, max_size=4).map(np.array),
    st.lists(st.integers(-5, 5), max_size=4).map(lambda v: torch.tensor(v, dtype=torch.long)),
    st.lists(st.integers(-5, 5), min_size=4, max_size=4).map(lambda v: np.array(v).reshape(2, 2)),
    _floats.map(np.float64), st.integers(-5, 5).map(np.array),
)


def _ranges() -> st.SearchStrategy:
    return st.builds(range, _ints, _ints, _ints.filter(lambda step: step != 0))


# Axes far beyond any limit: refused before a single value is read.
_huge = st.sampled_from([range(10**12), range(-(10**30), 10**30, 7), list(range(20_001)),
                         np.arange(100_000), dict.fromkeys(range(30_000))])

_leaves = st.one_of(_scalars, _distributions, _arrays, _ranges(), _callables(), _huge)
_nested = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=4), _ints, _floats), inner, max_size=4),
        st.sets(st.integers(0, 9), max_size=3), st.frozensets(st.text(max_size=2), max_size=2),
        st.lists(inner, max_size=3).map(iter),
    ),
    max_leaves=12,
)
# st.recursive mostly draws containers; give plain leaves, huge axes and ranges their share.
_values = st.one_of(_leaves, _huge, _ranges(), _distributions, _nested)

_option_values = {
    "seeds": st.one_of(st.integers(-2, 5), st.lists(_ints, max_size=4), _values),
    "samples": st.one_of(st.integers(-2, 20), _values),
    "seed": st.one_of(st.integers(-2, 5), _values),
    "where": st.one_of(_callables(), _values),
    "expect": st.one_of(st.dictionaries(st.sampled_from(["accuracy", "loss", 3]),
                                        st.one_of(_scalars, st.sampled_from([">=0.9", "<1", "x"]))),
                        _values),
    # A large limit given here would let a fuzzed huge axis really expand: keep it small.
    "max_trials": st.one_of(st.integers(-1, 60),
                            _values.filter(lambda v: not isinstance(v, int) or v <= 60)),
    "xfail": st.one_of(_callables(), _values),
    "marks": st.one_of(_callables(), _values),
    "device": _values, "skip_unavailable": _values, "tolerance": _values, "vectorize": _values,
}

_keys = st.one_of(
    st.text(min_size=0, max_size=6),
    st.text(alphabet="λμσ学习率ü_é", min_size=1, max_size=4),
    st.sampled_from(["lr", "batch_size", "dropout", "seed ", "sample", "max_trial", "expects",
                     "wher", "deivce", "seedz"]),
)


@st.composite
def plausible(draw: st.DrawFn) -> tuple[list[dict], dict]:
    """Specifications as people write them: mostly valid, sometimes not."""
    names = st.from_regex(r"[a-zλ学_]{1,7}", fullmatch=True)
    axis = st.one_of(st.lists(st.integers(-5, 50), min_size=1, max_size=4, unique=True),
                     st.lists(st.sampled_from(["relu", "tanh", "sgd", "adam", "ü"]), min_size=1,
                              max_size=3, unique=True),
                     st.lists(st.floats(1e-5, 1.0), min_size=1, max_size=3, unique=True),
                     st.floats(0, 1), st.booleans())
    kwargs = draw(st.dictionaries(names, axis, max_size=4))
    if draw(st.booleans()):
        kwargs[draw(names)] = draw(st.one_of(
            st.builds(log_uniform, st.floats(1e-6, 1e-3), st.floats(1e-2, 1.0)),
            st.builds(int_uniform, st.integers(0, 5), st.integers(5, 9)),
            st.builds(choice, st.lists(st.integers(0, 9), min_size=1, max_size=3))))
        kwargs["samples"] = draw(st.integers(1, 6))
    if draw(st.booleans()):
        kwargs["seeds"] = draw(st.one_of(st.integers(1, 4),
                                         st.lists(st.integers(0, 99), max_size=3, unique=True)))
    return [], kwargs


@st.composite
def wild(draw: st.DrawFn) -> tuple[list[dict], dict]:
    """Anything at all: odd types, nested containers, huge axes, bad options."""
    kwargs = draw(st.dictionaries(_keys, _values, max_size=5))
    for option in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=4, unique=True)):
        kwargs[option] = draw(_option_values[option])
    args = []
    if draw(st.booleans()):
        # A dict given positionally may have keys of any type.
        args.append(draw(st.dictionaries(st.one_of(_keys, _ints, st.none(), st.tuples(_ints)),
                                         _values, max_size=3)))
    return args, kwargs


def _key_texts(args: list[dict], kwargs: dict) -> set[str]:
    keys = {key for part in [*args, kwargs] for key in part}
    return {key if isinstance(key, str) else str(key) for key in keys} | set(OPTIONS)


def test_fuzzed_specifications_expand_or_raise_space_error_naming_the_key():
    seen = {"valid": 0, "invalid": 0}

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(st.one_of(plausible(), wild()), st.sampled_from([10_000, 50, 1]))
    def check(spec: tuple[list[dict], dict], limit: int) -> None:
        args, kwargs = spec
        try:
            space = parse_space(TEST, args, kwargs, max_trials=limit)
            configs = space.expand()
        except SpaceError as exc:
            seen["invalid"] += 1
            message = str(exc)
            named = re.match(rf"{re.escape(TEST)}: hparams key (.+?): ", message)
            assert named, message
            assert any(message.startswith(f"{TEST}: hparams key {key!r}: ")
                       for key in _key_texts(args, kwargs)), message
            return
        seen["valid"] += 1
        assert 1 <= len(configs) <= space.max_trials
        assert len({c.id for c in configs}) == len(configs)
        assert all(set(c.values) == set(space.order) for c in configs)

    check()
    # The fuzzer must exercise both sides, not only one.
    assert seen["valid"] + seen["invalid"] >= 1000
    assert seen["valid"] >= 100 and seen["invalid"] >= 100, seen


# --------------------------------------------------------------------------- what the fuzzer found


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"lr": range(10**30)}, "max_trials",
         "the axis 'lr' alone has 1,000,000,000,000,000,000,000,000,000,000 values"),
        ({"lr": range(10**12)}, "max_trials", "above the limit of 10,000 configurations"),
        ({"lr": np.arange(20_000)}, "max_trials", "the axis 'lr' alone has 20,000 values"),
        ({"lr": range(10**13), "max_trials": 10**12}, "max_trials",
         "limit of 1,000,000,000,000"),
        ({"seeds": 10**9}, "seeds", "1,000,000,000 seeds"),
        ({"seeds": range(10**20)}, "seeds", "above the limit of 10,000"),
        ({"lr": uniform(2**1024, 2**1025), "samples": 2}, "lr", "must fit in a float"),
        ({"lr": log_uniform(1, 2**1024), "samples": 2}, "lr", "must fit in a float"),
        ({"lr": uniform(-1e308, 1e308), "samples": 2}, "lr", "too wide to sample"),
    ],
)
def test_huge_axes_and_bounds_are_refused_before_any_value_is_read(spec, key, message):
    with pytest.raises(SpaceError) as info:
        parse_space(TEST, (), spec).expand()
    assert str(info.value).startswith(f"{TEST}: hparams key {key!r}: ")
    assert message in str(info.value)


def test_ranges_count_their_values_in_any_direction():
    for values in (range(10, 0, -3), range(0, 10, 3), range(-5, 5), range(3, 3)):
        spec = {"n": values}
        if not values:
            with pytest.raises(SpaceError, match="empty"):
                parse_space(TEST, (), spec)
            continue
        assert [c.values["n"] for c in parse_space(TEST, (), spec).expand()] == list(values)


def test_the_limit_comes_from_the_ini_file_and_a_marker_may_raise_it(pytester):
    pytester.makeini("[pytest]\nhparams_max_trials = 5\n")
    pytester.makepyfile(
        test_six="""
        import pytest

        @pytest.mark.hparams(a=[1, 2, 3], b=[1, 2])
        def test_six(hparams):
            pass
        """,
        test_allowed="""
        import pytest

        @pytest.mark.hparams(a=[1, 2, 3], b=[1, 2], max_trials=6)
        def test_six_allowed(hparams):
            pass
        """,
        test_huge="""
        import pytest

        @pytest.mark.hparams(a=range(10**18))
        def test_huge(hparams):
            pass
        """,
    )
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines_random([
        "*test_six.py::test_six: hparams key 'max_trials': the space has 6 configurations "
        "(a: 3 × b: 2), above the limit of 5*",
        "*test_huge.py::test_huge: hparams key 'max_trials': the axis 'a' alone has "
        "1,000,000,000,000,000,000 values, above the limit of 5 *",
        "*test_six_allowed?a=3-b=2?",
    ])
    assert "INTERNALERROR" not in result.stdout.str()
