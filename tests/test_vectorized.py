"""The vectorised path of fit is a faithful optimisation of the sequential one."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pytest_hparams import (
    MLP,
    HParams,
    SmallCNN,
    TrialRecorder,
    TrialResult,
    digits,
    fit,
    sweep,
)
from pytest_hparams.recording import recording_into
from pytest_hparams.training.peers import parse_size
from tests.conftest import PATH_TOLERANCE, assert_same_numbers, paths_run_the_same_kernels

DATA = digits()
EXACT_KEYS = ("loss", "accuracy", "test_loss", "test_accuracy", "lr")


def factory(hparams):
    return MLP(DATA.features, DATA.classes, 32, dropout=hparams.get("dropout", 0.0))


def _alone(call, seeds=(0, 1)):
    """Run ``call`` with a recorder of its own, as a test item of its own would (this test's
    recorder would otherwise collect every run)."""
    with recording_into(TrialRecorder(TrialResult(seeds=list(seeds)))):
        return call()


def _fit(hparams, vectorize, model=factory, data=DATA.train, **kwargs):
    kwargs.setdefault("epochs", 3)
    kwargs.setdefault("test", DATA.test)
    return _alone(lambda: fit(model, data, DATA.val, HParams(hparams, seeds=(0, 1)),
                              vectorize=vectorize, **kwargs))


def _sweep(model=factory, **kwargs):
    return _alone(lambda: sweep(model, DATA.train, DATA.val, **kwargs))


def _assert_same_runs(sequential, vectorised, train_loss_tolerance=1e-5):
    """Same seeds, epochs, statuses and metrics. The per-epoch train_loss is summed inside
    vmap in another order, so it may differ in the last digits; the rest is compared to 1e-6."""
    assert [r.seed for r in sequential.runs] == [r.seed for r in vectorised.runs]
    for left, right in zip(sequential.runs, vectorised.runs, strict=True):
        assert (left.status, left.epochs, left.epochs_to_target) == (
            right.status, right.epochs, right.epochs_to_target)
        assert len(left.history) == len(right.history)
        for row_left, row_right in zip(left.history, right.history, strict=True):
            for key in EXACT_KEYS:
                if key in row_left:
                    assert row_right[key] == pytest.approx(row_left[key], abs=1e-6, nan_ok=True)
            assert row_right["train_loss"] == pytest.approx(
                row_left["train_loss"], rel=train_loss_tolerance, nan_ok=True)


def _metrics(trial):
    """Everything a run recorded but the clock."""
    return [([{k: v for k, v in row.items() if k != "seconds"} for row in run.history],
             run.final, run.status, run.epochs_to_target) for run in trial.runs]


@pytest.mark.parametrize("hparams", [
    {"lr": 1e-3},
    {"lr": 0.1, "optimizer": "nesterov", "weight_decay": 1e-3},
    {"lr": 0.01, "optimizer": "rmsprop", "momentum": 0.5, "dropout": 0.3, "l1": 1e-4},
    {"lr": 3e-3, "optimizer": "adamw", "label_smoothing": 0.1, "schedule": "cosine",
     "betas": (0.8, 0.99)},
    {"lr": 0.05, "optimizer": "sgd", "clip": 0.5, "augment": "noise",
     "schedule": "step", "step_size": 1},
    {"lr": 1e-3, "augment": "rotation", "dropout": 0.5},
], ids=["adam", "nesterov-l2", "rmsprop-dropout-l1", "adamw-smoothing-cosine-betas",
        "sgd-clip-noise-step", "adam-rotation-dropout"])
def test_vectorised_runs_match_the_sequential_loop(hparams):
    sequential = _fit(hparams, vectorize=False)
    vectorised = _fit(hparams, vectorize=True)
    assert any(n.startswith("vectorised:") for n in vectorised.notes)
    _assert_same_runs(sequential, vectorised)


def test_a_convolutional_model_matches_within_noise():
    """Convolutions run batched in another order, so the last digits differ and training may
    grow them; the results stay far inside the spread over seeds."""
    images = digits(images=True)

    def cnn(vectorize):
        return _alone(lambda: fit(lambda hp: SmallCNN(images.classes, 8, dropout=0.2),
                                  images.train, images.val, HParams({"augment": "rotation"},
                                                                    seeds=(0, 1)),
                                  test=images.test, lr=3e-3, epochs=2, vectorize=vectorize))

    sequential, vectorised = cnn(False), cnn(True)
    assert vectorised.notes[0].startswith("vectorised:")
    for left, right in zip(sequential.runs, vectorised.runs, strict=True):
        for key in ("accuracy", "test_accuracy"):
            assert abs(left.final[key] - right.final[key]) <= 0.02
        for key in ("loss", "test_loss", "train_loss"):
            assert left.final[key] == pytest.approx(right.final[key], rel=0.05)


def test_each_row_starts_from_the_sequential_initialisation():
    made = {False: [], True: []}

    def recording(vectorize):
        def build(hparams):
            net = MLP(DATA.features, DATA.classes, 16, init=hparams["init"])
            made[vectorize].append(copy.deepcopy(net.state_dict()))
            return net
        return build

    for vectorize in (False, True):
        _sweep(recording(vectorize), epochs=1, vectorize=vectorize,
               space={"init": ["default", "xavier", "normal"], "seeds": [3, 7]})
    assert len(made[True]) == len(made[False]) == 6
    for left, right in zip(made[False], made[True], strict=True):
        assert all(torch.equal(left[k], right[k]) for k in left)


def test_a_module_instance_is_reinitialised_per_seed_as_sequentially():
    net = MLP(DATA.features, DATA.classes, 16)
    _assert_same_runs(_fit({"lr": 3e-3}, False, model=net), _fit({"lr": 3e-3}, True, model=net))


def test_a_row_trains_the_same_in_any_group():
    space = {"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 1e-3], "dropout": 0.2, "seeds": 2}
    together = _sweep(space=space, epochs=2)
    assert "6 configurations × 2 seeds" in together[0].notes[0]
    for trial in together:
        alone = _fit(trial.hparams, True, epochs=2, test=None)
        assert "1 configuration × 2 seeds" in alone.notes[0]
        assert_same_numbers(_metrics(alone), _metrics(trial))


def test_a_diverged_row_stops_alone_and_does_not_poison_the_others():
    space = {"lr": [1e20, 0.05], "optimizer": "sgd", "seeds": 2}
    diverged, healthy = _sweep(space=space, epochs=3)
    assert diverged.status == "diverged"
    assert all(run.epochs == 1 for run in diverged.runs)
    assert all(math.isnan(run.final["train_loss"]) for run in diverged.runs)
    assert all(math.isfinite(run.final["train_loss"]) for run in healthy.runs)
    alone = _fit(healthy.hparams, True, test=None)
    assert_same_numbers(_metrics(alone), _metrics(healthy))


def test_rows_stop_at_their_target_and_after_their_own_epochs():
    space = {"lr": [3e-3, 3e-2], "epochs": [2, 6]}
    target = {"accuracy": 0.85}
    together = _sweep(space=space, target=target)
    for trial in together:
        sequential = _alone(lambda trial=trial: fit(
            factory, DATA.train, DATA.val, HParams(trial.hparams), target=target,
            vectorize=False), seeds=(0,))
        _assert_same_runs(sequential, trial)
    epochs = {(t.hparams["lr"], t.hparams["epochs"]): t.runs[0].epochs for t in together}
    assert epochs[(3e-3, 2)] == 2
    assert epochs[(3e-2, 6)] < 6  # stopped at the target


def test_the_generators_are_left_as_the_sequential_loop_leaves_them():
    draws = []
    for vectorize in (False, True):
        _fit({"lr": 1e-3, "dropout": 0.5}, vectorize, epochs=1)
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1])


class _Branching(nn.Module):
    """Python control flow on a tensor's value: vmap cannot run it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(DATA.features, DATA.classes)

    def forward(self, inputs):
        out = self.linear(inputs)
        return out * 2 if out.sum() > 0 else out


@pytest.mark.parametrize(("model", "data", "reason"), [
    (lambda: nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 10)),
     DATA.train, "running statistics"),
    (lambda: nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Dropout2d(0.2), nn.Flatten(),
                           nn.Linear(64, 10)), DATA.train, "only nn.Dropout is drawn"),
    (_Branching, DATA.train, "vectorised training raised"),
    (lambda: nn.Linear(64, 10), DataLoader(TensorDataset(*DATA.train), batch_size=32),
     "train is a DataLoader"),
], ids=["batchnorm", "dropout2d", "control-flow", "dataloader"])
def test_what_cannot_be_vectorised_trains_one_by_one_and_says_why(model, data, reason):
    result = _fit({"lr": 1e-3}, True, model=model, data=data, epochs=1, test=None)
    assert any(n.startswith("one by one:") and reason in n for n in result.notes), result.notes
    sequential = _fit({"lr": 1e-3}, False, model=model, data=data, epochs=1, test=None)
    assert _metrics(result) == _metrics(sequential)


def test_vectorize_false_trains_one_by_one():
    result = _fit({"lr": 1e-3}, vectorize=False, epochs=1)
    assert result.notes == ["one by one: vectorised training is off (vectorize=False, or "
                            "--hparams-no-vectorize)"]


def test_a_sweep_rejects_a_vectorize_option_that_is_not_a_bool():
    from pytest_hparams import SpaceError

    with pytest.raises(SpaceError, match="hparams key 'vectorize': must be True or False"):
        _sweep(space={"lr": [1e-3], "vectorize": "no"})


@pytest.mark.parametrize(("text", "size"), [
    ("512MiB", 512 * 2**20), ("4GB", 4 * 10**9), ("1.5GiB", int(1.5 * 2**30)), ("100", 100),
    ("auto", None), ("2 kb", 2000),
])
def test_memory_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "0", "5 parsecs", "-1GB"])
def test_bad_memory_sizes_are_refused(text):
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_the_module_the_factory_built_ends_up_trained_as_sequentially():
    """Bit for bit where this machine runs the same kernels for batched and single matrix
    products (``paths_run_the_same_kernels``), else within the stated tolerance."""
    built = {False: [], True: []}

    def recording(vectorize):
        def build(hparams):
            built[vectorize].append(factory(hparams))
            return built[vectorize][-1]
        return build

    for vectorize in (False, True):
        _fit({"lr": 3e-3, "dropout": 0.2}, vectorize, model=recording(vectorize), epochs=2)
    for left, right in zip(built[False], built[True], strict=True):
        for a, b in zip(left.state_dict().values(), right.state_dict().values(), strict=True):
            if paths_run_the_same_kernels():
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(b, a, rtol=PATH_TOLERANCE[0], atol=PATH_TOLERANCE[1])


def test_falling_back_does_not_build_a_seed_twice():
    widths = iter([16, 32])
    calls = []

    def one_width_per_seed():
        calls.append(1)
        return MLP(DATA.features, DATA.classes, next(widths))

    result = _fit({"lr": 1e-3}, True, model=one_width_per_seed, epochs=1, test=None)
    assert result.notes == ["one by one: the model factory builds a different model for "
                            "each seed"]
    assert len(calls) == 2 and [run.status for run in result.runs] == ["ok", "ok"]


def test_a_stack_that_runs_out_of_memory_is_split_in_halves(monkeypatch):
    from pytest_hparams.training.chunk import Chunk

    space = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "seeds": 1}
    whole = _sweep(space=space, epochs=1)
    train = Chunk.train

    def greedy(chunk):
        if len(chunk.slots) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        train(chunk)

    monkeypatch.setattr(Chunk, "train", greedy)
    halves = _sweep(space=space, epochs=1)
    assert "trained together in 2 chunks" in halves[0].notes[0]
    assert [_metrics(t) for t in halves] == [_metrics(t) for t in whole]
