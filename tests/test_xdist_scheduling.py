"""xdist chunks without processes: how stacks are dealt into chunks, the chunk names on the wire,
and xdist's schedulers (ours for each --dist mode) driven to the end by simulated workers."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_hparams.sharing import chunk_counts, deal
from pytest_hparams.xdist import decode_collection, encode_chunk

xdist_scheduling = pytest.importorskip("pytest_hparams.xdist_scheduling")
Producer = pytest.importorskip("xdist.remote").Producer

# --------------------------------------------------------------------------- dealing

groups = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 5)), min_size=1, max_size=6)


@given(groups, st.integers(1, 8), st.integers(1, 32))
def test_a_group_is_split_only_to_keep_workers_busy_and_never_below_the_minimum(
        sizes, workers, min_runs):
    counts = chunk_counts(sizes, workers, min_runs)
    total = sum(c * s for c, s in sizes)
    for (configurations, seeds), count in zip(sizes, counts, strict=True):
        share = math.ceil(configurations * seeds * workers / total)
        assert 1 <= count <= min(workers, configurations, share)
        if count > 1:  # the smallest chunk still has min_runs runs
            assert (configurations // count) * seeds >= min_runs
        splittable = (configurations // (count + 1)) * seeds >= min_runs
        if count < share and count < workers:
            assert not splittable  # it stopped only at the minimum


def test_the_issues_grids_deal_as_intended():
    # 8 learning rates × 2 batch sizes, 2 seeds: two stacks of 16 runs, one per worker.
    assert chunk_counts([(8, 2), (8, 2)], workers=2, min_runs=8) == [1, 1]
    # One stack of 16 learning rates, 2 seeds: halved.
    assert chunk_counts([(16, 2)], workers=2, min_runs=8) == [2]
    # With one seed, halves of 8 runs still reach the minimum; quarters would not.
    assert chunk_counts([(16, 1)], workers=4, min_runs=8) == [2]
    assert chunk_counts([(5, 1)], workers=2, min_runs=8) == [1]


@given(st.integers(1, 60), st.integers(1, 8))
def test_dealing_partitions_positions_round_robin_into_even_chunks(size, count):
    count = min(count, size)
    chunks = deal(size, count)
    assert sorted(p for chunk in chunks for p in chunk) == list(range(size))
    assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
    assert all(chunk == sorted(chunk) and chunk[0] == i for i, chunk in enumerate(chunks))


# --------------------------------------------------------------------------- the wire

nodeids = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1)


@given(st.lists(st.tuples(nodeids, st.none() | st.integers(1, 10**6).map(str)), max_size=20))
def test_chunk_names_come_off_the_ids_the_workers_sent(entries):
    wire = [encode_chunk(nodeid, chunk) if chunk else nodeid for nodeid, chunk in entries]
    ids, chunks = decode_collection(wire)
    assert ids == [nodeid for nodeid, _ in entries]
    assert chunks == {nodeid: chunk for nodeid, chunk in entries if chunk}


# --------------------------------------------------------------------------- schedulers


class FakeWorker:
    """A worker as xdist's schedulers see it; like a real one it runs the items it was sent in
    order, holds the one running and the next, and answers a steal all or nothing."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.queue: list[int] = []
        self.steals: list[list[int]] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.queue.extend(indices)

    def send_steal(self, indices: list[int]) -> None:
        self.steals.append(list(indices))

    def shutdown(self) -> None:
        self.shutting_down = True

    def runnable(self) -> bool:
        return len(self.queue) >= 2 or (bool(self.queue) and self.shutting_down)


class FakeConfig:
    """The options xdist's schedulers read: their defaults, and one worker spec."""

    option = SimpleNamespace(tx=["popen"], maxschedchunk=None, loadscopereorder=True)

    def getoption(self, name: str) -> Any:
        return getattr(self.option, name)

    getvalue = getoption


@st.composite
def collections(draw: Any, grouped: bool = False) -> tuple[list[str], dict[str, str]]:
    """Node ids in modules and classes, some in xdist groups (with ``grouped``); some items in
    chunks."""
    ids, chunks = [], {}
    for index in range(draw(st.integers(1, 30))):
        module, klass = draw(st.integers(0, 2)), draw(st.none() | st.integers(0, 1))
        nodeid = f"m{module}.py::{f'C{klass}::' if klass is not None else ''}t[{index}]"
        if grouped and draw(st.booleans()):
            nodeid += f"@g{draw(st.integers(0, 1))}"  # as xdist names an xdist_group
        ids.append(nodeid)
        chunk = draw(st.none() | st.integers(1, 4))
        if chunk is not None:
            chunks[nodeid] = str(chunk)
    return ids, chunks


def _drive(scheduler_class: type, ids: list[str], chunks: dict[str, str],
           workers: int, data: Any) -> dict[int, list[FakeWorker]]:
    """Run a scheduler to the end with workers that finish items in an order ``data`` picks;
    return which workers ran each collection index."""
    scheduler = scheduler_class(FakeConfig(), Producer("scheduler", enabled=False))
    scheduler.numnodes = workers
    nodes = [FakeWorker(f"gw{i}") for i in range(workers)]
    for node in nodes:
        scheduler.add_node(node)
    wire = [encode_chunk(nodeid, chunks[nodeid]) if nodeid in chunks else nodeid for nodeid in ids]
    for node in nodes:
        scheduler.add_node_collection(node, wire)
    scheduler.schedule()
    ran: dict[int, list[FakeWorker]] = {}
    while True:
        for node in nodes:
            while node.steals:
                wanted = node.steals.pop(0)
                given_back = wanted if set(wanted) <= set(node.queue[2:]) else []
                node.queue = [i for i in node.queue if i not in given_back]
                scheduler.remove_pending_tests_from_node(node, given_back)
        runnable = [node for node in nodes if node.runnable()]
        if not runnable:
            break
        node = data.draw(st.sampled_from(runnable))
        index = node.queue.pop(0)
        ran.setdefault(index, []).append(node)
        scheduler.mark_test_complete(node, index, 0.01)
    assert not any(node.queue for node in nodes), "workers wait for items that never come"
    assert scheduler.tests_finished
    return ran


MODES = ["load", "loadscope", "loadfile", "loadgroup", "worksteal"]


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data(), workers=st.integers(1, 4))
def test_every_item_runs_once_and_each_chunk_on_one_worker(mode, data, workers):
    ids, chunks = data.draw(collections(grouped=mode == "loadgroup"))
    scheduler_class = xdist_scheduling.SCHEDULERS[mode]
    ran = _drive(scheduler_class, ids, chunks, workers, data)
    assert sorted(ran) == list(range(len(ids)))
    assert all(len(runners) == 1 for runners in ran.values())
    worker = {ids[index]: runners[0] for index, runners in ran.items()}
    together: dict[str, set[FakeWorker]] = {}
    for nodeid, chunk in chunks.items():
        if mode == "loadgroup" and "@" in nodeid:
            chunk = nodeid.rsplit("@", 1)[1]  # the user's xdist_group goes first
        together.setdefault(chunk, set()).add(worker[nodeid])
    if mode in ("loadscope", "loadfile"):  # what the mode keeps together, outside chunks
        split = str.rpartition if mode == "loadscope" else str.partition
        for nodeid in ids:
            if nodeid not in chunks:
                together.setdefault(split(nodeid, "::")[0], set()).add(worker[nodeid])
    assert all(len(workers_of) == 1 for workers_of in together.values())


def test_worksteal_takes_only_whole_chunks_that_have_not_begun():
    units = {2: (2, 5), 5: (2, 5), 3: (3, 4, 6), 4: (3, 4, 6), 6: (3, 4, 6)}
    stealable = xdist_scheduling.stealable
    # 0 runs, 1 is next; chunk (3, 4, 6) is whole and waiting, so is chunk (2, 5).
    # From the end, whole units while they fit: 7, then (3, 4, 6) or, when it does not, (2, 5).
    assert stealable([0, 1, 2, 3, 4, 5, 6, 7], 4, units) == [3, 4, 6, 7]
    assert stealable([0, 1, 2, 3, 4, 5, 6, 7], 3, units) == [2, 5, 7]
    # Chunk (2, 5) has begun (2 is running): it stays.
    assert stealable([2, 0, 5, 7], 2, units) == [7]
    assert stealable([0, 1], 2, units) == []


def test_taking_units_keeps_chunks_whole_and_the_order_otherwise():
    take_whole = xdist_scheduling.take_whole
    units = {1: (1, 3), 3: (1, 3)}
    pending = [0, 1, 2, 3, 4, 5]
    assert take_whole(pending, 3, units) == [0, 1, 3]
    assert take_whole(pending, 3, units) == [2, 4, 5]
    pending = [0, 1, 2, 3, 4, 5]
    # Asked for 2, a worker gets at least 2 (it waits for a second item), chunks whole.
    assert take_whole(pending, 2, units) == [0, 1, 3]
    assert take_whole(pending, 1, units) == [2]
    assert take_whole(pending, 9, units) == [4, 5]
    assert pending == []
    units = {0: (0, 1, 2), 1: (0, 1, 2), 2: (0, 1, 2)}
    assert take_whole([0, 1, 2, 3, 4], 2, units) == [0, 1, 2]  # larger than asked, still whole
    assert take_whole([3, 4, 0, 1, 2], 4, units) == [3, 4]  # the chunk would not fit beside
    assert take_whole([5, 6, 7], 2, {}) == [5, 6]


# --------------------------------------------------------------------------- which items share

PLANNED = """
import pytest

@pytest.mark.hparams(lr=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], batch_size=[32, 64],
                     optimizer=["sgd", "momentum", "adam"], seeds=2)
def test_grid(hparams):
    pass

@pytest.mark.parametrize("width", [4, 8])
@pytest.mark.hparams(lr=[0.1, 0.2, 0.3, 0.4], seeds=2)
def test_widths(hparams, width):
    pass

@pytest.mark.hparams(lr=[0.1, 0.2, 0.3], vectorize=False)
def test_apart(hparams):
    pass

@pytest.mark.hparams(lr=[0.1, 0.2, 0.3])
def test_own_loop(hparams, hparams_trial):
    pass

@pytest.mark.xdist_group("gpu")
@pytest.mark.hparams(lr=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seeds=2)
def test_grouped(hparams):
    pass

@pytest.mark.hparams(lr=[0.1, 0.2], marks=lambda h: pytest.mark.skip("no") if h.lr > 0.1 else ())
def test_skips(hparams):
    pass
"""


def _chunked(items: list[pytest.Item], workers: int, by_group: bool) -> list[list[str]]:
    from pytest_hparams.sharing import plan_xdist_chunks

    plan = plan_xdist_chunks(items, workers=workers, min_runs=8, by_xdist_group=by_group)
    members: dict[str, list[str]] = {}
    for nodeid, chunk in plan.items():
        assert chunk.pinned == (by_group and "test_grouped" in nodeid)
        members.setdefault(chunk.key, []).append(nodeid.split("::")[1])
    return sorted(members.values())


def test_chunks_hold_what_can_share_a_stack(pytester):
    items = pytester.getitems(PLANNED)
    # One worker: every stack is one chunk, so the chunks are the stacks.
    chunks = _chunked(items, workers=1, by_group=False)
    # Not chunked: vectorize=False, an own loop, a skipped configuration.
    named = [n for chunk in chunks for n in chunk]
    assert not [n for n in named if n.startswith(("test_apart", "test_own_loop"))]
    assert [n for n in named if n.startswith("test_skips")] == ["test_skips[lr=0.1]"]
    # A stack per batch size and optimiser family (sgd and momentum step together).
    grid = [c for c in chunks if c[0].startswith("test_grid")]
    assert sorted(map(len, grid)) == [8, 8, 16, 16]
    assert all(len({("batch_size=32" in n, "adam" in n) for n in c}) == 1 for c in grid)
    # A stack per value of the test's other parameter.
    widths = [c for c in chunks if c[0].startswith("test_widths")]
    assert sorted(sorted(n[-2:] for n in c) for c in widths) == [["4]"] * 4, ["8]"] * 4]
    # Two workers and one stack of 16 runs: halved, except an xdist_group under loadgroup.
    grouped = [item for item in items if "test_grouped" in item.nodeid]
    assert sorted(map(len, _chunked(grouped, workers=2, by_group=False))) == [4, 4]
    assert sorted(map(len, _chunked(grouped, workers=2, by_group=True))) == [8]
