"""Helpers that several test files share: trial records built by hand, run files on disk.

Import them with ``from tests.conftest import ...`` (``tests`` is a package, so this conftest
is ``tests.conftest`` and never confused with the repository's top-level ``conftest.py``, which
registers ``pytester`` and the hypothesis profiles).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pytest_hparams import RunFile, SeedRun, TrialResult, read_run, write_run


def seed_runs(finals: Iterable[Mapping[str, float]], **fields: Any) -> list[SeedRun]:
    """One run per seed 0, 1, ... ending with these final metrics; ``fields`` go to every run."""
    return [SeedRun(seed=seed, final=dict(final), **fields) for seed, final in enumerate(finals)]


def lr_trial(runs: list[SeedRun], *, lr: float = 0.1, test: str = "t.py::test_lr",
             **fields: Any) -> TrialResult:
    """Configuration ``lr=<lr>`` of ``test`` as the plugin records it (node id, configuration
    id, hyperparameters, axis); ``fields`` override or add to those."""
    record: dict[str, Any] = {"nodeid": f"{test}[lr={lr}]", "test": test,
                              "config_id": f"lr={lr}", "hparams": {"lr": lr}, "axes": ["lr"]}
    return TrialResult(**{**record, **fields}, runs=runs)


def write_run_file(path: Path, trials: list[TrialResult], **fields: Any) -> Path:
    """Write ``trials`` as a run file (``fields`` to ``RunFile``); return its path."""
    write_run(path, RunFile(trials, **fields))
    return path


def written_trials(path: Path) -> list[dict[str, Any]]:
    """The trials of a run file as the JSON holds them (what ``--hparams-json`` wrote)."""
    return json.loads(Path(path).read_text())["trials"]


@functools.cache
def paths_run_the_same_kernels() -> bool:
    """Whether, on this machine and at this thread count, ``fit``'s vectorised path gives the
    very bits of the sequential loop: a small canary trained both ways and compared exactly.

    They differ only where the math library runs other kernels for a batched product (what
    ``vmap`` runs for a stack of models) than for single ones (seen on an AVX-512 AMD EPYC with
    MKL: parameters 3e-8 apart after one epoch; ``MKL_CBWR=COMPATIBLE`` makes them agree). Tests
    then compare within ``PATH_TOLERANCE`` instead of bit for bit: the canary detects the
    same-kernel case rather than assuming it."""
    import torch

    from pytest_hparams import MLP, HParams, TrialRecorder, TrialResult, digits, fit
    from pytest_hparams.recording import recording_into

    data = digits()
    train = (data.train[0][:256], data.train[1][:256])
    trained = []
    for vectorize in (False, True):
        built: list[torch.nn.Module] = []

        def build(hparams: Any, built: list[torch.nn.Module] = built) -> torch.nn.Module:
            built.append(MLP(data.features, data.classes, 32))
            return built[-1]

        with recording_into(TrialRecorder(TrialResult(seeds=[0, 1]))):
            fit(build, train, data.val, HParams({"lr": 0.1, "optimizer": "sgd"}, seeds=(0, 1)),
                epochs=1, vectorize=vectorize)
        trained.append([list(net.state_dict().values()) for net in built])
    return all(torch.equal(a, b) for left, right in zip(*trained, strict=True)
               for a, b in zip(left, right, strict=True))


#: How far the vectorised and sequential paths may drift apart where the kernels differ: the
#: README's "equal within a stated tolerance" (relative, absolute).
PATH_TOLERANCE = (1e-4, 1e-5)


def assert_same_numbers(left: Any, right: Any) -> None:
    """``left == right`` bit for bit where both paths run the same kernels, else every float
    within ``PATH_TOLERANCE`` and everything else (statuses, epochs, seeds) equal."""
    if paths_run_the_same_kernels():
        assert left == right
        return
    _assert_close(left, right, "")


def _assert_close(left: Any, right: Any, where: str) -> None:
    import pytest

    if isinstance(left, Mapping):
        assert isinstance(right, Mapping) and set(left) == set(right), where
        for key in left:
            _assert_close(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, (list, tuple)):
        assert isinstance(right, (list, tuple)) and len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            _assert_close(a, b, f"{where}[{index}]")
    elif isinstance(left, float) and not isinstance(left, bool):
        rel, abs_ = PATH_TOLERANCE
        assert right == pytest.approx(left, rel=rel, abs=abs_, nan_ok=True), where
    else:
        assert left == right, where


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (keys and indices) into a JSON document, the document itself first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*prefix, index))


def run_with_json(pytester: Any, *args: str, subprocess: bool = False) -> tuple[Any, dict]:
    """Run pytest with ``--hparams-json`` into a fresh file; return the outcome and every
    trial, by node id, read back from it ({} when nothing was written)."""
    path = pytester.path / f"run{len(list(pytester.path.glob('run*.json')))}.json"
    run = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    outcome = run("-p", "no:randomly", f"--hparams-json={path}", *args)
    trials = {t.nodeid: t for t in read_run(path).trials} if path.exists() else {}
    return outcome, trials
