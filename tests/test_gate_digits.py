"""The gate on real training: a digits module unchanged (other seeds: no alarm), then with a
planted bug that really costs accuracy (an alarm)."""

import pytest

pytest.importorskip("sklearn")

MODULE = """
import os
import pytest
import torch
from pytest_hparams import MLP, digits, fit

torch.set_num_threads(1)  # a small MLP: one thread is fastest on a shared machine
DATA = digits()
FIRST_SEED = int(os.environ.get("FIRST_SEED", "0"))


def training_data():
    inputs, labels = DATA.train
    if os.environ.get("PLANTED_BUG"):
        # A broken data pipeline: a third of the training labels replaced at random.
        generator = torch.Generator().manual_seed(0)
        index = torch.randperm(len(labels), generator=generator)[: len(labels) // 3]
        labels = labels.clone()
        labels[index] = torch.randint(0, 10, (len(index),), generator=generator)
    return inputs, labels


@pytest.mark.hparams(setup={"adam": ("adam", 3e-3), "momentum": ("momentum", 0.05)},
                     seeds=list(range(FIRST_SEED, FIRST_SEED + 5)))
def test_digits(hparams, hparams_device):
    optimizer, lr = hparams.setup
    fit(lambda: MLP(64, 10, hidden=32), training_data(), DATA.val, hparams,
        device=hparams_device, optimizer=optimizer, lr=lr, epochs=10, batch_size=32)
"""


def test_unchanged_passes_and_a_planted_bug_is_caught(pytester, monkeypatch):
    monkeypatch.delenv("PLANTED_BUG", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makepyfile(test_digits=MODULE)
    args = ["-p", "no:cacheprovider", "--hparams-device=cpu"]
    pytester.runpytest(*args, "--hparams-save=main").assert_outcomes(passed=2)

    # The same code trained with five other seeds: seed noise only.
    monkeypatch.setenv("FIRST_SEED", "5")
    unchanged = pytester.runpytest(*args, "--hparams-compare=main")
    unchanged.assert_outcomes(passed=2)
    assert "REGRESSED" not in unchanged.stdout.str()

    monkeypatch.setenv("PLANTED_BUG", "1")
    broken = pytester.runpytest(*args, "--hparams-compare=main")
    broken.assert_outcomes(failed=2)
    assert broken.ret == 1
    assert "hyperparameters changed" not in broken.stdout.str()
    broken.stdout.fnmatch_lines([
        "FAILED test_digits.py::test_digits[[]setup=adam[]] - Failed: accuracy*",
        "FAILED test_digits.py::test_digits[[]setup=momentum[]] - Failed: accuracy*",
    ])
