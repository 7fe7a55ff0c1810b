"""Rows that were wrong or missing (issue 15): a shared stack that changed a result, empty data
that passed, a crashed xdist worker's item, colliding ids, shadowed keys, late epochs, sweeps."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_hparams import HParams, TrialRecorder, fit
from pytest_hparams.errors import SpaceError
from pytest_hparams.recording import recording_into
from pytest_hparams.space import parse_space
from tests.conftest import run_with_json as _run

# pytester's in-process runs drop the modules they import, and some cannot be imported twice
# (scikit-learn's compiled parts; torch's optimiser and vmap machinery): import them out here.
pytest.importorskip("sklearn.datasets").load_digits()
with recording_into(TrialRecorder()):
    fit(torch.nn.Linear(2, 2), (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)),
        hparams=HParams({"lr": 0.1}), epochs=1)


def _finals(trials, metric="accuracy"):
    return {nodeid: [run.final.get(metric) for run in trial.runs]
            for nodeid, trial in trials.items()}


def _statuses(trials):
    return {nodeid: [run.status for run in trial.runs] for nodeid, trial in trials.items()}


# --------------------------------------------------------------------------- sharing a stack

WIDTH_FROM_A_GLOBAL = """
import pytest
from pytest_hparams import MLP, digits, fit

DATA = digits()
WIDTH = {}


@pytest.mark.hparams(lr=[0.05, 0.1], seeds=2, epochs=2)
def test_width(hparams):
    WIDTH["w"] = 4 if hparams.lr == 0.05 else 64
    result = fit(lambda hp: MLP(64, 10, hidden=WIDTH["w"]), DATA.train, DATA.val, hparams)
    assert result.runs
"""


def test_a_factory_reading_a_global_the_test_changed_does_not_share_the_leaders_model(pytester):
    """The factory reads WIDTH, which each item sets before its fit: the second item must train
    at its own width, as with -k or one by one, not at the leader's."""
    pytester.makepyfile(test_width=WIDTH_FROM_A_GLOBAL)
    outcome, full = _run(pytester, "-v")
    outcome.assert_outcomes(passed=2)
    _, alone = _run(pytester, "-k", "0.1")
    _, sequential = _run(pytester, "--hparams-no-vectorize")
    second = "test_width.py::test_width[lr=0.1]"
    assert _finals(full)[second] == _finals(alone)[second]
    # One by one the sums run in another order: equal within noise, and far from the 0.35
    # of accuracy that the leader's width 4 cost.
    assert _finals(full)[second] == pytest.approx(_finals(sequential)[second], abs=0.02)
    note = " | ".join(full[second].notes)
    assert ("trained again by itself: its fit() model differs (it reads WIDTH['w'] = 64, its "
            "group's call read 4)") in note


def test_a_factory_reading_a_helper_that_reads_a_global_is_compared_by_value(pytester):
    """What the factory reads through a function of the test module counts too."""
    pytester.makepyfile(test_width=WIDTH_FROM_A_GLOBAL.replace(
        "WIDTH = {}\n", "WIDTH = {}\n\n\ndef make(hp):\n    return MLP(64, 10, hidden=WIDTH['w'])\n"
    ).replace("lambda hp: MLP(64, 10, hidden=WIDTH[\"w\"])", "lambda hp: make(hp)"))
    _, full = _run(pytester)
    _, alone = _run(pytester, "-k", "0.1")
    second = "test_width.py::test_width[lr=0.1]"
    assert _finals(full)[second] == _finals(alone)[second]
    assert "it reads make.WIDTH['w'] = 64" in " ".join(full[second].notes)


def test_a_factory_reading_unchanged_globals_still_shares_its_stack(pytester):
    pytester.makepyfile(test_width=WIDTH_FROM_A_GLOBAL.replace(
        '    WIDTH["w"] = 4 if hparams.lr == 0.05 else 64\n', '    WIDTH["w"] = 16\n'))
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=2)
    for trial in trials.values():
        assert "4 runs (2 configurations × 2 seeds) trained together" in " ".join(trial.notes)


STATEFUL_LOSS = """
import pytest
import torch
from torch.nn import functional as F
from pytest_hparams import MLP, digits, fit

DATA = digits()
{state}


@pytest.mark.hparams(lr=[0.05], seeds=2, epochs=3, batch_size=512)
def test_loss(hparams):
    fit(lambda: MLP(64, 10, hidden=16), DATA.train, DATA.val, hparams, loss_fn={loss})
"""
# NaN on the 7th call: the first seed's run diverges when trained one by one, the second not.
GLOBAL_COUNTER = """
CALLS = {"n": 0}


def loss(outputs, labels):
    CALLS["n"] += 1
    value = F.cross_entropy(outputs, labels)
    return value * float("nan") if CALLS["n"] == 7 else value
"""
NONLOCAL_COUNTER = """
def counting():
    calls = 0

    def loss(outputs, labels):
        nonlocal calls
        calls += 1
        value = F.cross_entropy(outputs, labels)
        return value * float("nan") if calls == 7 else value
    return loss
"""
CALLABLE_OBJECT = """
class Loss:
    def __init__(self):
        self.calls = 0

    def __call__(self, outputs, labels):
        self.calls += 1
        value = F.cross_entropy(outputs, labels)
        return value * float("nan") if self.calls == 7 else value
"""
BOUND_METHOD = CALLABLE_OBJECT.replace("__call__", "loss")


@pytest.mark.parametrize(("state", "loss", "why"), [
    (GLOBAL_COUNTER, "loss", "reads the dict 'CALLS'"),
    (NONLOCAL_COUNTER, "counting()", "assigns 'calls'"),
    (CALLABLE_OBJECT, "Loss()", "is a Loss object"),
    (BOUND_METHOD, "Loss().loss", "is a method of a Loss object"),
], ids=["global", "nonlocal", "object", "bound-method"])
def test_a_stateful_loss_is_not_stacked(pytester, state, loss, why):
    """A loss that counts its calls sees one call per step for the whole stack, but one per
    step per seed when trained one by one: it must train one by one."""
    pytester.makepyfile(test_loss=STATEFUL_LOSS.format(state=state, loss=loss))
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=1)
    _, sequential = _run(pytester, "--hparams-no-vectorize")
    assert _statuses(trials) == _statuses(sequential) == {
        "test_loss.py::test_loss[lr=0.05]": ["diverged", "ok"]}
    note = " | ".join(trials["test_loss.py::test_loss[lr=0.05]"].notes)
    assert note.startswith("one by one: the loss_fn")
    assert why in note


def test_a_stateless_loss_is_still_stacked(pytester):
    pytester.makepyfile(test_loss=STATEFUL_LOSS.format(
        state="SMOOTHING = 0.1\n\n\ndef loss(outputs, labels):\n"
              "    return F.cross_entropy(outputs, labels, label_smoothing=SMOOTHING)\n",
        loss="loss"))
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=1)
    assert "2 runs (1 configuration × 2 seeds) trained together" in " ".join(
        trials["test_loss.py::test_loss[lr=0.05]"].notes)


# What a call reads, frozen: the unit under the sharing checks above.
SCALE = {"factor": 2}
SMOOTHING = 0.1
SEEN: list[float] = []


def _scaled(x):
    return x * SCALE["factor"]


def _smoothed(outputs, labels):
    return torch.nn.functional.cross_entropy(outputs, labels, label_smoothing=SMOOTHING)


def _remembering(outputs, labels):
    SEEN.append(1.0)
    return torch.nn.functional.cross_entropy(outputs, labels)


class _Focal(torch.nn.Module):
    def __init__(self, gamma):
        super().__init__()
        self.gamma = gamma

    def forward(self, outputs, labels):
        ce = torch.nn.functional.cross_entropy(outputs, labels, reduction="none")
        return ((1 - torch.exp(-ce)) ** self.gamma * ce).mean()


class _CountingFocal(_Focal):
    def forward(self, outputs, labels):
        self.gamma = self.gamma + 1
        return super().forward(outputs, labels)


@pytest.mark.parametrize("loss", [
    None, torch.nn.functional.cross_entropy, torch.nn.CrossEntropyLoss(label_smoothing=0.1),
    _smoothed, _Focal(2.0), lambda outputs, labels: _smoothed(outputs, labels) * 2,
    __import__("functools").partial(torch.nn.functional.cross_entropy, label_smoothing=0.1),
], ids=["default", "torch-function", "torch-module", "reads-a-constant", "own-module",
        "lambda-calling-a-function", "partial"])
def test_a_loss_that_keeps_no_state_may_be_stacked(loss):
    from pytest_hparams.training.compat import stateful

    assert stateful("loss_fn", loss) is None


@pytest.mark.parametrize(("loss", "why"), [
    (_remembering, "reads the list 'SEEN'"),
    (_CountingFocal(2.0), "calls '_CountingFocal.forward', which assigns an attribute (.gamma)"),
    (lambda outputs, labels: _remembering(outputs, labels),
     "reads the list '_remembering.SEEN'"),
    (iter([1]).__next__, "is a method of a list_iterator object"),
], ids=["global-list", "module-assigning-self", "through-a-function", "builtin-method"])
def test_a_loss_that_may_keep_state_is_not_stacked(loss, why):
    from pytest_hparams.training.compat import stateful

    problem = stateful("loss_fn", loss)
    assert problem is not None and problem.startswith(f"the loss_fn {why}")


def test_a_snapshot_sees_a_value_changed_in_place_and_nothing_else():
    from pytest_hparams.training.snapshot import difference, snapshot

    def factory():
        return lambda x: _scaled(x)

    before = snapshot(factory())
    assert difference(before, snapshot(factory())) is None
    SCALE["factor"] = 3
    try:
        assert difference(before, snapshot(factory())) == (
            "it reads _scaled.SCALE['factor'] = 3, its group's call read 2")
    finally:
        SCALE["factor"] = 2
    data = torch.arange(4.0)
    read = snapshot((data, data.clone()))
    assert difference(read, snapshot((data.clone(), data))) is None  # equal contents
    data.add_(1)
    assert difference(read, snapshot((data, data.clone()))) is not None  # changed in place


# --------------------------------------------------------------------------- empty data

EMPTY_DATA = """
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from pytest_hparams import MLP, fit

X = torch.randn(32, 4)
Y = (X[:, 0] > 0).long()
NONE_X, NONE_Y = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)


class Listed(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return X[i], Y[i]


class Streamed(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(())


@pytest.mark.hparams(lr=[0.1], expect={{"loss": "<0.5"}})
def test_data(hparams):
    fit(lambda: MLP(4, 2, hidden=8), {train}, {val}, hparams, epochs=2)
"""


@pytest.mark.parametrize(("train", "val", "message"), [
    ("(NONE_X, NONE_Y)", "(NONE_X, NONE_Y)", "fit(): train has no examples"),
    ("(X, Y)", "(NONE_X, NONE_Y)", "fit(): val has no examples"),
    ("(X, Y[:31])", "None", "fit(): train has 32 inputs but 31 labels"),
    ("(X, Y)", "(X[:5], Y)", "fit(): val has 5 inputs but 32 labels"),
    ("TensorDataset(NONE_X, NONE_Y)", "None", "fit(): train has no examples"),
    ("(X, Y)", "Listed(0)", "fit(): val has no examples (an empty Listed)"),
    ("DataLoader(Listed(0), batch_size=4)", "None",
     "fit(): train has no examples (a DataLoader of an empty Listed)"),
    ("DataLoader(Streamed(), batch_size=4)", "None",
     "fit(): train gave no batches (a DataLoader of a Streamed)"),
    ("(torch.tensor(1.0), torch.tensor(1))", "None",
     "fit(): train inputs must hold one row per example, got a tensor of shape ()"),
], ids=["both-empty", "val-empty", "train-mismatch", "val-mismatch", "empty-tensor-dataset",
        "empty-dataset", "empty-loader", "empty-iterable", "scalars"])
def test_empty_or_mismatched_data_is_an_error_naming_the_argument(pytester, train, val, message):
    """Zero examples used to train to loss 0.000 and pass expect={"loss": "<0.5"}."""
    pytester.makepyfile(test_data=EMPTY_DATA.format(train=train, val=val))
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(failed=1)
    outcome.stdout.fnmatch_lines([f"*ValueError: {message}*"])
    (trial,) = trials.values()
    assert trial.outcome == "failed"
    assert not any(run.status == "ok" for run in trial.runs)


# --------------------------------------------------------------------------- ids and keys


def test_ids_that_collide_across_axes_are_a_collection_error(pytester):
    """a=1-b=2 with b=2, and a=1 with b=2-b=2, both join to a=1-b=2-b=2: pytest used to
    rename one of them silently (a=1-b=2-b=20, a=1-b=2-b=21)."""
    pytester.makepyfile(test_ids="""
        import pytest

        @pytest.mark.hparams(a=['1-b=2', '1'], b=['2', '2-b=2'])
        def test_a(hparams):
            pass
    """)
    outcome = pytester.runpytest("--co", "-q")
    outcome.stdout.fnmatch_lines([
        "*test_ids.py::test_a: hparams key 'a': the configurations a='1-b=2', b='2' and "
        "a='1', b='2-b=2' would both have the id 'a=1-b=2-b=2'*dict of id -> value*"])
    assert "b=20" not in outcome.stdout.str()
    assert outcome.ret == pytest.ExitCode.INTERRUPTED  # a collection error


# Values made of pieces of ids, so that one axis's value can run into the next axis's id.
_id_pieces = st.lists(st.sampled_from(["1", "2", "-b=", "-c="]), min_size=1,
                      max_size=4).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                       st.lists(_id_pieces, min_size=1, max_size=3, unique=True),
                       min_size=1, max_size=3))
def test_configurations_expand_with_distinct_ids_or_not_at_all(axes):
    try:
        configs = parse_space("t.py::test", (), axes).expand()
    except SpaceError as exc:
        assert "would both have the id" in str(exc)
        configurations = list(itertools.product(*axes.values()))
        ids = ["-".join(f"{k}={v}" for k, v in zip(axes, point, strict=True))
               for point in configurations]
        assert len(set(ids)) < len(ids)
        return
    assert len({c.id for c in configs}) == len(configs)


@pytest.mark.parametrize("key", ["id", "items", "get", "values", "keys", "axes", "_values"])
def test_a_key_that_attribute_access_would_shadow_is_a_collection_error(pytester, key):
    """hparams.items is the mapping's method, never a hyperparameter named items."""
    pytester.makepyfile(test_keys=f"""
        import pytest

        @pytest.mark.hparams({key}=[1, 2])
        def test_a(hparams):
            pass
    """)
    outcome = pytester.runpytest("--co", "-q")
    outcome.stdout.fnmatch_lines([
        f"*test_keys.py::test_a: hparams key '{key}': hparams.{key} is *so it cannot give "
        f"this hyperparameter; rename it*"])
    assert outcome.ret == pytest.ExitCode.INTERRUPTED


def test_a_key_named_like_a_method_is_refused_in_a_sweep_too():
    from pytest_hparams import sweep

    with pytest.raises(SpaceError, match=r"hparams key 'values': hparams\.values is"):
        sweep(torch.nn.Linear(2, 2), (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)),
              space={"values": [1, 2]})


# --------------------------------------------------------------------------- late epochs, sweeps


def test_log_epoch_after_the_run_finished_is_an_error_naming_the_test_and_seed(pytester):
    pytester.makepyfile(test_late="""
        import pytest

        @pytest.mark.hparams(lr=[0.1], seeds=2)
        def test_late(hparams, hparams_trial):
            finished = []
            for run in hparams_trial.runs():
                run.log_epoch(loss=1.0)
                finished.append(run)
            finished[0].log_epoch(loss=0.5)
    """)
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(failed=1)
    outcome.stdout.fnmatch_lines([
        "*HParamsError: test_late.py::test_late?lr=0.1?: seed 0: log_epoch() was called after "
        "its run finished*"])
    (trial,) = trials.values()
    assert [len(run.history) for run in trial.runs] == [1, 1]


SWEEP_WITH_A_FAILING_ROW = """
from pytest_hparams import MLP, digits, sweep

DATA = digits()


def model(hp):
    if hp.width < 0:
        raise ValueError("width must be positive")
    return MLP(64, 10, hidden=hp.width)


def test_sweep():
    sweep(model, DATA.train, DATA.val, epochs=1{options},
          space={{"width": [16, -1, 32], "seeds": 2}})
"""


@pytest.mark.parametrize("options", ["", ", vectorize=False", ", batch_size=0"],
                         ids=["vectorised", "one-by-one", "every-row-fails"])
def test_a_sweep_row_that_raises_fails_on_its_own_row_and_the_later_rows_train(pytester,
                                                                                options):
    pytester.makepyfile(test_sweep=SWEEP_WITH_A_FAILING_ROW.format(options=options))
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(failed=1)
    rows = {nodeid.rpartition("::")[2]: trial for nodeid, trial in trials.items()}
    assert list(rows) == ["width=16", "width=-1", "width=32"]
    if options == ", batch_size=0":  # every row raises, before any run, each its own error
        assert all(trial.outcome == "failed" and "batch_size" in trial.reason
                   for trial in rows.values())
        return
    failing = rows["width=-1"]
    assert failing.outcome == "failed"
    assert "ValueError: width must be positive" in failing.reason
    outcome.stdout.fnmatch_lines(["FAILED test_sweep.py::test_sweep - ValueError: width must "
                                  "be positive"])
    for width in ("width=16", "width=32"):
        assert rows[width].outcome == "passed", rows[width]
        assert rows[width].status == "ok" and len(rows[width].runs) == 2
        assert "width must be positive" not in rows[width].reason
    table = outcome.stdout.str().split("hyperparameter comparison")[1].split("short test")[0]
    assert table.count("width must be positive") == 1


# --------------------------------------------------------------------------- a crashed worker

CRASH = """
import os
import signal

import pytest


@pytest.mark.hparams(lr=[0.01, 0.1, 1.0], opt={"plain": None, "adam": "adam"}, seeds=2)
def test_crash(hparams, hparams_trial):
    lr, opt = hparams.lr, hparams.opt
    dies = lr == 0.1 and opt == "adam"
    for run in hparams_trial.runs():
        if dies and run.seed == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies in the middle of the item
        run.log_epoch(loss=hparams.lr)
"""


def test_an_item_whose_xdist_worker_was_killed_is_a_crashed_row(pytester, monkeypatch):
    pytest.importorskip("xdist")
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # under an outer -n, the inner run's own
    pytester.makepyfile(test_crash=CRASH)
    outcome, trials = _run(pytester, "-n", "2", subprocess=True)
    outcome.assert_outcomes(passed=5, failed=1)
    crashed = trials["test_crash.py::test_crash[lr=0.1-opt=adam]"]
    assert crashed.outcome == "crashed"
    assert crashed.test == "test_crash.py::test_crash"
    assert crashed.config_id == "lr=0.1-opt=adam"
    assert crashed.hparams == {"lr": 0.1, "opt": "adam"} and crashed.axes == ["lr", "opt"]
    assert crashed.worker.startswith("gw")
    assert "crashed while running 'test_crash.py::test_crash[lr=0.1-opt=adam]'" in crashed.reason
    assert len(trials) == 6
    table = outcome.stdout.str().split("hyperparameter comparison")[1]
    row = next(line for line in table.splitlines() if line.split()[:2] == ["0.1", "adam"])
    assert "crashed [1]" in row
    assert "[1] worker 'gw" in table


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_]{1,6}", fullmatch=True),
                       st.lists(st.one_of(st.integers(-10**6, 10**6),
                                          st.floats(-1e6, 1e6, allow_nan=False),
                                          st.text("abc_. ", min_size=1, max_size=4)),
                                min_size=1, max_size=3, unique_by=str),
                       min_size=1, max_size=3))
def test_a_configuration_id_reads_back_as_its_values_ids(axes):
    """What a crashed item's row shows: the configuration its node id names."""
    from pytest_hparams.recording import crashed_trial
    from pytest_hparams.space import format_value, parse_id

    try:
        configs = parse_space("t.py::test", (), axes).expand()
    except SpaceError:
        return  # values whose ids coincide
    for config in configs:
        texts = {k: format_value(config.values[k]) for k in axes}
        assert parse_id(config.id) == texts
        trial = crashed_trial(f"t.py::test[{config.id}]", "worker 'gw0' crashed")
        assert trial is not None and trial.labels == texts and trial.axes == list(axes)
        assert all(format_value(trial.hparams[k]) == texts[k] for k in axes)


def test_a_crashed_plain_test_is_no_hparams_row():
    from pytest_hparams.recording import crashed_trial

    assert crashed_trial("t.py::test_plain", "crashed") is None
    assert crashed_trial("t.py::test_p[1-2]", "crashed") is None
    assert crashed_trial("t.py::test_p[1-lr=0.1]", "crashed", hparams_tests={"t.py::test_p"})


def test_a_factory_reading_state_fit_cannot_read_trains_only_its_own_configuration(pytester):
    pytester.makepyfile(test_width="""
        import itertools
        import pytest
        from pytest_hparams import MLP, digits, fit

        DATA = digits()
        WIDTHS = itertools.cycle([16])

        @pytest.mark.hparams(lr=[0.05, 0.1], epochs=1)
        def test_width(hparams):
            fit(lambda hp: MLP(64, 10, hidden=next(WIDTHS)), DATA.train, DATA.val, hparams)
    """)
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=2)
    for trial in trials.values():
        notes = " | ".join(trial.notes)
        assert "1 configuration × 1 seed" in notes
        assert "the model reads 'WIDTHS', a cycle object, whose state fit cannot read" in notes
