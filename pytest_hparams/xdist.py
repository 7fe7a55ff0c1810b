"""pytest-xdist in one place: who this process is, what the controller tells each worker, and
trial records on their way to the controller.

Workers attach their trial records to the test reports as plain JSON data (xdist's execnet
channel carries only built-in types), the controller collects them like any other report, so
one run gives one table and one results file however many workers or hosts trained. Every
value a worker needs from the controller travels in ``workerinput``, set by the one
``pytest_configure_node`` hook below from what the plugin's parts asked to send.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from .trial import TrialResult

#: What the controller tells each worker: how many workers share that worker's host.
HOST_WORKERS = "hparams_host_workers"

_TO_WORKERS = pytest.StashKey[dict[str, Callable[[Any], Any]]]()


def worker_id(config: pytest.Config) -> str | None:
    """``gw0``, ``gw1``... on an xdist worker; None in the controller or without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else None


def is_worker(config: pytest.Config) -> bool:
    """Whether this process is an xdist worker (tests run here, the controller reports)."""
    return hasattr(config, "workerinput")


def from_controller(config: pytest.Config, key: str, default: Any = None) -> Any:
    """A value the controller sent this worker with ``send_to_workers``; ``default`` in the
    controller, without xdist, or when it sent nothing under ``key``."""
    workerinput = getattr(config, "workerinput", None)
    return workerinput.get(key, default) if workerinput else default


def send_to_workers(config: pytest.Config, key: str, value: Callable[[Any], Any]) -> None:
    """Have each worker receive ``value(node)`` under ``key`` (node: xdist's WorkerController)."""
    config.stash.setdefault(_TO_WORKERS, {})[key] = value


def planned_workers(config: pytest.Config) -> list[str]:
    """The execnet specs of the workers the controller will start (``-n``, ``--tx``); [] when
    tests run in this process."""
    distributed = config.getoption("dist", "no") != "no" and config.getoption("tx", None)
    if is_worker(config) or not distributed or config.getoption("collectonly"):
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


class ControllerHooks:
    """The controller's xdist hooks: what each worker is told, and the collection order, so that
    rows come out as they would without xdist."""

    def __init__(self, config: pytest.Config, specs: list[str],
                 on_collection: Callable[[list[str]], None]) -> None:
        self.config = config
        self.hosts = [host_of(spec) for spec in specs]
        self.on_collection = on_collection
        send_to_workers(config, HOST_WORKERS, self._workers_on_host)

    def _workers_on_host(self, node: Any) -> int:
        return max(1, self.hosts.count(host_of(str(node.gateway.spec))))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        for key, value in self.config.stash.get(_TO_WORKERS, {}).items():
            node.workerinput[key] = value(node)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.on_collection(list(ids))


def to_wire(trials: Iterable[TrialResult]) -> list[dict[str, Any]]:
    """Trial records as built-in types only (NaN kept), the form xdist's channel can carry."""
    return [json.loads(json.dumps(trial.to_dict(), default=str)) for trial in trials]
