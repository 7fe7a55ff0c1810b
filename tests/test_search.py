"""Adaptive search: optuna asks, batches train as one stack, pruned rows stop, studies are
shared, and every trial is a row of the calling test's table and files."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pytest_hparams import (
    MLP,
    HParamsError,
    SearchError,
    TrialRecorder,
    TrialResult,
    choice,
    digits,
    int_uniform,
    log_uniform,
    read_run,
    search,
    uniform,
)
from pytest_hparams.recording import recording_into

optuna = pytest.importorskip("optuna")  # imported out here: pytester's runs drop new modules
optuna.logging.set_verbosity(optuna.logging.WARNING)

DATA = digits()
TRAIN = (DATA.train[0][:300], DATA.train[1][:300])
TEST_ID = "test_x.py::test_search"
SPACE = {"lr": log_uniform(1e-3, 0.5), "dropout": uniform(0.0, 0.5), "optimizer": "momentum",
         "epochs": 4, "seeds": 2}
TINY = (torch.linspace(-1, 1, 16).reshape(8, 2), torch.tensor([0, 1] * 4))


def model(hparams):
    return MLP(DATA.features, DATA.classes, 16, dropout=hparams.get("dropout", 0.0))


def _alone(call):
    """Run ``call`` with a recorder of its own, as a test item of its own would (this test's
    recorder would otherwise collect every row), named ``TEST_ID``."""
    recorder = TrialRecorder(TrialResult(nodeid=TEST_ID, test=TEST_ID, seeds=[0]))
    with recording_into(recorder):
        return call()


def _search(space=SPACE, **kwargs):
    kwargs.setdefault("trials", 6)
    kwargs.setdefault("batch", 3)
    return _alone(lambda: search(model, TRAIN, DATA.val, space=space, **kwargs))


def _tiny(space, **kwargs):
    """A search whose trials cost milliseconds: a linear layer on 8 points for an epoch."""
    kwargs.setdefault("trials", 2)
    return _alone(lambda: search(lambda: nn.Linear(2, 2), TINY, TINY,
                                 space={"epochs": 1, **space}, **kwargs))


def _summary(result):
    return [(t.hparams, t.status, [r.epochs for r in t.runs], round(t.accuracy, 6))
            for t in result]


# --------------------------------------------------------------------------- searching


def test_a_search_returns_its_trials_in_the_order_asked_and_the_best():
    result = _search(sampler="tpe", seed=0)
    assert len(result) == len(result.trials) == 6
    assert result.numbers == list(range(6))
    assert [t.hparams["trial"] for t in result] == result.numbers
    assert [t.config_id for t in result] == [f"trial={n}" for n in range(6)]
    assert all(t.status == "ok" and len(t.runs) == 2 for t in result)
    assert result.values == [t.accuracy for t in result]
    assert result.best.accuracy == max(result.values)
    assert result.best_so_far() == [max(result.values[:i + 1]) for i in range(6)]
    assert dict(result.best_hparams) == {k: v for k, v in result.best.hparams.items()
                                         if k != "trial"}
    assert result.epochs == 6 * 2 * 4
    assert result.study.best_value == result.best.accuracy
    assert [t.state.name for t in result.study.trials] == ["COMPLETE"] * 6


def test_the_same_seed_gives_the_same_search_and_another_seed_another():
    space = {**SPACE, "epochs": 2, "seeds": 1}
    first, again = _search(space, seed=3, trials=4, batch=2), _search(space, seed=3, trials=4,
                                                                      batch=2)
    assert _summary(first) == _summary(again)
    other = _search(space, seed=4, trials=4, batch=2)
    assert [t.hparams for t in other] != [t.hparams for t in first]


def test_a_batch_trains_as_one_vectorised_stack():
    result = _search(sampler="random", trials=4, batch=4)
    notes = [" | ".join(t.notes) for t in result]
    assert "vectorised: 8 runs (4 configurations × 2 seeds) trained together" in notes[0]
    assert all("vectorised: 8 runs" in note for note in notes)


def test_a_loss_objective_is_minimised():
    result = _search(objective="loss")
    assert result.direction == "minimize"
    assert result.best.loss == min(t.loss for t in result)


@pytest.mark.parametrize("sampler", ["random", "gp", "grid"])
def test_each_named_sampler_searches(sampler):
    space = {**SPACE, "lr": [0.01, 0.05, 0.2], "dropout": 0.1} if sampler == "grid" else SPACE
    result = _search(space=space, sampler=sampler, trials=3, batch=3)
    assert [t.status for t in result] == ["ok"] * 3
    assert 0.0 < result.best.accuracy <= 1.0
    if sampler == "grid":
        assert sorted(t.hparams["lr"] for t in result) == [0.01, 0.05, 0.2]


def test_an_optuna_sampler_object_is_used_as_it_is():
    sampler = optuna.samplers.RandomSampler(seed=1)
    result = _tiny({"lr": uniform(0.01, 1.0)}, sampler=sampler)
    assert result.study.sampler is sampler


# --------------------------------------------------------------------------- pruning


def _pruned_search(vectorize, **kwargs):
    return _search(sampler="random", trials=8, batch=8, pruner="halving", seed=1,
                   vectorize=vectorize, space={**SPACE, "epochs": 9}, **kwargs)


def test_pruned_rows_leave_the_stack_and_the_rest_trains_on():
    result = _pruned_search(vectorize=True)
    statuses = [t.status for t in result]
    assert "pruned" in statuses and "ok" in statuses, statuses
    for trial in result:
        epochs = [run.epochs for run in trial.runs]
        if trial.status == "pruned":
            assert epochs[0] < 9 and len(set(epochs)) == 1, epochs  # every seed stops there
            assert "pruned: by SuccessiveHalvingPruner after epoch" in trial.reason
        else:
            assert epochs == [9, 9]
    assert "vectorised: 16 runs (8 configurations × 2 seeds)" in result[0].notes[0]
    states = [t.state.name for t in result.study.trials]
    assert states == ["PRUNED" if s == "pruned" else "COMPLETE" for s in statuses]
    assert all(math.isnan(v) for v, s in zip(result.values, statuses, strict=True)
               if s == "pruned")
    assert result.best.status == "ok"


def test_a_batch_is_pruned_the_same_way_in_a_stack_and_one_by_one():
    """Successive halving judges a trial at a rung against the trials that reached it before:
    in a stack the rows report epoch by epoch in order, one by one trial by trial, and the
    same trials are ahead of each other at each rung."""
    stacked, alone = _pruned_search(vectorize=True), _pruned_search(vectorize=False)
    assert "one by one" in " ".join(alone[0].notes)
    assert _summary(stacked) == _summary(alone)


def test_the_median_pruner_waits_for_completed_trials():
    result = _search(sampler="random", trials=4, batch=2, pruner="median")
    assert [t.status for t in result] == ["ok"] * 4  # MedianPruner: 5 trials must complete


# --------------------------------------------------------------------------- failures


def test_a_failing_or_diverging_trial_is_told_failed_and_the_search_goes_on():
    def fragile(hparams):
        if hparams.width == 3:
            raise ValueError("width 3 is not supported")
        return MLP(DATA.features, DATA.classes, hparams.width)

    result = _alone(lambda: search(fragile, TRAIN, DATA.val, trials=4, batch=2, sampler="grid",
                                   space={"width": [3, 16], "lr": [0.05, 1e20],
                                          "optimizer": "sgd", "epochs": 2}))
    by_config = {(t.hparams["width"], t.hparams["lr"]): t for t in result}
    assert by_config[3, 0.05].status == "error"
    assert "ValueError: width 3 is not supported" in by_config[3, 0.05].reason
    assert by_config[16, 1e20].status == "diverged"
    assert by_config[16, 0.05].status == "ok"
    states = {(t.params["width"], t.params["lr"]): t.state.name for t in result.study.trials}
    assert states == {(3, 0.05): "FAIL", (3, 1e20): "FAIL", (16, 1e20): "FAIL",
                      (16, 0.05): "COMPLETE"}
    assert result.best is by_config[16, 0.05]


def test_best_says_why_when_no_trial_completed():
    result = _search(space={**SPACE, "lr": log_uniform(1e19, 1e20), "optimizer": "sgd"},
                     trials=2, batch=2)
    assert [t.status for t in result] == ["diverged", "diverged"]
    with pytest.raises(SearchError, match=r"no trial of the search completed \(trial 0: "
                                          r"diverged: seed 0: diverged: train_loss became"):
        _ = result.best


def test_an_objective_no_trial_records_is_an_error():
    regression = (TINY[0], TINY[0].sum(1, keepdim=True))
    with pytest.raises(SearchError, match=r"test_x.py::test_search: search key 'objective': "
                                          r"the trials record no 'accuracy' \(they record "
                                          r"train_loss, loss\)"):
        _alone(lambda: search(lambda: nn.Linear(2, 1), regression, regression, trials=2,
                              space={"lr": uniform(0.01, 0.1), "epochs": 1},
                              loss_fn=nn.functional.mse_loss))


BAD = [
    ({}, {}, "space", "there is nothing to search"),
    ({"epochs": 2}, {}, "space", "there is nothing to search (fixed: epochs)"),
    ({"lr": [0.1]}, {"trials": 0}, "trials", "must be a positive integer, got 0"),
    ({"lr": [0.1]}, {"batch": "4"}, "batch", "must be a positive integer, got '4'"),
    ({"lr": [0.1]}, {"seed": 1.5}, "seed", "must be an integer or None"),
    ({"lr": [0.1]}, {"sampler": "tpee"}, "sampler", "'tpee' is not one of them; did you mean "
                                                    "'tpe'?"),
    ({"lr": [0.1]}, {"pruner": "halfing"}, "pruner", "did you mean 'halving'?"),
    ({"lr": [0.1]}, {"pruner": 3}, "pruner", "3 is not one of them"),
    ({"lr": [0.1]}, {"objective": "acuracy"}, "objective", "did you mean 'accuracy'?"),
    ({"lr": [0.1]}, {"direction": "up"}, "direction", "give 'maximize', 'minimize'"),
    ({"lr": [0.1]}, {"objective": "test_accuracy", "pruner": "median"}, "pruner",
     "measured once, after training"),
    ({"lr": uniform(0.01, 0.1)}, {"sampler": "grid"}, "lr", "'lr' is continuous (uniform)"),
    ({"lr": [0.1, 0.2]}, {"sampler": "grid", "trials": 3}, "trials",
     "the grid has 2 configurations, fewer than trials=3"),
    ({"lr": [0.1], "samples": 4}, {}, "samples", "asks its sampler for trials=N"),
    ({"lr": [0.1], "seed": 4}, {}, "seed", "give the sampler's seed to search(seed=...)"),
    ({"lr": [0.1], "where": lambda hp: True}, {}, "where", "cannot skip combinations"),
    ({"lr": [0.1], "trial": [1, 2]}, {}, "trial", "the name is taken"),
    ({"lr": []}, {}, "lr", "the list is empty"),
    ({"lr": log_uniform(0, 1)}, {}, "lr", "log_uniform needs bounds > 0"),
    ({"lr": [0.1]}, {"storage": "/no/such/folder/study.log"}, "storage", "does not exist"),
    ({"lr": [0.1]}, {"storage": 5}, "storage", "give a file path, a database URL"),
    ({"lr": [0.1]}, {"study_name": ""}, "study_name", "must be a non-empty string"),
    ({"lr": [0.1], "seeds": 0}, {}, "seeds", "needs at least one seed"),
    ({"lr": [0.1], "seeds": 10**9}, {}, "seeds", "use at most 10,000"),
]


@pytest.mark.parametrize(("space", "kwargs", "key", "message"), BAD)
def test_bad_input_is_an_error_naming_the_test_and_the_key(space, kwargs, key, message):
    kwargs.setdefault("trials", 1)
    with pytest.raises(HParamsError) as error:
        _tiny(space, **kwargs)
    text = str(error.value)
    assert text.startswith(f"{TEST_ID}: ")
    assert f"key {key!r}" in text and message in text, text


def test_a_missing_optuna_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails
    with pytest.raises(HParamsError, match=r'search\(\) needs optuna: pip install '
                                           r'"pytest-hparams\[search\]"'):
        _tiny({"lr": [0.1]})


def test_the_cmaes_sampler_needs_its_package():
    try:
        import cmaes  # noqa: F401
    except ImportError:
        with pytest.raises(SearchError, match="'cmaes' needs the cmaes package: pip install "
                                              "cmaes"):
            _tiny({"lr": uniform(0.01, 1.0)}, sampler="cmaes")
    else:
        assert _tiny({"lr": uniform(0.01, 1.0)}, sampler="cmaes").best.status == "ok"


def test_a_study_made_to_minimise_is_not_loaded_to_maximise(tmp_path):
    storage = str(tmp_path / "study.log")
    _tiny({"lr": [0.1, 0.2]}, objective="loss", storage=storage, study_name="s")
    with pytest.raises(SearchError, match="search key 'objective': study 's' in this storage "
                                          "was made to minimize"):
        _tiny({"lr": [0.1, 0.2]}, storage=storage, study_name="s")


# --------------------------------------------------------------------------- spaces


VALUES = st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.text(max_size=3),
                   st.booleans(), st.none(), st.sampled_from([nn.ReLU, nn.Tanh, max]))


@settings(max_examples=25)
@given(axis=st.lists(VALUES, min_size=1, max_size=4), names=st.booleans(), seed=st.integers(0, 9))
def test_a_trial_takes_its_values_from_the_space(axis, names, seed):
    """Lists of any values (numbers, text, flags, None, classes) and dicts of named values
    come back as the values themselves, named in the table like the marker's axes."""
    from pytest_hparams.space import format_value

    ids = [format_value(v) for v in axis]
    if len(set(ids)) != len(ids):
        axis = list(dict(zip(ids, axis, strict=True)).values())
    values = {f"v{i}": v for i, v in enumerate(axis)} if names else axis
    result = _tiny({"x": values, "y": choice(*axis), "lr": uniform(0.01, 0.1)}, seed=seed,
                   trials=3, sampler="random")
    for trial in result:
        assert any(trial.hparams["x"] is v or trial.hparams["x"] == v for v in axis)
        assert any(trial.hparams["y"] is v or trial.hparams["y"] == v for v in axis)
        if names:
            name = [k for k, v in values.items() if v is trial.hparams["x"]
                    or (v == trial.hparams["x"] and type(v) is type(trial.hparams["x"]))]
            assert trial.label("x") in name
        assert 0.01 <= trial.hparams["lr"] <= 0.1


@settings(max_examples=15)
@given(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3), seed=st.integers(0, 99))
def test_the_grid_sampler_visits_every_combination_once(sizes, seed):
    space = {f"k{i}": list(range(size)) for i, size in enumerate(sizes[:-1])}
    space["w"] = int_uniform(1, sizes[-1])
    total = math.prod(sizes)
    result = _tiny(space, sampler="grid", trials=total, batch=max(1, total // 2), seed=seed)
    seen = {tuple(t.hparams[k] for k in space) for t in result}
    assert len(seen) == total == len(result)


# --------------------------------------------------------------------------- storage


def test_a_stored_study_is_continued_by_the_next_search(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _tiny({"lr": uniform(0.01, 1.0)}, storage=storage, study_name="s", seed=0)
    second = _tiny({"lr": uniform(0.01, 1.0)}, storage=storage, study_name="s", seed=1)
    assert first.numbers == [0, 1] and second.numbers == [2, 3]
    assert len(second.study.trials) == 4
    assert [t.config_id for t in second] == ["s-trial=2", "s-trial=3"]


SHARED = """
import os
from pytest_hparams import MLP, digits, search, log_uniform

DATA = digits()


def test_share():
    result = search(lambda: MLP(64, 10, 8), DATA.train, DATA.val,
                    space={{"lr": log_uniform(1e-3, 0.5), "epochs": 1}},
                    trials=3, batch=1, seed=int(os.environ["SEARCH_SEED"]),
                    storage={storage!r}, study_name="shared")
    assert len(result) == 3
"""


def test_two_pytest_processes_share_one_study_through_a_journal_file(pytester):
    journal = pytester.path / "study.log"
    pytester.makepyfile(test_share=SHARED.format(storage=str(journal)))
    # This checkout of pytest_hparams, not an installed one.
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
           "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", f"--hparams-json=run{seed}.json",
                          "test_share.py"], cwd=pytester.path,
                         env={**env, "SEARCH_SEED": str(seed)}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for seed in (1, 2)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    numbers = [sorted(t.hparams["trial"] for t in read_run(pytester.path / f"run{seed}.json")
                      .trials) for seed in (1, 2)]
    assert sorted(numbers[0] + numbers[1]) == list(range(6)), numbers
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6


# --------------------------------------------------------------------------- in pytest


PLUGIN_TEST = """
from pytest_hparams import MLP, digits, search, log_uniform

DATA = digits()
TRAIN = (DATA.train[0][:300], DATA.train[1][:300])


def test_tuned(hparams_device):
    result = search(lambda: MLP(64, 10, 16), TRAIN, DATA.val,
                    space={"lr": log_uniform(1e-3, 0.5), "optimizer": "momentum",
                           "epochs": 9, "seeds": 2},
                    sampler="random", trials=6, batch=6, seed=1, pruner="halving",
                    device=hparams_device)
    assert result.best.status == "ok"
"""


def test_every_trial_is_a_row_of_the_tests_table_and_files(pytester):
    pytester.makepyfile(test_tuned=PLUGIN_TEST)
    json_path, csv_path = pytester.path / "run.json", pytester.path / "run.csv"
    outcome = pytester.runpytest("-p", "no:randomly", f"--hparams-json={json_path}",
                                 f"--hparams-csv={csv_path}")
    outcome.assert_outcomes(passed=1)
    text = outcome.stdout.str()
    assert "test_tuned.py::test_tuned\n6 configurations × 2 seeds, on cpu" in text
    header = next(line for line in text.splitlines() if line.strip().startswith("trial"))
    assert header.split()[:3] == ["trial", "lr", "accuracy"]
    rows = [line for line in text.splitlines() if re.match(r"^[* ] +\d+ ", line)]
    assert [re.match(r"^[* ] +(\d+) ", line).group(1) for line in rows] == [
        str(n) for n in range(6)]
    assert sum(line.startswith("*") for line in rows) == 1
    pruned = [line for line in rows if "passed, pruned [" in line]
    assert pruned and "pruned: by SuccessiveHalvingPruner after epoch" in text
    trials = read_run(json_path).trials
    assert [t.nodeid for t in trials] == [f"test_tuned.py::test_tuned::trial={n}"
                                          for n in range(6)]
    assert {t.status for t in trials} == {"ok", "pruned"}
    assert len(pruned) == sum(t.status == "pruned" for t in trials)
    data = json.loads(json_path.read_text())
    assert all(trial["hparams"]["trial"] == n for n, trial in enumerate(data["trials"]))
    assert csv_path.read_text().count("test_tuned.py::test_tuned::trial=") == 6


def test_two_named_searches_in_one_test_are_told_apart(pytester):
    pytester.makepyfile(test_two="""
        import torch
        from pytest_hparams import search, uniform

        DATA = (torch.linspace(-1, 1, 16).reshape(8, 2), torch.tensor([0, 1] * 4))

        def test_compare():
            for name in ("tpe", "random"):
                search(lambda: torch.nn.Linear(2, 2), DATA, DATA, sampler=name, trials=2,
                       space={"lr": uniform(0.01, 1.0), "epochs": 1}, study_name=name)

        def test_unnamed():
            for name in ("tpe", "random"):
                search(lambda: torch.nn.Linear(2, 2), DATA, DATA, sampler=name, trials=2,
                       space={"lr": uniform(0.01, 1.0), "epochs": 1})
    """)
    path = pytester.path / "run.json"
    outcome = pytester.runpytest("-p", "no:randomly", f"--hparams-json={path}")
    outcome.assert_outcomes(passed=1, failed=1)
    outcome.stdout.fnmatch_lines(["*test_unnamed*search key 'study_name': this test already "
                                  "ran a search; give each search() of a test its own "
                                  "study_name=*"])
    trials = [t for t in read_run(path).trials if "test_compare" in t.nodeid]
    assert [t.config_id for t in trials] == ["tpe-trial=0", "tpe-trial=1", "random-trial=0",
                                             "random-trial=1"]
    assert [t.axes[:2] for t in trials] == [["study", "trial"]] * 4
    assert Path(path).exists()
