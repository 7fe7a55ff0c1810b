"""pytest-xdist schedulers that send each xdist chunk of a vectorised stack whole to one worker.

``pytest_xdist_make_scheduler`` returns, for ``--dist`` load, loadscope, loadfile, loadgroup
and worksteal, a subclass of xdist's own scheduler for that mode. Each worker names the chunk of
every item in one when it sends its collection (``xdist.ChunkedCollection``); the scheduler
reads the names back (``xdist.decode_collection``), so what it keeps and reports (a crashed
worker's item, say) carries the items' real node ids. Only ``pytest_xdist_node_collection_
finished``, which xdist calls with the ids as they came, sees the names (this plugin's own
implementation reads them back too). A chunk is one unit of work: the load modes send it whole
where they would send its first item, worksteal steals only whole chunks that have not started,
and the scope modes make it a scope of its own. Every other item is scheduled as the mode
schedules it. ``each`` and ``no`` are left to xdist.

The controller tells its workers to name chunks (``xdist.CHUNKS``, sent with
``send_to_workers``) only when this plugin's scheduler hook is the one xdist will call first,
so a worker never names chunks for a scheduler that would not read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from xdist.scheduler import (
    LoadFileScheduling,
    LoadGroupScheduling,
    LoadScheduling,
    LoadScopeScheduling,
    WorkStealingScheduling,
)
from xdist.scheduler.worksteal import MIN_PENDING, NodePending

from .xdist import CHUNKS, decode_collection, send_to_workers

#: A scope no real one can equal: real scopes are node id prefixes or xdist_group names.
_SCOPE = "\x1fhparams-chunk="


class _Chunks:
    """The chunks the workers named, checked to be the same on every worker."""

    def __init__(self) -> None:
        self.per_node: dict[Any, dict[str, str]] = {}
        self.of: dict[str, str] = {}  # node id -> chunk, once scheduling starts

    def received(self, node: Any, collection: Sequence[str]) -> list[str]:
        """The node ids of a worker's collection; remembers the chunks it named."""
        nodeids, chunks = decode_collection(collection)
        self.per_node[node] = chunks
        return nodeids

    def settle(self, log: Any) -> None:
        """Fix the chunks when scheduling starts. Workers that disagree (another version of
        the plugin on a host) leave every item unchunked: results stay the same (a row does
        not depend on its stack-mates), but a worker may train chunk-mates that run elsewhere."""
        plans = list(self.per_node.values())
        if plans and all(plan == plans[0] for plan in plans):
            self.of = plans[0]
        else:
            log("workers named different hparams chunks; scheduling items one by one")
            self.of = {}

    def units(self, collection: Sequence[str]) -> dict[int, tuple[int, ...]]:
        """Collection index -> the indices of its chunk, in collection order (chunked only)."""
        members: dict[str, list[int]] = {}
        for index, nodeid in enumerate(collection):
            chunk = self.of.get(nodeid)
            if chunk is not None:
                members.setdefault(chunk, []).append(index)
        return {index: tuple(group) for group in members.values() for index in group}


def take_whole(pending: list[int], count: int, units: dict[int, tuple[int, ...]]) -> list[int]:
    """Take about ``count`` indices from the front of ``pending`` and remove them: whole units
    (a chunk's pending indices, or one unchunked index) while they fit in ``count``, then more
    until there are ``MIN_PENDING`` when ``count`` asked for as many (a worker runs an item only
    once it holds the next, or is told to stop)."""
    if count <= 0:
        return []
    if not units:
        taken = pending[:count]
        del pending[:count]
        return taken
    waiting = set(pending)
    chosen: set[int] = set()
    taken: list[int] = []
    least = min(count, MIN_PENDING)
    for index in pending:
        if index in chosen:
            continue
        unit = [member for member in units.get(index, (index,)) if member in waiting]
        if len(taken) >= least and len(taken) + len(unit) > count:
            break
        chosen.update(unit)
        taken.extend(unit)
        if len(taken) >= count:
            break
    pending[:] = [index for index in pending if index not in chosen]
    return taken


def stealable(pending: Sequence[int], count: int, units: dict[int, tuple[int, ...]]) -> list[int]:
    """Up to ``count`` indices from the end of a worker's ``pending`` that another worker may
    take: whole chunks none of whose items has started there, and unchunked items, never the
    first ``MIN_PENDING`` (the item running and the next, which the worker holds already)."""
    queued = list(pending[MIN_PENDING:])
    waiting = set(queued)
    stolen: set[int] = set()
    seen: set[int] = set()
    for index in reversed(queued):
        if index in seen:
            continue
        unit = units.get(index, (index,))
        seen.update(unit)
        if len(stolen) + len(unit) > count:
            continue
        if all(member in waiting for member in unit):  # a begun chunk stays where it began
            stolen.update(unit)
    return [index for index in queued if index in stolen]


class _Chunked:
    """What every chunked scheduler does: read the chunks the workers named, and fix them when
    scheduling starts (``_settle``)."""

    collection: list[str] | None
    log: Any

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)  # type: ignore[call-arg]
        self.chunks = _Chunks()

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        super().add_node_collection(node, self.chunks.received(node, collection))  # type: ignore[misc]

    def schedule(self) -> None:
        if self.collection is None:
            self.chunks.settle(self.log)
            self._settle()
        super().schedule()  # type: ignore[misc]

    def _settle(self) -> None:
        """Prepare for the chunks in ``self.chunks.of``."""


class _WholeUnits(_Chunked):
    """For the load modes, which send tests by collection index: a chunk's indices go out
    together, where the first of them would go."""

    node2collection: dict[Any, list[str]]
    node2pending: dict[Any, list[int]]
    pending: list[int]

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self.units: dict[int, tuple[int, ...]] = {}

    def _settle(self) -> None:
        collections = list(self.node2collection.values())
        self.units = self.chunks.units(collections[0]) if collections else {}

    def _send_tests(self, node: Any, num: int) -> None:
        tests = take_whole(self.pending, num, self.units)
        if tests:
            self.node2pending[node].extend(tests)
            node.send_runtest_some(tests)


class _ChunkScopes(_Chunked):
    """For the scope modes: each xdist chunk is a scope of its own."""

    def _split_scope(self, nodeid: str) -> str:
        chunk = self.chunks.of.get(nodeid)
        if chunk is not None:
            return f"{_SCOPE}{chunk}"
        return super()._split_scope(nodeid)  # type: ignore[misc,no-any-return]


class ChunkedLoadScheduling(_WholeUnits, LoadScheduling):
    """``--dist load``: xdist's, with each xdist chunk sent whole where its first item goes."""


class ChunkedWorkStealingScheduling(_WholeUnits, WorkStealingScheduling):
    """``--dist worksteal``: xdist's, with chunks sent whole and stolen only whole and
    unstarted."""

    def check_schedule(self) -> None:
        """xdist's ``check_schedule``, stealing only what ``stealable`` allows."""
        if not self.units:
            super().check_schedule()
            return
        nodes_up = [NodePending(node, pending) for node, pending in self.node2pending.items()
                    if not node.shutting_down]

        def idle() -> list[Any]:
            return [node for node, pending in nodes_up if len(pending) < MIN_PENDING]

        idle_nodes = idle()
        if not idle_nodes:
            return
        if self.pending:
            for i, node in enumerate(idle_nodes):
                self._send_tests(node, len(self.pending) // (len(idle_nodes) - i))
            idle_nodes = idle()
            if not idle_nodes:
                return
        if self.steal_requested_from_node is not None:
            return
        steal_from = max(nodes_up, key=lambda each: len(each.pending), default=None)
        stolen = []
        if steal_from is not None:
            stolen = stealable(steal_from.pending, len(steal_from.pending) // 2, self.units)
        if not stolen:
            for node in idle_nodes:
                node.shutdown()  # nothing to take: run the last items now
            return
        assert steal_from is not None
        steal_from.node.send_steal(stolen)
        self.steal_requested_from_node = steal_from.node


class ChunkedLoadScopeScheduling(_ChunkScopes, LoadScopeScheduling):
    """``--dist loadscope``: modules and classes stay whole; each xdist chunk is a scope."""


class ChunkedLoadFileScheduling(_ChunkScopes, LoadFileScheduling):
    """``--dist loadfile``: files stay whole; each xdist chunk is a scope."""


class ChunkedLoadGroupScheduling(_ChunkScopes, LoadGroupScheduling):
    """``--dist loadgroup``: xdist_groups stay whole; each other xdist chunk is a scope. (The
    items of a test in an xdist_group form one chunk: it keeps them together even where xdist
    could not name their group.)"""

    def _split_scope(self, nodeid: str) -> str:
        group = LoadGroupScheduling._split_scope(self, nodeid)
        return group if group != nodeid else super()._split_scope(nodeid)


#: The scheduler for each ``--dist`` mode whose chunks this plugin keeps together.
SCHEDULERS: dict[str, type] = {
    "load": ChunkedLoadScheduling,
    "loadscope": ChunkedLoadScopeScheduling,
    "loadfile": ChunkedLoadFileScheduling,
    "loadgroup": ChunkedLoadGroupScheduling,
    "worksteal": ChunkedWorkStealingScheduling,
}


class ChunkScheduling:
    """The controller's side: whether workers name chunks, and the scheduler that reads them.

    ``min_runs`` is ``--hparams-xdist-min-chunk`` (None: off, or vectorising is off).
    """

    def __init__(self, config: pytest.Config, min_runs: int | None) -> None:
        self.config = config
        self.min_runs = min_runs
        self._active: bool | None = None
        send_to_workers(config, CHUNKS, lambda node: self.min_runs if self.active else None)

    @property
    def active(self) -> bool:
        """Chunks are kept together: a mode with a scheduler here, not switched off, and this
        plugin's ``pytest_xdist_make_scheduler`` the first that xdist calls (decided once, when
        the first worker starts, so every worker is told the same)."""
        if self._active is None:
            mode = str(self.config.getoption("dist", "no"))
            hook = self.config.pluginmanager.hook.pytest_xdist_make_scheduler
            first = _first_called(hook.get_hookimpls())
            self._active = (self.min_runs is not None and mode in SCHEDULERS
                            and first is not None and first.plugin is self)
        return self._active

    # Not tryfirst: registered after xdist and conftests, this runs before their plain
    # implementations (pluggy calls the last registered first) and after any that insist.
    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if not self.active:
            return None
        return SCHEDULERS[str(config.getoption("dist"))](config, log)


def _first_called(impls: Iterable[Any]) -> Any:
    """The implementation pluggy calls first (it calls the list from the end)."""
    ordered = list(impls)
    return ordered[-1] if ordered else None
