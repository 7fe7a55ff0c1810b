"""fit(): data forms, seeding, targets, divergence, optimisers, schedules and settings errors."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pytest_hparams import HParams, SettingsError, TrainSettings, fit
from pytest_hparams.settings import OPTIMIZERS

torch.manual_seed(0)
X = torch.randn(512, 6)
Y = (X[:, 0] - X[:, 1] > 0).long()
TRAIN, VAL = (X[:384], Y[:384]), (X[384:], Y[384:])


def model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_tensors_dataset_and_loader_all_train():
    for train in (TRAIN, TensorDataset(*TRAIN), DataLoader(TensorDataset(*TRAIN), batch_size=16)):
        result = fit(model, train, VAL, epochs=5, lr=0.05)
        assert result.status == "ok"
        assert result.accuracy > 0.75


def test_plain_dataset_goes_through_a_dataloader():
    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 384

        def __getitem__(self, i):
            return X[i], Y[i]

    assert fit(model, Pairs(), VAL, epochs=3, lr=0.05).accuracy > 0.6


def test_every_seed_trains_and_the_result_summarises_them():
    result = fit(model, TRAIN, VAL, HParams({"lr": 0.05, "epochs": 4}, seeds=(0, 1, 2)))
    assert [run.seed for run in result.runs] == [0, 1, 2]
    summary = result.metric("accuracy")
    assert summary.n == 3 and summary.mean == pytest.approx(result.accuracy)
    assert summary.min <= summary.mean <= summary.max
    low, high = summary.ci95
    assert low <= summary.mean <= high
    assert len({run.final["loss"] for run in result.runs}) == 3  # seeds differ


def test_same_seed_is_bit_for_bit_reproducible():
    first = fit(model, TRAIN, VAL, seeds=[3], epochs=3, optimizer="adam", lr=0.01)
    second = fit(model, TRAIN, VAL, seeds=[3], epochs=3, optimizer="adam", lr=0.01)
    assert first.runs[0].history == [
        {**row, "seconds": first.runs[0].history[i]["seconds"]}
        for i, row in enumerate(second.runs[0].history)
    ]


def test_a_module_is_reinitialised_per_seed_not_trained_in_place():
    net = model()
    before = [p.clone() for p in net.parameters()]
    a = fit(net, TRAIN, VAL, seeds=[1], epochs=2, lr=0.05)
    b = fit(net, TRAIN, VAL, seeds=[1], epochs=2, lr=0.05)
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))
    assert a.runs[0].final == b.runs[0].final


def test_a_factory_taking_hparams_builds_from_them():
    built = []

    def factory(hp):
        built.append(hp["width"])
        return torch.nn.Sequential(torch.nn.Linear(6, hp["width"]), torch.nn.Linear(hp["width"], 2))

    fit(factory, TRAIN, VAL, HParams({"width": 5, "epochs": 1}, seeds=(0, 1)))
    assert built == [5, 5]


def test_target_records_epochs_and_seconds_and_stops_there():
    stop = fit(model, TRAIN, VAL, epochs=30, lr=0.05, target={"accuracy": 0.8})
    run = stop.runs[0]
    assert run.reached_target and run.epochs == run.epochs_to_target < 30
    assert 0 < run.seconds_to_target <= run.wall_seconds
    assert stop.accuracy >= 0.8
    keep = fit(model, TRAIN, VAL, epochs=30, lr=0.05, target={"accuracy": 0.8},
               stop_at_target=False)
    assert keep.runs[0].epochs == 30
    assert keep.runs[0].epochs_to_target == run.epochs_to_target


def test_an_unreached_target_leaves_epochs_to_target_empty():
    result = fit(model, TRAIN, VAL, epochs=2, lr=1e-6, target={"accuracy": 0.99})
    assert result.reached == 0 and math.isnan(result.epochs_to_target.mean)


def test_divergence_stops_at_once_and_is_recorded():
    result = fit(model, TRAIN, VAL, epochs=20, lr=1e8, optimizer="sgd", seeds=[0, 1])
    assert result.status == "diverged"
    assert all(run.epochs < 20 and "became" in run.reason for run in result.runs)
    assert math.isnan(result.loss)


def test_an_out_of_memory_error_is_recorded_and_the_next_seed_runs():
    class Greedy(torch.nn.Module):
        def __init__(self, fail: bool):
            super().__init__()
            self.fail = fail
            self.linear = torch.nn.Linear(6, 2)

        def forward(self, x):
            if self.fail:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
            return self.linear(x)

    seeds = iter([True, False])
    result = fit(lambda: Greedy(next(seeds)), TRAIN, VAL, seeds=[0, 1], epochs=2, lr=0.05)
    assert [run.status for run in result.runs] == ["oom", "ok"]
    assert "out of memory" in result.runs[0].reason


def test_other_exceptions_are_recorded_and_raised():
    def broken():
        raise ValueError("bad width")

    with pytest.raises(ValueError, match="bad width"):
        fit(broken, TRAIN, VAL, epochs=1)


def test_test_split_adds_test_metrics_and_history_has_the_epoch_values():
    result = fit(model, TRAIN, VAL, epochs=3, lr=0.05, test=VAL)
    run = result.runs[0]
    assert set(run.final) == {"train_loss", "loss", "accuracy", "test_loss", "test_accuracy"}
    assert run.final["test_accuracy"] == run.final["accuracy"]
    assert [row["epoch"] for row in run.history] == [1, 2, 3]
    assert all(row["lr"] == 0.05 for row in run.history)
    assert run.best["accuracy"] == max(row["accuracy"] for row in run.history)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_learns(optimizer):
    lr = 0.01 if optimizer in ("adam", "adamw", "rmsprop") else 0.1
    assert fit(model, TRAIN, VAL, epochs=8, optimizer=optimizer, lr=lr).accuracy > 0.8


def test_l1_and_weight_decay_shrink_the_weights():
    def weight_norm(**penalty):
        seen = []

        def factory():
            net = model()
            seen.append(net)
            return net

        fit(factory, TRAIN, VAL, epochs=10, lr=0.05, optimizer="sgd", **penalty)
        return sum(p.abs().sum().item() for p in seen[0].parameters() if p.ndim > 1)

    plain = weight_norm()
    assert weight_norm(l1=0.01) < plain
    assert weight_norm(weight_decay=0.1) < plain


def test_clipping_and_label_smoothing_and_augmentation_run():
    flips = []

    def augment(x):
        flips.append(len(x))
        return x + 0.01 * torch.randn_like(x)

    result = fit(model, TRAIN, VAL, epochs=2, lr=0.05, clip=0.5, label_smoothing=0.1,
                 augment=augment, batch_size=32)
    assert result.status == "ok" and flips == [32] * 24


@pytest.mark.parametrize(
    ("schedule", "decay", "expected"),
    [
        ("none", None, [0.1, 0.1, 0.1, 0.1]),
        ("step", 0.5, [0.1, 0.05, 0.025, 0.0125]),
        ("exponential", 0.9, [0.1, 0.09, 0.081, 0.0729]),
        ("cosine", 0.0, [0.1, 0.0853553, 0.05, 0.0146447]),
    ],
)
def test_learning_rate_schedules(schedule, decay, expected):
    settings = TrainSettings(lr=0.1, epochs=4, schedule=schedule, decay=decay, step_size=1)
    assert [settings.lr_at(e) for e in range(4)] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("hparams", "kwargs", "error", "message"),
    [
        ({"optimizer": "adamm"}, {}, SettingsError, "'adamm' is not one of *did you mean 'adam'?"),
        ({"schedule": "linear"}, {}, SettingsError, "hparams key 'schedule'"),
        ({"batch_size": 0}, {}, SettingsError, "'batch_size': must be a positive integer"),
        ({"lr": -1}, {}, SettingsError, "'lr': must be a positive number"),
        ({"epochs": 2.5}, {}, SettingsError, "'epochs': must be a positive integer"),
        ({"l1": -0.1}, {}, SettingsError, "'l1': must be a number >= 0"),
        ({"augment": "zoom"}, {}, SettingsError, "unknown augmentation 'zoom'"),
        ({"lr": 0.1}, {"lr": 0.2}, SettingsError, "'lr' is given both in the hparams"),
        ({}, {"learning_rate": 0.1}, TypeError, "unknown setting 'learning_rate'"),
    ],
)
def test_bad_settings_say_which_key_and_what_to_do(hparams, kwargs, error, message):
    import fnmatch

    with pytest.raises(error) as info:
        fit(model, TRAIN, VAL, HParams(hparams), **kwargs)
    assert fnmatch.fnmatch(str(info.value), f"*{message}*"), str(info.value)


def test_bad_data_is_a_clear_error():
    with pytest.raises(TypeError, match="train must be an"):
        fit(model, "data.csv", VAL)
    with pytest.raises(ValueError, match="384 inputs but 10 labels"):
        fit(model, (X[:384], Y[:10]), VAL)
