"""Faults: out of memory, divergence, errors, Ctrl-C and kill -9 lose nothing that finished."""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch

from pytest_hparams import RunFile, SeedRun, TrialResult, fit, read_run
from pytest_hparams.runfile import atomic_write_text
from pytest_hparams.training import loop
from tests.conftest import written_trials

# One grid whose configurations each meet a different fault, in the model or the loss.
FAULTS = """
import pytest
import torch
from pytest_hparams import fit

torch.manual_seed(0)
X = torch.randn(64, 4)
Y = (X[:, 0] > 0).long()


class Faulty(torch.nn.Module):
    def __init__(self, fault):
        super().__init__()
        self.fault = fault
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        if self.fault == "oom" or (self.fault == "oom-seed-0" and torch.initial_seed() == 0):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.fault == "error":
            raise ValueError("shapes do not match: 3 vs 4")
        return self.linear(x)


def loss_for(fault):
    def loss(outputs, labels):
        value = torch.nn.functional.cross_entropy(outputs, labels)
        if fault == "nan":
            return value * float("nan")
        if fault == "inf":
            return value * 0 + float("inf")
        return value
    return loss


@pytest.mark.hparams(fault=["none", "oom", "oom-seed-0", "nan", "inf", "error", "after"],
                     seeds=2, epochs=3, vectorize=False)
def test_faults(hparams):
    # oom-seed-0 reads the global seed in forward(): only the sequential loop sets it per seed
    # (stacked training's own out-of-memory splitting is tested in test_vectorized.py). On the
    # marker, vectorize=False also lets xdist deal the items one by one rather than as a stack.
    fit(lambda: Faulty(hparams.fault), (X, Y), None, hparams, loss_fn=loss_for(hparams.fault),
        vectorize=False)
"""

STATUSES = {"none": "ok", "oom": "oom", "oom-seed-0": "oom", "nan": "diverged",
            "inf": "diverged", "error": "error", "after": "ok"}


def _trials(path: Path) -> dict[str, dict]:
    return {t["hparams"]["fault"]: t for t in written_trials(path)}


def _check_faults(result: pytest.RunResult, path: Path) -> None:
    result.assert_outcomes(passed=6, failed=1)
    trials = _trials(path)
    assert {fault: t["status"] for fault, t in trials.items()} == STATUSES
    # Every seed ran, the ones after an out-of-memory error or a divergence included; an
    # exception fails its test item at once, and the next configurations still run.
    assert {fault: len(t["runs"]) for fault, t in trials.items()} == {
        **dict.fromkeys(STATUSES, 2), "error": 1}
    oom = trials["oom"]["runs"][0]
    assert oom["reason"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert [r["status"] for r in trials["oom-seed-0"]["runs"]] == ["oom", "ok"]
    assert trials["oom-seed-0"]["runs"][1]["final"]["accuracy"] > 0
    assert trials["nan"]["runs"][0]["reason"].startswith("train_loss became nan at epoch 1")
    assert trials["inf"]["runs"][0]["reason"].startswith("train_loss became inf at epoch 1")
    assert trials["error"]["runs"][0]["reason"] == "ValueError: shapes do not match: 3 vs 4"
    assert trials["error"]["outcome"] == "failed"
    result.stdout.fnmatch_lines([
        "*hyperparameter comparison*",
        "* none *passed",
        "* oom *passed, oom [[]1[]]",
        "* oom-seed-0 *passed, oom [[]2[]]",
        "* nan *passed, diverged [[]3[]]",
        "* inf *passed, diverged [[]4[]]",
        "* error *failed, error [[]5[]]",
        "* after *passed",
        "[[]1[]] seed 0: oom: OutOfMemoryError: CUDA out of memory*; seed 1: oom: *",
        "[[]2[]] seed 0: oom: OutOfMemoryError: CUDA out of memory*",
        "[[]3[]] seed 0: diverged: train_loss became nan at epoch 1*",
        "[[]4[]] seed 0: diverged: train_loss became inf at epoch 1*",
        "[[]5[]] seed 0: error: ValueError: shapes do not match: 3 vs 4",
    ])


def test_each_fault_is_recorded_in_the_table_and_json_and_the_next_trials_run(pytester):
    pytester.makepyfile(test_faulty_grid=FAULTS)
    result = pytester.runpytest("--hparams-json", "run.json")
    _check_faults(result, pytester.path / "run.json")


def test_faults_are_recorded_the_same_way_on_xdist_workers(pytester):
    pytester.makepyfile(test_faulty_grid=FAULTS)
    # chunks of 2 runs (one configuration × 2 seeds): both workers get some of the grid
    result = pytester.runpytest("-n", "2", "--hparams-xdist-min-chunk=2", "--hparams-json",
                                "run.json")
    _check_faults(result, pytester.path / "run.json")
    assert {t["worker"] for t in _trials(pytester.path / "run.json").values()} == {"gw0", "gw1"}


class _OutOfMemory(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")


def test_fit_releases_the_failed_model_before_it_empties_the_cache(monkeypatch):
    models: list[weakref.ref] = []
    released: list[list[bool]] = []

    def build() -> torch.nn.Module:
        model = _OutOfMemory()
        models.append(weakref.ref(model))
        return model

    def release() -> None:
        gc.collect()
        released.append([ref() is None for ref in models])

    monkeypatch.setattr(loop, "free_accelerator_memory", release)
    data = (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    result = fit(build, data, seeds=[0, 1, 2], epochs=1)
    assert [run.status for run in result.runs] == ["oom", "oom", "oom"]
    assert len(models) == 3  # the stacked attempt built each seed's model once, and no more
    # Emptying the cache frees nothing while the model that ran out of memory is still held:
    # by the time seed i's memory is released, its model and every earlier seed's are gone
    # (later seeds' models, built by the stacked attempt, wait for their turn).
    assert len(released) == 3
    for i, snapshot in enumerate(released):
        assert all(snapshot[: i + 1]), (i, snapshot)


def test_an_out_of_memory_error_in_an_own_loop_is_oom_and_its_tensors_are_let_go(pytester):
    """pytest keeps a failure's traceback for post-mortem debugging until the next test is
    called; after an out-of-memory error that would hold the tensors that filled the GPU
    while the next test sets up."""
    pytester.makepyfile(
        """
        import gc
        import weakref
        import pytest
        import torch

        HELD = []

        @pytest.mark.hparams(n=[1])
        def test_own_loop(hparams, hparams_trial):
            for run in hparams_trial.runs():
                activations = torch.ones(1000)
                HELD.append(weakref.ref(activations))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

        @pytest.fixture
        def released():
            # Set up before the next test's call, when pytest would drop its own references.
            gc.collect()
            return bool(HELD) and HELD[0]() is None

        def test_next(released):
            assert released, "the failed test's tensors were still alive after it"
        """
    )
    # In a process of its own: an in-process pytester run keeps every hook call's exception.
    result = pytester.runpytest_subprocess("--hparams-json", "run.json")
    result.assert_outcomes(passed=1, failed=1)
    trial = written_trials(pytester.path / "run.json")[0]
    assert trial["status"] == "oom"
    assert "OutOfMemoryError: CUDA out of memory" in trial["runs"][0]["reason"]


# --------------------------------------------------------------------------- Ctrl-C

INTERRUPTED = """
import pathlib
import time
import pytest
import torch
from pytest_hparams import fit

X = torch.randn(32, 4)
Y = (X[:, 0] > 0).long()


@pytest.mark.hparams(n=[0, 1, 2, 3, 4], epochs=1)
def test_grid(hparams):
    if hparams.n == 3:
        {action}
    fit(lambda: torch.nn.Linear(4, 2), (X, Y), None, hparams)
"""


def _finished(path: Path) -> list[int]:
    return [t.hparams["n"] for t in read_run(path).trials]


def test_keyboard_interrupt_keeps_every_finished_trial_and_prints_their_table(pytester):
    pytester.makepyfile(INTERRUPTED.format(action="raise KeyboardInterrupt"))
    result = pytester.runpytest_inprocess("--hparams-json", "run.json", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert _finished(pytester.path / "run.json") == [0, 1, 2]
    result.stdout.fnmatch_lines([
        "*hyperparameter comparison*", "*3 configurations × 1 seed*",
        "* 0 *passed", "* 1 *passed", "* 2 *passed", "hparams: wrote run.json",
        "*KeyboardInterrupt*",
    ])
    table = result.stdout.str().split("hyperparameter comparison")[1]
    assert [line.lstrip(" *").split()[0] for line in table.splitlines()
            if line.strip().endswith("passed")
            ] == ["0", "1", "2"]


SLEEPY = """
import pathlib
import time
import pytest
import torch
from pytest_hparams import fit

X = torch.randn(32, 4)
Y = (X[:, 0] > 0).long()


@pytest.mark.hparams(n=list(range(8)), epochs=1)
def test_grid(hparams):
    if hparams.n >= 6:  # the last two train "for long": Ctrl-C comes while they run
        pathlib.Path(f"running-{hparams.n}").touch()
        time.sleep(120)
    fit(lambda: torch.nn.Linear(4, 2), (X, Y), None, hparams)
"""


def _default_sigint() -> None:
    """A terminal's program reacts to Ctrl-C; one started in the background by a
    non-interactive shell (as CI may run this suite) inherits SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_ctrl_c_to_a_running_pytest_finds_every_finished_trial_already_on_disk(pytester,
                                                                               workers):
    pytester.makepyfile(SLEEPY)
    path = pytester.path / "run.json"
    finished = [0, 1, 2, 3, 4, 5]
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hparams-json", str(path),
         *workers],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, for the Ctrl-C of a terminal
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 120
        running = pytester.path / "running-6"
        while not running.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.exists(), "the run never reached the seventh configuration"
        # While the last ones train, the finished trials reach the disk (at once, or a moment
        # later when rewriting is throttled), before any interrupt.
        while not (path.exists() and _finished(path) == finished) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _finished(path) == finished
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert _finished(path) == finished
    assert "KeyboardInterrupt" in output
    table = output[output.index("hyperparameter comparison"):]
    assert "6 configurations × 1 seed" in table
    assert [line.lstrip(" *").split()[0] for line in table.splitlines()
            if line.strip().endswith("passed")] == [str(n) for n in finished]


# --------------------------------------------------------------------------- kill -9


def _versions(count: int) -> list[str]:
    """Run files of 1..count trials, each a few hundred kilobytes, so that writes take time."""
    texts = []
    for size in range(1, count + 1):
        trials = []
        for index in range(size):
            history = [{"epoch": e, "loss": 1.0 / e, "accuracy": e / 400} for e in range(1, 400)]
            run = SeedRun(seed=0, final={"accuracy": index / 10}, history=history, epochs=399)
            trials.append(TrialResult(nodeid=f"t.py::test[n={index}]", test="t.py::test",
                                      config_id=f"n={index}", hparams={"n": index}, runs=[run]))
        texts.append(RunFile(trials, created="2024-01-01T00:00:00+00:00").to_json())
    return texts


def _write_forever(path: str, texts: list[str]) -> None:
    while True:
        for text in texts:
            atomic_write_text(path, text)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a writer to kill")
def test_kill_9_during_writes_never_leaves_a_torn_results_file(tmp_path):
    texts = _versions(6)
    path = tmp_path / "run.json"
    rng = random.Random(0)
    context = multiprocessing.get_context("fork")
    read_back, killed_mid_write = 0, 0
    for _ in range(40):
        writer = context.Process(target=_write_forever, args=(str(path), texts), daemon=True)
        writer.start()
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        leftovers = list(tmp_path.glob(".run.json.*.tmp"))
        killed_mid_write += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        if path.exists():
            text = path.read_text(encoding="utf-8")
            assert text in texts, "a results file that is not one complete version"
            run = read_run(path)
            assert [t.config_id for t in run.trials] == [f"n={i}" for i in range(len(run.trials))]
            read_back += 1
    assert read_back > 0
    # The kills really landed inside writes: their temporary files were left behind.
    assert killed_mid_write > 0
