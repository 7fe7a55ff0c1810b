"""The gate on real training, with seeds on demand: a digits module saved as the baseline
(8 seeds), then compared after a numerics-only change (another batch order: no alarm) and
after a planted bug that really costs accuracy (10 % of the training labels replaced at
random, about a point for the adam configuration and three for momentum: an alarm)."""

import pytest

pytest.importorskip("sklearn")

MODULE = """
import os
import pytest
import torch
from pytest_hparams import MLP, digits, fit

torch.set_num_threads(1)  # a small MLP: one thread is fastest on a shared machine
DATA = digits()


def training_data():
    inputs, labels = DATA.train
    if os.environ.get("BATCH_ORDER"):
        # A numerics-only change: the same examples in another order, so each seed draws
        # other batches (as a new data loader would); the model and its seeds are unchanged.
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
        inputs, labels = inputs[order], labels[order]
    if os.environ.get("PLANTED_BUG"):
        # A broken data pipeline: a tenth of the training labels replaced at random.
        generator = torch.Generator().manual_seed(0)
        index = torch.randperm(len(labels), generator=generator)[: len(labels) // 10]
        labels = labels.clone()
        labels[index] = torch.randint(0, 10, (len(index),), generator=generator)
    return inputs, labels


@pytest.mark.hparams(setup={"adam": ("adam", 3e-3), "momentum": ("momentum", 0.05)}, seeds=8)
def test_digits(hparams, hparams_device):
    optimizer, lr = hparams.setup
    fit(lambda: MLP(64, 10, hidden=32), training_data(), DATA.val, hparams,
        device=hparams_device, optimizer=optimizer, lr=lr, epochs=10, batch_size=32)
"""


def test_a_numerics_only_change_passes_and_a_planted_bug_is_caught(pytester, monkeypatch):
    for name in ("PLANTED_BUG", "BATCH_ORDER", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_digits=MODULE)
    args = ["-p", "no:cacheprovider", "--hparams-device=cpu", "--hparams-compare-seeds=3:8"]
    pytester.runpytest(*args, "--hparams-save=main").assert_outcomes(passed=2)

    monkeypatch.setenv("BATCH_ORDER", "1")
    unchanged = pytester.runpytest(*args, "--hparams-compare=main")
    unchanged.assert_outcomes(passed=2)
    assert unchanged.ret == 0
    unchanged.stdout.fnmatch_lines(["adam * paired *unchanged*", "momentum * paired *unchanged*",
                                    "passed (2 unchanged)"])

    monkeypatch.delenv("BATCH_ORDER")
    monkeypatch.setenv("PLANTED_BUG", "1")
    broken = pytester.runpytest(*args, "--hparams-compare=main")
    broken.assert_outcomes(failed=2)
    assert broken.ret == 1
    assert "hyperparameters changed" not in broken.stdout.str()
    broken.stdout.fnmatch_lines([
        "  seeds    on demand, looks at 3, 5, 8 seeds * stopped at * of 8: regressed",
    ])
    broken.stdout.fnmatch_lines([
        "FAILED test_digits.py::test_digits[[]setup=adam[]] - Failed: accuracy*",
        "FAILED test_digits.py::test_digits[[]setup=momentum[]] - Failed: accuracy*",
    ])
