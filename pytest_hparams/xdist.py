"""pytest-xdist in one place: who this process is, what the controller tells each worker, and
what workers send back: trial records, and which items an xdist chunk keeps together.

Workers attach their trial records to the test reports as plain JSON data (xdist's execnet
channel carries only built-in types), the controller collects them like any other report, so
one run gives one table and one results file however many workers or hosts trained. Every
value a worker needs from the controller travels in ``workerinput``, set by the one
``pytest_configure_node`` hook below from what the plugin's parts asked to send.

The controller does not collect: it learns the tests from the node ids each worker sends when
its collection finishes. When the controller's scheduler deals stacks in chunks
(``xdist_scheduling``), each worker names an item's chunk in that list, as a suffix, the way
xdist's own ``--dist loadgroup`` names an ``xdist_group``; unlike loadgroup's, the suffix is on
the ids of that one message only, never on the items, so reports, ``--lf``/``--sw`` cache keys,
the JSON and the tables keep the node ids of a run without xdist. Everything goes through
xdist's channel, so this works with ``--tx`` to other hosts as with ``-n``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest

from .trial import TrialResult

#: What the controller tells each worker: how many workers share that worker's host.
HOST_WORKERS = "hparams_host_workers"

#: What the controller tells each worker when its scheduler keeps xdist chunks together.
CHUNKS = "hparams_chunks"

_TO_WORKERS = pytest.StashKey[dict[str, Callable[[Any], Any]]]()
# A control character cannot come from a test's name or (escaped by pytest) a parameter id.
_CHUNK_SUFFIX = "\x1fhparams-chunk="
_CHUNK_ID = re.compile(re.escape(_CHUNK_SUFFIX) + r"([0-9]+)\Z")


def worker_id(config: pytest.Config) -> str | None:
    """``gw0``, ``gw1``... on an xdist worker; None in the controller or without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else None


def is_worker(config: pytest.Config) -> bool:
    """Whether this process is an xdist worker (tests run here, the controller reports)."""
    return hasattr(config, "workerinput")


def worker_count(config: pytest.Config) -> int:
    """How many workers xdist started for this run (on every host); 1 outside xdist."""
    workerinput = getattr(config, "workerinput", None)
    return int(workerinput.get("workercount") or 1) if workerinput else 1


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
        self.on_collection(decode_collection(ids)[0])


# --------------------------------------------------------------------------- xdist chunks


def encode_chunk(nodeid: str, chunk: str) -> str:
    """``nodeid`` as a worker lists it for the controller when the item is in xdist chunk
    ``chunk`` (digits)."""
    return f"{nodeid}{_CHUNK_SUFFIX}{chunk}"


def decode_collection(ids: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """A worker's collection as the controller received it: the node ids, and the chunk of
    each node id that is in one."""
    nodeids, chunks = [], {}
    for wire in ids:
        match = _CHUNK_ID.search(wire)
        nodeid = wire[:match.start()] if match else wire
        nodeids.append(nodeid)
        if match:
            chunks[nodeid] = match.group(1)
    return nodeids, chunks


class ChunkedCollection:
    """On a worker: the collection it sends the controller names each item's xdist chunk.

    ``plan`` maps the node ids of the items in chunks to their chunk (digits); it runs on the
    final collection (after ``-k``, ``--lf``, ``--sw``), on every worker alike. Only the message
    to the controller carries the names: the items keep their node ids (xdist's loadgroup
    renames its items instead, which pytest 9.2's structured node ids ignore). Without xdist's
    worker interactor to send through, ``plan`` is not called and nothing is chunked.
    """

    def __init__(self, plan: Callable[[list[pytest.Item]], Mapping[str, str]]) -> None:
        self.plan = plan

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> Any:
        interactor = _worker_interactor(session.config)
        if interactor is None:
            return (yield)
        chunks = self.plan(list(session.items))
        send = interactor.sendevent

        def sendevent(name: str, **kwargs: Any) -> None:
            if name == "collectionfinish":
                kwargs["ids"] = [encode_chunk(nodeid, chunks[nodeid]) if nodeid in chunks
                                 else nodeid for nodeid in kwargs["ids"]]
            send(name, **kwargs)

        interactor.sendevent = sendevent
        try:
            return (yield)
        finally:
            del interactor.sendevent  # the class's own again


def _worker_interactor(config: pytest.Config) -> Any:
    """xdist's plugin on a worker that sends events to the controller, or None."""
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "WorkerInteractor" and callable(
                getattr(plugin, "sendevent", None)):
            return plugin
    return None


def to_wire(trials: Iterable[TrialResult]) -> list[dict[str, Any]]:
    """Trial records as built-in types only (NaN kept), the form xdist's channel can carry."""
    return [json.loads(json.dumps(trial.to_dict(), default=str)) for trial in trials]
