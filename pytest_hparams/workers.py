"""pytest-xdist: who this process is, its device and threads, and trials sent to the controller.

Workers attach their trial records to the test reports as plain JSON data (xdist's execnet
channel carries only built-in types), the controller collects them like any other report, so
one run gives one table and one results file however many workers or hosts trained.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from .devices import (
    DeviceUnavailable,
    cpu_cores,
    device_for_worker,
    parse_devices,
    resolve_device,
    torch_threads,
)
from .session import HParamsSession
from .trial import TrialResult

#: What the controller tells each worker: how many workers share that worker's host.
HOST_WORKERS = "hparams_host_workers"


def worker_id(config: pytest.Config) -> str | None:
    """``gw0``, ``gw1``... on an xdist worker; None in the controller or without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else None


def planned_workers(config: pytest.Config) -> list[str]:
    """The execnet specs of the workers the controller will start (``-n``, ``--tx``); [] when
    tests run in this process."""
    distributed = config.getoption("dist", "no") != "no" and config.getoption("tx", None)
    if worker_id(config) is not None or not distributed or config.getoption("collectonly"):
        return []
    from xdist.workermanage import parse_tx_spec_config

    return parse_tx_spec_config(config)


def host_of(spec: str) -> str:
    """Which machine an execnet spec runs on: ``popen`` here, ``ssh=h`` on h, ``socket=a`` at a."""
    import execnet

    xspec = execnet.XSpec(spec)
    for key in ("via", "ssh", "socket", "vagrant_ssh"):
        value = getattr(xspec, key, None)
        if value:
            return f"{key}={value}"
    return "local"


def workers_on_host(config: pytest.Config) -> int:
    """How many processes train on this process's host: 1 outside xdist."""
    workerinput = getattr(config, "workerinput", None)
    if not workerinput:
        return 1
    return int(workerinput.get(HOST_WORKERS) or workerinput.get("workercount") or 1)


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its device, and why that device cannot be used (a worker's
    tests then fail with that message)."""

    device: torch.device
    problem: str | None = None


def place_process(config: pytest.Config) -> Placement:
    """Choose this process's device (``--hparams-devices`` round-robin by worker index, else
    ``--hparams-device``) and set its torch threads (``--hparams-threads``).

    An unusable device is a pytest.UsageError naming the option, checked where the tests run:
    in this process, or by the controller for workers on this host. A worker on another host
    records the problem instead of crashing, and ``WorkerHooks`` fails its tests with it.
    """
    devices_spec = config.getoption("hparams_devices")
    device_spec = config.getoption("hparams_device")
    if devices_spec and device_spec:
        raise pytest.UsageError(
            "--hparams-device and --hparams-devices both given: use --hparams-devices to deal "
            "devices to xdist workers, or --hparams-device for one device"
        )
    threads = torch_threads(config.getoption("hparams_threads"), workers_on_host(config))
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    try:
        if devices_spec:
            device = device_for_worker(parse_devices(devices_spec), worker_id(config))
        else:
            device = resolve_device(device_spec or config.getini("hparams_device"))
    except DeviceUnavailable as exc:
        option = "--hparams-devices" if devices_spec else "--hparams-device"
        if worker_id(config) is not None:
            problem = f"{option} on xdist worker {worker_id(config)}: {exc}"
            return Placement(torch.device("cpu"), problem)
        if all(host_of(spec) == "local" for spec in planned_workers(config)):
            raise pytest.UsageError(f"{option}: {exc}") from None
        # Remote workers have devices of their own; each checks its own.
        device = torch.device("cpu")
    return Placement(device)


class WorkerHooks:
    """Fails every test of a worker whose device cannot be used, with the reason."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        pytest.fail(self.problem, pytrace=False)


def describe_workers(config: pytest.Config, device: torch.device) -> str | None:
    """The report header's line on xdist workers: how many, their devices and torch threads;
    None when tests run in this process (whose ``device`` is given)."""
    specs = planned_workers(config)
    if not specs:
        return None
    local = sum(host_of(spec) == "local" for spec in specs)
    parts = [f"{len(specs)} xdist worker{'s' if len(specs) != 1 else ''}"]
    devices_spec = config.getoption("hparams_devices")
    if not devices_spec:
        parts.append(f"device {device}")
    else:
        try:
            devices = parse_devices(devices_spec)
        except DeviceUnavailable:
            parts.append(f"devices {devices_spec} dealt round-robin")
        else:
            dealt = ", ".join(f"gw{i} {device_for_worker(devices, f'gw{i}')}"
                              for i in range(len(specs)))
            parts.append(f"devices {dealt}")
    choice = config.getoption("hparams_threads")
    if local:
        threads = torch_threads(choice, local)
        if threads is None:
            parts.append("torch threads: torch's default in each worker")
        elif isinstance(choice, int):
            parts.append(f"{threads} torch thread{'s' if threads != 1 else ''} per worker")
        else:
            parts.append(f"{threads} torch thread{'s' if threads != 1 else ''} per worker "
                         f"({cpu_cores()} cores ÷ {local} local workers)")
    return f"torch {torch.__version__}, " + ", ".join(parts)


class ControllerHooks:
    """xdist hooks of the controller: tell each worker how many workers share its host, and
    keep the collection order so that rows come out as they would without xdist."""

    def __init__(self, specs: list[str], session: HParamsSession) -> None:
        self.hosts = [host_of(spec) for spec in specs]
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        host = host_of(str(node.gateway.spec))
        node.workerinput[HOST_WORKERS] = max(1, self.hosts.count(host))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.session.set_collection_order(list(ids))


def to_wire(trials: Iterable[TrialResult]) -> list[dict[str, Any]]:
    """Trial records as built-in types only (NaN kept), the form xdist's channel can carry."""
    return [json.loads(json.dumps(trial.to_dict(), default=str)) for trial in trials]
