"""The pytest side of sharing a vectorised stack between the items of one test function.

Each configuration stays its own pytest item, with its own id, ``-k``, ``--lf`` and xdist
behaviour. When the first item of a test function calls ``fit``, it trains, together with its
own, the configurations of the other items of that function that this session (or xdist worker)
is going to run, and leaves each of them its runs. When a later item calls ``fit``, it takes its
runs instead of training, but only after checking that its call is the one the leader assumed:
the same model, data, loss, target and keyword settings, its own hyperparameters and the same
seeds. Anything else (a test body that builds other data, or passes other settings, from its
hyperparameters) makes the item train by itself, so sharing never changes a result.

``sharing_for(item)`` makes the item's ``Peers`` (``training.peers``) current while it runs;
the runs left for items are kept per session in ``config.stash``. This module also declares the
options of vectorised training and prints, under ``-v``, how each trial trained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from .hparams import HParams
from .items import PARAM, ItemSpec, item_spec, test_name
from .session import SESSION_KEY
from .training.peers import Member, Peers, Shared, parse_size, using_peers
from .xdist import from_controller, is_worker, send_to_workers

#: pytest-xdist modes that keep every item of one test function on one worker.
GROUPING_DIST_MODES = ("no", "each", "loadscope", "loadfile")

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
        if self.registry.dist not in GROUPING_DIST_MODES:
            return (f"pytest-xdist --dist {self.registry.dist} may send the items of one test "
                    f"to different workers; --dist loadscope keeps them together")
        return self.registry.unshared.get(self.test)

    def take(self, call: int) -> Shared | None:
        return self.registry.shared.pop((self.item.nodeid, call), None)

    def members(self, call: int) -> list[Member]:
        found = []
        for other in self.item.session.items:
            if other is self.item or not self._same_group(other):
                continue
            if other.nodeid in self.registry.started or _skipped(other):
                continue
            if (other.nodeid, call) in self.registry.shared:
                continue
            config = item_spec(other).config
            hparams = HParams(config.values, seeds=self.spec.marker.space.seeds, id=config.id,
                              axes=config.axes)
            found.append(Member(other.nodeid, config.id, hparams))
        return found

    def _same_group(self, other: pytest.Item) -> bool:
        spec = item_spec(other)
        if spec is None or spec.marker is not self.spec.marker:
            return False
        if test_name(other) != self.test:
            return False
        mine = dict(self.item.callspec.indices)  # type: ignore[attr-defined]
        theirs = dict(other.callspec.indices)  # type: ignore[attr-defined]
        for indices in (mine, theirs):
            indices.pop(PARAM, None)
        return mine == theirs

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
    with using_peers(_ItemPeers(item, registry, spec)):
        yield


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


def configure(config: pytest.Config) -> None:
    """Keep the session's registry of shared runs and print, under -v, how each trial trained."""
    config.stash[_REGISTRY] = _Registry(config)
    config.pluginmanager.register(_VectorizeSummary(config), "hparams-vectorize")
    send_to_workers(config, _DIST_KEY, lambda node: str(config.getoption("dist", "load")))


class _VectorizeSummary:
    """Under -v: one line per trial saying whether it trained vectorised, and why not."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        session = self.config.stash.get(SESSION_KEY, None)
        if session is None or session.is_worker or self.config.get_verbosity() < 1:
            return
        lines = [f"{trial.nodeid or trial.config_id}: {note}"
                 for trial in session.trials.values() for note in trial.notes
                 if note.startswith(("vectorised", "one by one"))]
        if lines:
            terminalreporter.write_sep("-", "hparams vectorised training")
            for line in lines:
                terminalreporter.write_line(line)
