"""The pytest side of sharing a vectorised stack between the items of one test function.

Each configuration stays its own pytest item, with its own id, ``-k``, ``--lf`` and xdist
behaviour. When the first item of a test function calls ``fit``, it trains, together with its
own, the configurations of the other items of that function that this session (or xdist worker)
is going to run, and leaves each of them its runs. When a later item calls ``fit``, it takes its
runs instead of training, but only after checking that its call is the one the leader assumed:
the same model, data, loss, target and keyword settings, its own hyperparameters and the same
seeds. Anything else (a test body that builds other data, or passes other settings, from its
hyperparameters) makes the item train by itself, so sharing never changes a result.

Under pytest-xdist, the items of a test that may share a stack are dealt into xdist chunks
(``plan_xdist_chunks``): as many as it takes to keep every worker busy, none with fewer runs
than ``--hparams-xdist-min-chunk``. Every worker computes the same chunks from its (identical)
collection; the controller's scheduler (``xdist_scheduling``) sends each chunk whole to one
worker, and a leader there trains only the items of its own chunk.

``sharing_for(item)`` makes the item's ``Peers`` (``training.peers``) current while it runs;
the runs left for items are kept per session in ``config.stash``. This module also declares the
options of vectorised training and prints, under ``-v``, how each trial trained and which
worker trained which xdist chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from .hparams import HParams, observe
from .items import PARAM, ItemSpec, item_reads, item_recorder, item_spec, test_name
from .session import SESSION_KEY
from .training.peers import Member, Peers, Shared, add_note, parse_size, using_peers
from .xdist import (
    CHUNKS,
    ChunkedCollection,
    from_controller,
    is_worker,
    planned_workers,
    send_to_workers,
    worker_count,
)

#: pytest-xdist modes that keep every item of one test function on one worker.
GROUPING_DIST_MODES = ("no", "each", "loadscope", "loadfile")
#: The fewest runs (configurations × seeds) of an xdist chunk: below 8, a stack of small models
#: costs about as much wall time as one of 8, so a smaller chunk saves no time and spends CPU
#: (measured: README, "Running on several processes"; benchmarks/xdist_speedup.py).
DEFAULT_MIN_CHUNK = 8

_DIST_KEY = "hparams_dist"


class _Registry:
    """Runs left for items, per session (and per xdist worker): kept in ``config.stash``."""

    def __init__(self, config: pytest.Config) -> None:
        self.enabled = not config.getoption("hparams_no_vectorize", False)
        self.budget = _memory_budget_option(config)
        self.shared: dict[tuple[str, int], Shared] = {}
        self.left_out: dict[tuple[str, int], str] = {}
        self.started: set[str] = set()
        self.failures: dict[str, str] = {}
        self.unshared: dict[str, str] = {}
        # xdist resets a worker's --dist to "no": the controller passes the real one along.
        self.dist = str(from_controller(config, _DIST_KEY, "load" if is_worker(config) else "no"))
        # On a worker whose controller keeps xdist chunks together: each item's chunk.
        self.chunks: dict[str, XdistChunk] | None = None


_REGISTRY = pytest.StashKey[_Registry]()


class _ItemPeers(Peers):
    """The items of one test function, as selected in this session or worker."""

    def __init__(self, item: pytest.Item, registry: _Registry, spec: ItemSpec) -> None:
        vectorize = registry.enabled and spec.marker.vectorize
        super().__init__(vectorize=vectorize, budget=registry.budget)
        self.item = item
        self.spec = spec
        self.registry = registry
        self.test = test_name(item)

    def own_values(self) -> Mapping[str, Any]:
        return self.spec.config.values

    def why_alone(self) -> str | None:
        if self.registry.chunks is None and self.registry.dist not in GROUPING_DIST_MODES:
            return (f"pytest-xdist --dist {self.registry.dist} without pytest-hparams' xdist "
                    f"chunks (--hparams-xdist-min-chunk off, or another plugin's scheduler) may "
                    f"send the items of one test to different workers")
        return self.registry.unshared.get(self.test)

    def take(self, call: int) -> Shared | None:
        return self.registry.shared.pop((self.item.nodeid, call), None)

    def members(self, call: int) -> list[Member]:
        chunks = self.registry.chunks
        mine = chunks.get(self.item.nodeid) if chunks is not None else None
        if chunks is not None and mine is None:
            return []
        found = []
        for other in self.item.session.items:
            if other is self.item or not self._same_group(other):
                continue
            # The scheduler sends this worker its own chunk whole, and other chunks elsewhere.
            if chunks is not None and chunks.get(other.nodeid) is not mine:
                continue
            if other.nodeid in self.registry.started or _skipped(other):
                continue
            if (other.nodeid, call) in self.registry.shared:
                continue
            config = item_spec(other).config
            hparams = observe(HParams(config.values, seeds=self.spec.marker.space.seeds,
                                      id=config.id, axes=config.axes), item_reads(other))
            found.append(Member(other.nodeid, config.id, hparams))
        return found

    def _same_group(self, other: pytest.Item) -> bool:
        spec = item_spec(other)
        if spec is None or spec.marker is not self.spec.marker:
            return False
        if test_name(other) != self.test:
            return False
        return other_parameters(self.item) == other_parameters(other)

    def give(self, member: Member, call: int, shared: Shared) -> None:
        self.registry.shared[(member.key, call)] = shared

    def leave_out(self, member: Member, call: int, reason: str) -> None:
        self.registry.left_out.setdefault((member.key, call), reason)

    def left_out(self, call: int) -> str | None:
        return self.registry.left_out.get((self.item.nodeid, call))

    def failed(self) -> str | None:
        return self.registry.failures.get(self.test)

    def record_failure(self, reason: str) -> None:
        self.registry.failures.setdefault(self.test, reason)

    def stop_sharing(self, reason: str) -> None:
        self.registry.unshared.setdefault(
            self.test, f"an earlier item of this test did not call fit as its leader did "
                       f"({reason})")


def other_parameters(item: pytest.Item) -> tuple[tuple[str, int], ...]:
    """The item's parameters besides its configuration, as (name, identity of the value):
    pytest gives every combination the very objects of its parametrize entries (the callspec's
    indices no longer tell them apart: pytest renumbers direct parameters per combination)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return tuple(sorted((name, id(value)) for name, value in params.items() if name != PARAM))


def _skipped(item: pytest.Item) -> bool:
    """Items that will not call fit: skip marks, true skipif conditions, xfail(run=False)."""
    if item.get_closest_marker("skip") is not None:
        return True
    for mark in item.iter_markers("skipif"):
        conditions = mark.args or (mark.kwargs.get("condition", False),)
        if any(c is True for c in conditions):
            return True
    return any(mark.kwargs.get("run", True) is False for mark in item.iter_markers("xfail"))


@contextlib.contextmanager
def sharing_for(item: pytest.Item) -> Iterator[None]:
    """While ``item`` runs, ``fit`` shares work with the other items of its test function."""
    registry = item.config.stash.get(_REGISTRY, None)
    spec = item_spec(item)
    if registry is None or spec is None:
        yield
        return
    registry.started.add(item.nodeid)
    chunk = registry.chunks.get(item.nodeid) if registry.chunks is not None else None
    if chunk is not None and chunk.configurations > 1:
        add_note(item_recorder(item).result, chunk.note)
    with using_peers(_ItemPeers(item, registry, spec)):
        yield


# --------------------------------------------------------------------------- xdist chunks


@dataclass(frozen=True)
class XdistChunk:
    """Items of one test that may share a stack, sent whole to one xdist worker."""

    key: str  # digits, unique in the collection and the same on every worker
    test: str
    index: int  # 1, 2, ... within its test
    count: int  # the test's chunks
    configurations: int
    seeds: int
    pinned: bool = False  # its items are in an xdist_group (--dist loadgroup): not split

    @property
    def note(self) -> str:
        """What every trial of the chunk records about it (``-v`` shows it with the worker)."""
        seeds = f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"
        return (f"xdist chunk {self.index}/{self.count} of {self.test}: "
                f"{self.configurations} configurations × {seeds}")


def chunk_counts(groups: Sequence[tuple[int, int]], workers: int, min_runs: int) -> list[int]:
    """How many xdist chunks to deal each group of ``(configurations, seeds)`` into.

    A group is split only as far as it takes to keep ``workers`` busy: into about as many
    chunks as its share of all the groups' runs is of the workers (a group with half the runs
    on 4 workers, into 2), at most one per worker, and never so far that a chunk has fewer than
    ``min_runs`` runs (configurations × seeds) unless the whole group has.
    """
    total = sum(configurations * seeds for configurations, seeds in groups)
    counts = []
    for configurations, seeds in groups:
        runs = configurations * seeds
        wanted = min(workers, -(-runs * workers // total)) if total else 1
        count = 1
        while count < wanted and (configurations // (count + 1)) * seeds >= min_runs:
            count += 1
        counts.append(count)
    return counts


def deal(size: int, count: int) -> list[list[int]]:
    """Positions ``0..size-1`` dealt round-robin into ``count`` chunks: along a grid's axes (a
    learning rate sweep), each chunk gets some of every kind, so the chunks take about as long
    (large rates diverge and leave their stack early)."""
    return [list(range(start, size, count)) for start in range(count)]


def plan_xdist_chunks(items: Sequence[pytest.Item], workers: int, min_runs: int, *,
                      by_xdist_group: bool = False) -> dict[str, XdistChunk]:
    """Each item's xdist chunk, by node id: the items that may share a stack (one test
    function, the same other parameters, ``batch_size`` and optimiser family, vectorising,
    not skipped) dealt by ``chunk_counts`` and ``deal``. With ``by_xdist_group`` (``--dist
    loadgroup``), items of an ``xdist_group`` go wherever their group goes: one chunk per group.
    The same collection gives the same chunks on every worker.
    """
    groups: dict[tuple[Any, ...], list[pytest.Item]] = {}
    for item in items:
        key = _stack_key(item, by_xdist_group)
        if key is not None:
            groups.setdefault(key, []).append(item)
    sizes = [(len(group), len(_marker_seeds(group[0]))) for group in groups.values()]
    counts = chunk_counts(sizes, workers, min_runs)
    counts = [1 if key[-1] is not None else count for key, count in zip(groups, counts,
                                                                         strict=True)]
    per_test: dict[str, int] = {}
    for group, count in zip(groups.values(), counts, strict=True):
        per_test[test_name(group[0])] = per_test.get(test_name(group[0]), 0) + count
    plan: dict[str, XdistChunk] = {}
    numbered: dict[str, int] = {}
    serial = 0
    for (key, group), count, (_, seeds) in zip(groups.items(), counts, sizes, strict=True):
        test = test_name(group[0])
        for positions in deal(len(group), count):
            numbered[test] = numbered.get(test, 0) + 1
            serial += 1
            chunk = XdistChunk(str(serial), test, numbered[test], per_test[test], len(positions),
                               seeds, pinned=key[-1] is not None)
            plan.update((group[position].nodeid, chunk) for position in positions)
    return plan


def _marker_seeds(item: pytest.Item) -> tuple[int, ...]:
    spec = item_spec(item)
    return spec.marker.space.seeds if spec is not None else (0,)


def _stack_key(item: pytest.Item, by_xdist_group: bool) -> tuple[Any, ...] | None:
    """What items must share to train in one stack, as far as collection can tell; None for an
    item that will not share (not an hparams item, not vectorising, skipped, or training in
    its own loop through ``hparams_trial``)."""
    spec = item_spec(item)
    if spec is None or not spec.marker.vectorize or _skipped(item):
        return None
    if "hparams_trial" in getattr(item, "fixturenames", ()):
        return None  # the test records its own loop: it never trains a stack of fit's
    from .training.optim import FAMILIES  # only now: this loads torch, which the item will use

    values = spec.config.values
    optimizer = values.get("optimizer")
    group = None
    if by_xdist_group:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        group = "_".join(names) or None
    return (test_name(item), id(spec.marker), other_parameters(item),
            repr(values.get("batch_size")), FAMILIES.get(optimizer, repr(optimizer)), group)


# --------------------------------------------------------------------------- options


def add_options(group: Any, parser: pytest.Parser) -> None:
    """The command-line and ini options of vectorised training."""
    group.addoption("--hparams-no-vectorize", dest="hparams_no_vectorize", action="store_true",
                    help="train every configuration one by one instead of several at once")
    group.addoption("--hparams-vectorize-memory", dest="hparams_vectorize_memory",
                    metavar="SIZE", default=None,
                    help="memory one vectorised group may use before it is split into chunks, "
                         "e.g. 512MiB or 4GB (default auto: half the free GPU memory, 2GiB on "
                         "the CPU); ini: hparams_vectorize_memory")
    parser.addini("hparams_vectorize_memory", "memory one vectorised group may use (e.g. 4GB; "
                  "auto)", default="auto")
    group.addoption("--hparams-xdist-min-chunk", dest="hparams_xdist_min_chunk", metavar="RUNS",
                    default=None,
                    help=f"under pytest-xdist, the fewest runs (configurations × seeds) in a "
                         f"chunk of a vectorised stack sent to one worker (default "
                         f"{DEFAULT_MIN_CHUNK}), or off: xdist schedules items one by one, and "
                         f"stacks are shared only under --dist loadscope/loadfile; ini: "
                         f"hparams_xdist_min_chunk")
    parser.addini("hparams_xdist_min_chunk", "the fewest runs in an xdist chunk of a vectorised "
                  "stack, or off", default=str(DEFAULT_MIN_CHUNK))


def _memory_budget_option(config: pytest.Config) -> int | None:
    text = config.getoption("hparams_vectorize_memory", None) or config.getini(
        "hparams_vectorize_memory")
    try:
        return parse_size(str(text))
    except OverflowError:  # digits beyond a float's range
        raise pytest.UsageError(f"--hparams-vectorize-memory / hparams_vectorize_memory: "
                                f"{str(text)[:40]!r} is not a size: use e.g. 512MiB, 4GB or "
                                f"auto") from None
    except ValueError as exc:
        raise pytest.UsageError(f"--hparams-vectorize-memory / hparams_vectorize_memory: "
                                f"{exc}") from None


def min_chunk_option(config: pytest.Config) -> int | None:
    """``--hparams-xdist-min-chunk`` / ``hparams_xdist_min_chunk``: runs, or None for off."""
    text = str(config.getoption("hparams_xdist_min_chunk", None)
               or config.getini("hparams_xdist_min_chunk")).strip()
    if text.lower() == "off":
        return None
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(f"--hparams-xdist-min-chunk / hparams_xdist_min_chunk: {text!r} "
                                f"is neither a number of runs (1 or more) nor off")
    return int(text)


def configure(config: pytest.Config) -> None:
    """Keep the session's registry of shared runs and print, under -v, how each trial trained;
    under xdist, deal stacks in chunks (the controller's scheduler, each worker's collection)."""
    registry = _Registry(config)
    config.stash[_REGISTRY] = registry
    config.pluginmanager.register(_VectorizeSummary(config), "hparams-vectorize")
    send_to_workers(config, _DIST_KEY, lambda node: str(config.getoption("dist", "load")))
    min_runs = min_chunk_option(config)
    if planned_workers(config):
        from .xdist_scheduling import ChunkScheduling  # needs xdist, which -n/--tx imply

        config.pluginmanager.register(
            ChunkScheduling(config, min_runs if registry.enabled else None),
            "hparams-xdist-chunks")
    announced = from_controller(config, CHUNKS)
    if announced:
        workers, by_group = worker_count(config), registry.dist == "loadgroup"

        def plan(items: list[pytest.Item]) -> dict[str, str]:
            registry.chunks = plan_xdist_chunks(items, workers, int(announced),
                                                by_xdist_group=by_group)
            return {nodeid: chunk.key for nodeid, chunk in registry.chunks.items()
                    if chunk.configurations > 1}

        config.pluginmanager.register(ChunkedCollection(plan), "hparams-xdist-collection")


class _VectorizeSummary:
    """Under -v: which worker trained each xdist chunk, then one line per trial saying whether
    it trained vectorised, and why not."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        session = self.config.stash.get(SESSION_KEY, None)
        if session is None or session.is_worker or self.config.get_verbosity() < 1:
            return
        trials = session.ordered_trials()
        chunks: dict[str, tuple[list[str], list[str]]] = {}  # note -> (workers, configurations)
        for trial in trials:
            for note in trial.notes:
                if note.startswith("xdist chunk "):
                    workers, configurations = chunks.setdefault(note, ([], []))
                    if trial.worker and trial.worker not in workers:
                        workers.append(trial.worker)
                    configurations.append(trial.config_id)
        lines = [f"{note}, on {', '.join(workers) or 'this process'}: {', '.join(configurations)}"
                 for note, (workers, configurations) in chunks.items()]
        lines += [f"{trial.nodeid or trial.config_id}: {note}"
                  for trial in trials for note in trial.notes
                  if note.startswith(("vectorised", "one by one"))]
        if lines:
            terminalreporter.write_sep("-", "hparams vectorised training")
            for line in lines:
                terminalreporter.write_line(line)
