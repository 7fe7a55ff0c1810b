"""Search spaces: expansion, ids, sampling, and every bad-input message."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_hparams import SpaceError, choice, int_uniform, log_uniform, parse_space, uniform

T = "test_x.py::test_a"


def expand(**spec):
    return parse_space(T, (), spec).expand()


def ids(**spec):
    return [c.id for c in expand(**spec)]


# --------------------------------------------------------------------------- grids


def test_grid_is_the_cartesian_product_in_declared_order():
    assert ids(lr=[0.001, 0.01], optimizer=["sgd", "adam"]) == [
        "lr=0.001-optimizer=sgd",
        "lr=0.001-optimizer=adam",
        "lr=0.01-optimizer=sgd",
        "lr=0.01-optimizer=adam",
    ]


def test_scalars_are_fixed_values_shared_by_every_configuration_and_not_in_ids():
    configs = expand(lr=[0.1, 0.2], epochs=30)
    assert [c.id for c in configs] == ["lr=0.1", "lr=0.2"]
    assert all(c.values["epochs"] == 30 for c in configs)
    assert configs[0].axes == ("lr",)


def test_a_space_without_axes_has_one_configuration_called_default():
    configs = expand(epochs=3)
    assert [(c.id, dict(c.values)) for c in configs] == [("default", {"epochs": 3})]


def test_tuples_ranges_and_arrays_are_axes_and_dicts_name_their_values():
    assert ids(width=(16, 32)) == ["width=16", "width=32"]
    assert ids(layers=range(1, 3)) == ["layers=1", "layers=2"]
    assert ids(p=np.array([0.0, 0.5])) == ["p=0.0", "p=0.5"]
    configs = expand(act={"relu": object(), "tanh": object()})
    assert [c.id for c in configs] == ["act=relu", "act=tanh"]


def test_values_get_short_readable_ids():
    assert ids(x=[1e-05, True, None, "adam", (64, 32), math.sqrt]) == [
        "x=1e-05", "x=True", "x=None", "x=adam", "x=(64,32)", "x=sqrt",
    ]


def test_where_drops_combinations():
    configs = expand(a=[1, 2, 3], b=[1, 2, 3], where=lambda hp: hp.a < hp.b)
    assert [c.id for c in configs] == ["a=1-b=2", "a=1-b=3", "a=2-b=3"]


def test_seeds_as_a_count_or_a_list():
    assert parse_space(T, (), {"seeds": 3}).seeds == (0, 1, 2)
    assert parse_space(T, (), {"seeds": [7, 42]}).seeds == (7, 42)
    assert parse_space(T, (), {}).seeds == (0,)


def test_one_positional_dict_is_accepted_for_keys_that_are_not_identifiers():
    configs = parse_space(T, ({"learning rate": [0.1, 0.2]},), {}).expand()
    assert [c.id for c in configs] == ["learning rate=0.1", "learning rate=0.2"]


# --------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_and_the_seed_changes_it():
    spec = dict(lr=log_uniform(1e-4, 1e-1), act=choice("relu", "tanh"), samples=6)
    first = [dict(c.values) for c in expand(**spec, seed=1)]
    again = [dict(c.values) for c in expand(**spec, seed=1)]
    other = [dict(c.values) for c in expand(**spec, seed=2)]
    assert first == again
    assert first != other
    assert len(first) == 6


def test_samples_are_crossed_with_grid_axes_and_ids_name_the_sample():
    configs = expand(lr=uniform(0.1, 0.2), opt=["sgd", "adam"], samples=3, seed=0)
    assert len(configs) == 6
    assert configs[0].id.startswith("sample=0-lr=0.1")
    assert configs[0].id.endswith("-opt=sgd")
    # one draw is shared by the grid points of a sample: a paired comparison
    assert configs[0].values["lr"] == configs[1].values["lr"]


def test_sampled_values_stay_within_their_bounds():
    configs = expand(a=uniform(-1, 1), b=log_uniform(1e-3, 1), c=int_uniform(2, 4),
                     d=choice([8, 16]), samples=200)
    for c in configs:
        assert -1 <= c.values["a"] <= 1
        assert 1e-3 <= c.values["b"] <= 1
        assert c.values["c"] in (2, 3, 4)
        assert c.values["d"] in (8, 16)
    assert {c.values["c"] for c in configs} == {2, 3, 4}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"lr": []}, "lr", "the list is empty"),
        ({"sample": 8, "lr": uniform(0, 1)}, "sample", "did you mean samples=8?"),
        ({"expects": {"accuracy": 0.9}}, "expects", "did you mean expect="),
        ({"lr": [0.1], "samples": 4}, "samples", "no key is one"),
        ({"lr": uniform(0, 1)}, "lr", "samples=N"),
        ({"lr": uniform(1, 0), "samples": 2}, "lr", "low=1 is greater than high=0"),
        ({"lr": log_uniform(0, 1), "samples": 2}, "lr", "bounds > 0"),
        ({"lr": log_uniform(-1, 1), "samples": 2}, "lr", "bounds > 0"),
        ({"lr": uniform(0, math.inf), "samples": 2}, "lr", "finite"),
        ({"n": int_uniform(1.5, 3), "samples": 2}, "n", "integer bounds"),
        ({"a": choice(), "samples": 2}, "a", "at least one value"),
        ({"seeds": 2.5}, "seeds", "got 2.5"),
        ({"seeds": 0}, "seeds", "at least one seed"),
        ({"seeds": True}, "seeds", "got True"),
        ({"seeds": [1, 1]}, "seeds", "repeat"),
        ({"seeds": [1, "2"]}, "seeds", "must be integers"),
        ({"seed": 3, "lr": [0.1]}, "seed", "did you mean seeds=3"),
        ({"lr": uniform(0, 1), "samples": 0}, "samples", "positive integer"),
        ({"a": [1, 2], "where": lambda hp: False}, "where", "removes every one of the 2"),
        ({"a": [1, 2], "where": 5}, "where", "must be a function"),
        ({"a": [1, "1"]}, "a", "would both have the id 'a=1'"),
        ({"a": [0.1, 0.1]}, "a", "would both have the id"),
        ({"a": {1, 2}}, "a", "a set has no order"),
        ({"a": iter([1, 2])}, "a", "iterator"),
        ({"a": list(range(200)), "b": list(range(100))}, "max_trials", "20,000 configurations"),
        ({"a": [1, 2, 3], "max_trials": 2}, "max_trials", "above the limit of 2"),
        ({"expect": {"accuracy": "about 0.9"}}, "expect", "cannot read the threshold"),
        ({"expect": ">=0.9"}, "expect", "dict of metric"),
        ({"xfail": True}, "xfail", "must be a function"),
    ],
)
def test_bad_input_names_the_test_and_the_key(spec, key, message):
    with pytest.raises(SpaceError) as info:
        parse_space(T, (), spec).expand()
    text = str(info.value)
    assert text.startswith(f"{T}: hparams key '{key}': ")
    assert message in text


def test_a_constraint_that_raises_names_the_configuration():
    with pytest.raises(SpaceError, match=r"'where': the constraint raised KeyError.*a=1"):
        expand(a=[1], where=lambda hp: hp["missing"])


def test_positional_arguments_must_be_dicts():
    with pytest.raises(SpaceError, match="takes keywords"):
        parse_space(T, ([0.1, 0.2],), {})


def test_a_huge_grid_is_refused_without_expanding_it():
    spec = {f"k{i}": list(range(10)) for i in range(12)}  # 10**12 combinations
    with pytest.raises(SpaceError, match="1,000,000,000,000 configurations"):
        parse_space(T, (), spec)


# --------------------------------------------------------------------------- properties

axis_values = st.lists(st.integers(-1000, 1000), min_size=1, max_size=4, unique=True)


@given(st.dictionaries(st.sampled_from("abcdef"), axis_values, min_size=1, max_size=4))
def test_expansion_covers_the_product_with_unique_ids(axes):
    configs = parse_space(T, (), axes).expand()
    assert len(configs) == math.prod(len(v) for v in axes.values())
    assert len({c.id for c in configs}) == len(configs)
    assert {tuple(c.values[k] for k in axes) for c in configs} == {
        tuple(p) for p in __import__("itertools").product(*axes.values())
    }
    assert [c.index for c in configs] == list(range(len(configs)))


@given(st.floats(1e-6, 1.0), st.floats(1.0, 10.0), st.integers(0, 2**32), st.integers(1, 20))
def test_sampling_is_deterministic_and_in_bounds(low, high, seed, samples):
    spec = {"x": log_uniform(low, high), "samples": samples, "seed": seed}
    first = [c.values["x"] for c in parse_space(T, (), spec).expand()]
    assert first == [c.values["x"] for c in parse_space(T, (), spec).expand()]
    assert all(low * (1 - 1e-12) <= x <= high * (1 + 1e-12) for x in first)


@given(st.data())
def test_the_hypothesis_strategy_draws_from_the_space(data):
    space = parse_space(T, (), {"opt": ["sgd", "adam"], "lr": log_uniform(1e-3, 1e-1),
                                "samples": 2, "epochs": 5})
    drawn = data.draw(space.strategy())
    assert drawn["opt"] in ("sgd", "adam")
    assert 1e-3 <= drawn["lr"] <= 1e-1
    assert drawn["epochs"] == 5
