"""Device lists, their round-robin assignment to xdist workers, and torch thread budgets."""

from __future__ import annotations

import pytest
import torch

from pytest_hparams import devices
from pytest_hparams.devices import (
    DeviceUnavailable,
    device_for_worker,
    parse_devices,
    parse_threads,
    thread_budget,
    torch_threads,
    worker_index,
)
from pytest_hparams.xdist import HOST_WORKERS, ControllerHooks, host_of, to_wire


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def test_auto_is_every_visible_gpu(two_gpus):
    assert parse_devices("auto") == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert parse_devices(" AUTO ") == [torch.device("cuda", 0), torch.device("cuda", 1)]


def test_auto_without_a_gpu_is_the_auto_device(no_gpu):
    assert parse_devices("auto") == [torch.device("cpu")]


def test_a_list_is_checked_entry_by_entry(two_gpus):
    assert parse_devices("cuda:1, cuda:0,cpu") == [torch.device("cuda", 1),
                                                  torch.device("cuda", 0), torch.device("cpu")]
    with pytest.raises(DeviceUnavailable, match=r"'cuda:2' is not available: this machine has "
                                                r"2 CUDA device\(s\), cuda:0..cuda:1"):
        parse_devices("cuda:0,cuda:2")
    for text in ("", "cuda:0,", ",", "cuda:0,,cuda:1"):
        with pytest.raises(DeviceUnavailable, match="is not a list of devices"):
            parse_devices(text)


def test_without_gpus_a_cuda_entry_is_unavailable(no_gpu):
    with pytest.raises(DeviceUnavailable, match="'cuda:0' is not available"):
        parse_devices("cuda:0,cuda:1")


def test_workers_get_devices_round_robin_by_index(two_gpus):
    listed = parse_devices("cuda:0,cuda:1")
    dealt = [str(device_for_worker(listed, f"gw{i}")) for i in range(5)]
    assert dealt == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert device_for_worker(listed, None) == torch.device("cuda", 0)  # no xdist: worker 0
    assert [worker_index(w) for w in ("gw0", "gw12", None, "", "master")] == [0, 12, 0, 0, 0]
    with pytest.raises(ValueError, match="at least one device"):
        device_for_worker([], "gw0")


@pytest.mark.parametrize(("cores", "workers", "budget"),
                         [(2, 2, 1), (2, 3, 1), (2, 1, 2), (16, 4, 4), (16, 3, 5), (1, 8, 1),
                          (8, 0, 8)])
def test_the_thread_budget_is_cores_over_workers_and_at_least_one(cores, workers, budget):
    assert thread_budget(workers, cores) == budget


def test_thread_choices():
    assert [parse_threads(t) for t in ("auto", "OFF", "4", " 1 ")] == ["auto", "off", 4, 1]
    for text in ("0", "-1", "2.5", "many", ""):
        with pytest.raises(ValueError, match="is not a thread count"):
            parse_threads(text)
    # a lone process on a quiet machine keeps torch's own default
    assert torch_threads("auto", 1, default=2, busy=0.0)[0] is None
    assert torch_threads("auto", 2, default=2)[0] == thread_budget(2)
    assert torch_threads("off", 4, default=2)[0] is None
    assert torch_threads(3, 1, default=2)[0] == torch_threads(3, 8, default=2)[0] == 3


@pytest.mark.parametrize(("busy", "expected"), [(0.0, None), (0.4, None), (0.6, 1), (1.0, 1),
                                               (5.0, 1)])
def test_a_lone_process_takes_only_the_cores_others_leave_free(monkeypatch, busy, expected):
    monkeypatch.setattr(devices, "cpu_cores", lambda: 2)
    threads, why = torch_threads("auto", 1, default=2, busy=busy)
    assert threads == expected
    assert f"load average {busy:.1f} on 2 cores" in why


def test_hosts_of_execnet_specs():
    assert host_of("popen") == "local"
    assert host_of("popen//python=/usr/bin/python3.11") == "local"
    assert host_of("execmodel=main_thread_only//popen") == "local"
    assert host_of("ssh=gpu-box//python=python3") == "ssh=gpu-box"
    assert host_of("socket=10.0.0.2:8888") == "socket=10.0.0.2:8888"
    assert host_of("popen//via=gw0") == "via=gw0"


class _Node:
    def __init__(self, spec: str) -> None:
        import execnet

        self.gateway = type("Gateway", (), {"spec": execnet.XSpec(spec)})()
        self.workerinput: dict = {}


def test_each_worker_learns_how_many_workers_share_its_host(pytestconfig):
    specs = ["popen", "popen", "ssh=a", "ssh=a", "ssh=a", "ssh=b"]
    hooks = ControllerHooks(pytestconfig, specs, on_collection=lambda ids: None)
    counts = []
    for spec in specs:
        node = _Node(f"execmodel=main_thread_only//{spec}")
        hooks.pytest_configure_node(node)
        counts.append(node.workerinput[HOST_WORKERS])
    assert counts == [2, 2, 3, 3, 3, 1]


def test_trials_on_the_wire_are_built_in_types_with_nan_kept():
    import math

    import numpy as np

    from pytest_hparams import SeedRun, TrialResult

    trial = TrialResult(nodeid="t::x", hparams={"lr": np.float64(0.1), "n": np.int64(3)},
                        runs=[SeedRun(0, final={"loss": math.nan, "accuracy": 0.5}),
                              SeedRun(1, final={"loss": 1.0, "accuracy": 0.7})])
    (wire,) = to_wire([trial])

    def builtin(value):
        if isinstance(value, dict):
            return all(type(k) is str and builtin(v) for k, v in value.items())
        if isinstance(value, list):
            return all(builtin(v) for v in value)
        return value is None or type(value) in (str, int, float, bool)

    assert builtin(wire)
    assert wire["hparams"] == {"lr": 0.1, "n": 3}
    assert math.isnan(wire["runs"][0]["final"]["loss"])
    assert TrialResult.from_dict(wire).metric("accuracy").mean == pytest.approx(0.6)
