"""StackedOptimizer: each row steps exactly as its own torch.optim optimiser would."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_hparams import SettingsError
from pytest_hparams.settings import TrainSettings
from pytest_hparams.training.optim import RowSettings, StackedOptimizer

SHAPES = [(6, 5), (6,), (2, 3, 3)]
STEPS = 6


Params = list[torch.Tensor]


def _train_both(rows: list[TrainSettings], steps: int = STEPS, seed: int = 0,
                none_grad: int | None = None) -> tuple[Params, list[Params]]:
    """Step the stacked rows and, separately, one torch.optim optimiser per row, on the same
    gradients and per-epoch learning rates (two steps an epoch)."""
    k = len(rows)
    generator = torch.Generator().manual_seed(seed)
    start = [torch.randn(k, *shape, generator=generator) for shape in SHAPES]
    grads = [[torch.randn(k, *shape, generator=generator) for shape in SHAPES]
             for _ in range(steps)]
    stacked = [p.clone() for p in start]
    optimizer = StackedOptimizer(stacked, [RowSettings.of(r) for r in rows])
    for step in range(steps):
        step_grads = [None if i == none_grad else g.clone() for i, g in enumerate(grads[step])]
        optimizer.step(step_grads, [r.lr_at(step // 2) for r in rows])
    expected = []
    for row, config in enumerate(rows):
        params = [torch.nn.Parameter(p[row].clone()) for p in start]
        reference = config.make_optimizer(params)
        for step in range(steps):
            for group in reference.param_groups:
                group["lr"] = config.lr_at(step // 2)
            for i, (param, grad) in enumerate(zip(params, grads[step], strict=True)):
                param.grad = None if i == none_grad else grad[row].clone()
            reference.step()
        expected.append([p.detach() for p in params])
    return stacked, expected


def _assert_rows_match(stacked: list[torch.Tensor], expected: list[list[torch.Tensor]]) -> None:
    for row, params in enumerate(expected):
        for mine, theirs in zip(stacked, params, strict=True):
            torch.testing.assert_close(mine[row], theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rows", [
    [TrainSettings(optimizer="sgd", lr=0.1), TrainSettings(optimizer="sgd", lr=0.01,
                                                             weight_decay=0.1)],
    [TrainSettings(optimizer="momentum", lr=0.1), TrainSettings(optimizer="sgd", lr=0.05),
     TrainSettings(optimizer="nesterov", lr=0.1, momentum=0.5, weight_decay=1e-3)],
    [TrainSettings(optimizer="adam"), TrainSettings(optimizer="adam", lr=1e-2, weight_decay=0.1),
     TrainSettings(optimizer="adamw", lr=3e-3, betas=(0.8, 0.99)),
     TrainSettings(optimizer="adamw", weight_decay=0.3, schedule="step", epochs=3)],
    [TrainSettings(optimizer="rmsprop"),
     TrainSettings(optimizer="rmsprop", lr=1e-2, momentum=0.9, weight_decay=0.01)],
    [TrainSettings(optimizer="rmsprop", momentum=0.5)],
], ids=["sgd", "momentum-nesterov", "adam-adamw", "rmsprop-mixed", "rmsprop-momentum"])
def test_each_family_matches_torch_optim(rows):
    _assert_rows_match(*_train_both(rows))


_FAMILY = {
    "sgd": st.sampled_from(["sgd", "momentum", "nesterov"]),
    "adam": st.sampled_from(["adam", "adamw"]),
    "rmsprop": st.just("rmsprop"),
}


@st.composite
def _rows(draw):
    family = draw(st.sampled_from(sorted(_FAMILY)))
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        optimizer = draw(_FAMILY[family])
        momentum = draw(st.sampled_from([None, 0.0, 0.5, 0.9, 0.99]))
        if optimizer == "nesterov" and momentum == 0.0:
            momentum = 0.9  # torch refuses Nesterov without momentum
        rows.append(TrainSettings(
            optimizer=optimizer,
            lr=draw(st.floats(1e-4, 0.5)),
            momentum=momentum,
            weight_decay=draw(st.sampled_from([None, 0.0, 1e-4, 0.05])),
            schedule=draw(st.sampled_from(["none", "step", "exponential", "cosine"])),
            betas=draw(st.sampled_from([None, (0.8, 0.99), (0.5, 0.9)])),
            epochs=3,
        ))
    return rows


@settings(max_examples=40)
@given(rows=_rows(), seed=st.integers(0, 2**16))
def test_any_rows_of_one_family_match_torch_optim(rows, seed):
    _assert_rows_match(*_train_both(rows, seed=seed))


def test_a_parameter_without_gradient_stays_put():
    rows = [TrainSettings(optimizer="adam"), TrainSettings(optimizer="adamw", lr=1e-2)]
    stacked, expected = _train_both(rows, none_grad=1)
    _assert_rows_match(stacked, expected)


def test_rows_that_leave_do_not_change_the_others():
    rows = [TrainSettings(optimizer="momentum", lr=0.1), TrainSettings(optimizer="sgd", lr=0.2),
            TrainSettings(optimizer="nesterov", lr=0.05)]
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(3, 4, generator=generator)
    grads = [torch.randn(3, 4, generator=generator) for _ in range(4)]
    param = start.clone()
    optimizer = StackedOptimizer([param], [RowSettings.of(r) for r in rows])
    for grad in grads[:2]:
        optimizer.step([grad.clone()], [r.lr for r in rows])
    keep = torch.tensor([0, 2])
    param = param[keep]
    optimizer.keep(keep, [param])
    for grad in grads[2:]:
        optimizer.step([grad[keep].clone()], [rows[0].lr, rows[2].lr])
    for position, row in enumerate([0, 2]):
        alone = start[row:row + 1].clone()
        single = StackedOptimizer([alone], [RowSettings.of(rows[row])])
        for grad in grads:
            single.step([grad[row:row + 1].clone()], [rows[row].lr])
        assert torch.equal(param[position], alone[0])


def test_one_stack_takes_one_family():
    with pytest.raises(ValueError, match="one family"):
        StackedOptimizer([torch.zeros(2, 3)], [RowSettings("sgd"), RowSettings("adam")])


@pytest.mark.parametrize("betas", [0.9, (0.9,), (0.9, 1.0), ("a", 0.9)])
def test_betas_must_be_a_pair_below_one(betas):
    with pytest.raises(SettingsError, match="hparams key 'betas': must be a pair of numbers"):
        TrainSettings.resolve({"betas": betas}, {})
