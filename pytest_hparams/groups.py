"""Sharing one vectorised training between the pytest items (or sweep rows) of a group.

Each configuration stays its own pytest item, with its own id, ``-k``, ``--lf`` and xdist
behaviour. When the first item of a test function calls ``fit``, it trains, together with its
own, the configurations of the other items of that function that this session (or xdist worker)
is going to run, and leaves each of them its runs. When a later item calls ``fit``, it takes its
runs instead of training, but only after checking that its call is the one the leader assumed:
the same model, data, loss, target and keyword settings, its own hyperparameters and the same
seeds. Anything else (a test body that builds other data, or passes other settings, from its
hyperparameters) makes the item train by itself, so sharing never changes a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import types
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from torch import nn

from .hparams import HParams
from .items import PARAM, ItemSpec, item_spec, test_name
from .session import SESSION_KEY
from .trial import SeedRun, TrialResult

if TYPE_CHECKING:
    from .recording import RunRecorder

#: pytest-xdist modes that keep every item of one test function on one worker.
GROUPING_DIST_MODES = ("no", "each", "loadscope", "loadfile")
_CPU_BUDGET = 2 * 1024**3
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}

_DIST_KEY = "hparams_dist"

_current: ContextVar[Peers | None] = ContextVar("pytest_hparams_peers", default=None)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class FitCall:
    """The arguments of one ``fit`` call other than its hyperparameters."""

    model: Any
    train: Any
    val: Any
    test: Any
    loss_fn: Any
    target: Any
    stop_at_target: bool
    seeds: tuple[int, ...]
    device: torch.device
    settings: Mapping[str, Any]
    default_dtype: torch.dtype = field(default_factory=torch.get_default_dtype)

    def difference(self, other: FitCall) -> str | None:
        """What makes ``other`` a different call (None when it is the same)."""
        for name in ("model", "train", "val", "test", "loss_fn", "target", "stop_at_target",
                     "seeds", "device", "default_dtype"):
            if not same_value(getattr(self, name), getattr(other, name)):
                return f"its fit() {name} differs"
        keys = sorted(set(self.settings) | set(other.settings))
        for key in keys:
            if not same_value(self.settings.get(key), other.settings.get(key)):
                return f"its fit() keyword {key}= differs"
        return None


@dataclass(frozen=True)
class Member:
    """A configuration that a group's leader may train for another item (or sweep row).

    ``on_epoch``: called with each of its runs after every epoch, as a ``TrialRecorder``'s
    own callback is for the leader's runs (an adaptive search reports and prunes there).
    """

    key: str
    label: str
    hparams: HParams
    on_epoch: Callable[[RunRecorder], None] | None = None


@dataclass
class Shared:
    """The runs a leader trained for a member, kept until the member's own ``fit`` call."""

    call: FitCall
    hparams: HParams
    runs: list[SeedRun]
    target: dict[str, float]
    note: str
    rng: tuple[int, torch.Tensor, torch.Tensor | None]

    def adopt_into(self, result: TrialResult) -> None:
        """Add the runs to ``result`` as ``TrialRecorder.start`` adds a run: a seed trained
        again replaces the earlier run."""
        for run in self.runs:
            if any(r.seed == run.seed for r in result.runs):
                result.runs = [r for r in result.runs if r.seed != run.seed]
                add_note(result, f"seed {run.seed} was trained more than once in this test; "
                                 f"the last run is kept")
            result.runs.append(run)
        result.target = dict(self.target)
        add_note(result, self.note)


def add_note(result: TrialResult, note: str) -> None:
    if note and note not in result.notes:
        result.notes.append(note)


# --------------------------------------------------------------------------- peers


class Peers:
    """Where ``fit`` finds the other configurations of its group and leaves or takes runs.

    ``restrict_keys``: configurations may differ only in keys that ``fit`` batches or that the
    model factory reads (pytest items, whose test bodies the leader cannot see); a sweep makes
    every call itself, so its rows may differ in anything.
    """

    restrict_keys = True

    def __init__(self, *, vectorize: bool = True, budget: int | None = None) -> None:
        self.vectorize = vectorize
        self.budget = budget
        self._calls = 0

    def next_call(self) -> int:
        """The index of this ``fit`` call within the running item (0 for its first)."""
        index = self._calls
        self._calls += 1
        return index

    def own_values(self) -> Mapping[str, Any] | None:
        """The running item's configuration, which its ``fit`` must be given to lead."""
        return None

    def why_alone(self) -> str | None:
        """Why this item may not train other items' configurations, or None."""
        return None

    def take(self, call: int) -> Shared | None:
        raise NotImplementedError

    def members(self, call: int) -> list[Member]:
        raise NotImplementedError

    def give(self, member: Member, call: int, shared: Shared) -> None:
        raise NotImplementedError

    def leave_out(self, member: Member, call: int, reason: str) -> None:
        """Remember why ``member`` was not trained with this group (shown when it trains)."""

    def left_out(self, call: int) -> str | None:
        """Why an earlier group left this item out, or None."""
        return None

    def failed(self) -> str | None:
        """Why vectorised training already failed for this test, or None."""
        return None

    def record_failure(self, reason: str) -> None:
        """Remember that this test's fit call cannot be vectorised, so no item tries again."""

    def stop_sharing(self, reason: str) -> None:
        """An item's call was not the one its leader assumed: this test's later items train
        their own configurations only, rather than groups that would be thrown away."""


def current_peers() -> Peers | None:
    return _current.get()


@contextlib.contextmanager
def _peers(peers: Peers) -> Iterator[Peers]:
    token = _current.set(peers)
    try:
        yield peers
    finally:
        _current.reset(token)


class _Registry:
    """Runs left for items, per session (and per xdist worker): kept in ``config.stash``."""

    def __init__(self, config: pytest.Config) -> None:
        self.enabled = not config.getoption("hparams_no_vectorize", False)
        self.budget = memory_budget_option(config)
        self.shared: dict[tuple[str, int], Shared] = {}
        self.left_out: dict[tuple[str, int], str] = {}
        self.started: set[str] = set()
        self.failures: dict[str, str] = {}
        self.unshared: dict[str, str] = {}
        # xdist resets a worker's --dist to "no": the controller passes the real one along.
        workerinput = getattr(config, "workerinput", None)
        self.dist = str(workerinput.get(_DIST_KEY, "load")) if workerinput is not None else "no"


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
    with _peers(_ItemPeers(item, registry, spec)):
        yield


class _SweepPeers(Peers):
    """The rows of one ``sweep``: all known up front, all trained by the same call."""

    restrict_keys = False

    def __init__(self, members: list[Member], *, vectorize: bool, budget: int | None) -> None:
        super().__init__(vectorize=vectorize, budget=budget)
        self.all = members
        self.current = members[0].key if members else ""
        self.started: set[str] = set()
        self.shared: dict[tuple[str, int], Shared] = {}
        self.excluded: dict[tuple[str, int], str] = {}
        self.failure: str | None = None

    @contextlib.contextmanager
    def running(self, key: str) -> Iterator[None]:
        """Mark ``key`` as the row whose ``fit`` runs now."""
        self.current, self._calls = key, 0
        self.started.add(key)
        with _peers(self):
            yield

    def take(self, call: int) -> Shared | None:
        return self.shared.pop((self.current, call), None)

    def members(self, call: int) -> list[Member]:
        return [m for m in self.all if m.key != self.current and m.key not in self.started
                and (m.key, call) not in self.shared]

    def give(self, member: Member, call: int, shared: Shared) -> None:
        self.shared[(member.key, call)] = shared

    def leave_out(self, member: Member, call: int, reason: str) -> None:
        self.excluded.setdefault((member.key, call), reason)

    def left_out(self, call: int) -> str | None:
        return self.excluded.get((self.current, call))

    def failed(self) -> str | None:
        return self.failure

    def record_failure(self, reason: str) -> None:
        self.failure = self.failure or reason


def sweep_peers(members: list[Member], *, vectorize: bool = True) -> _SweepPeers:
    """Peers for the rows of a sweep; inside a test, that test's switch and budget apply."""
    outer = current_peers()
    enabled = vectorize and (outer is None or outer.vectorize)
    return _SweepPeers(members, vectorize=enabled, budget=outer.budget if outer else None)


# --------------------------------------------------------------------------- comparing calls


def same_value(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether ``a`` and ``b`` would make ``fit`` do the same thing: equal data, tensors with
    equal values, functions with the same code and captured values, equivalent modules."""
    if a is b:
        return True
    if depth > 12 or type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
                and bool(torch.equal(a, b)))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (str, bytes, int, bool, complex, torch.device, torch.dtype)):
        return bool(a == b)
    if isinstance(a, nn.Module):
        return _same_module(a, b, depth + 1)
    if isinstance(a, types.FunctionType):
        return _same_function(a, b, depth + 1)
    if isinstance(a, types.MethodType):
        return (same_value(a.__func__, b.__func__, depth + 1)
                and same_value(a.__self__, b.__self__, depth + 1))
    if isinstance(a, functools.partial):
        return (same_value(a.func, b.func, depth + 1) and same_value(a.args, b.args, depth + 1)
                and same_value(a.keywords, b.keywords, depth + 1))
    if isinstance(a, HParams):
        return (a.seeds == b.seeds and a.id == b.id and a.axes == b.axes
                and same_value(dict(a), dict(b), depth + 1))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y, depth + 1) for x, y in zip(a, b,
                                                                                   strict=True))
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(same_value(a[k], b[k], depth + 1) for k in a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return all(same_value(getattr(a, f.name), getattr(b, f.name), depth + 1)
                   for f in dataclasses.fields(a))
    return False


def _same_function(a: types.FunctionType, b: types.FunctionType, depth: int) -> bool:
    if a.__code__ != b.__code__ or a.__globals__ is not b.__globals__:
        return False
    if not same_value(a.__defaults__, b.__defaults__, depth) or not same_value(
            a.__kwdefaults__, b.__kwdefaults__, depth):
        return False
    cells_a, cells_b = a.__closure__ or (), b.__closure__ or ()
    if len(cells_a) != len(cells_b):
        return False
    for cell_a, cell_b in zip(cells_a, cells_b, strict=True):
        try:
            left, right = cell_a.cell_contents, cell_b.cell_contents
        except ValueError:  # an empty cell: a name assigned later in the enclosing function
            return False
        if not same_value(left, right, depth):
            return False
    return True


def _same_module(a: nn.Module, b: nn.Module, depth: int) -> bool:
    """Equivalent modules for ``fit``: the same structure and attributes, and the same values
    wherever ``fit``'s re-initialisation (``reset_parameters``) does not overwrite them."""
    modules_a = list(a.named_modules(remove_duplicate=False))
    modules_b = list(b.named_modules(remove_duplicate=False))
    if [n for n, _ in modules_a] != [n for n, _ in modules_b]:
        return False
    for (_, left), (_, right) in zip(modules_a, modules_b, strict=True):
        if type(left) is not type(right) or has_hooks(left) or has_hooks(right):
            return False
        if not same_value(public_attributes(left), public_attributes(right), depth):
            return False
        reset = _reset_by_torch(left)
        for kind in ("_parameters", "_buffers"):
            mine, theirs = getattr(left, kind), getattr(right, kind)
            if list(mine) != list(theirs):
                return False
            if not all(_same_slot(mine[k], theirs[k], reset) for k in mine):
                return False
    return True


def _same_slot(value: torch.Tensor | None, other: torch.Tensor | None, reset: bool) -> bool:
    if value is None or other is None:
        return value is other
    if value.shape != other.shape or value.dtype != other.dtype:
        return False
    return reset or bool(torch.equal(value, other))


def _reset_by_torch(module: nn.Module) -> bool:
    """torch.nn's own layers re-initialise all their parameters in ``reset_parameters``."""
    return type(module).__module__.startswith("torch.nn.") and callable(
        getattr(module, "reset_parameters", None))


def public_attributes(module: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings a module keeps as plain attributes (``in_features``, ``p``, ...)."""
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and k not in skip}


def has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, name, None) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def captures_hparams(function: Any, depth: int = 0) -> bool:
    """Whether ``function`` reads hyperparameters through its closure rather than being given
    them: then the leader cannot build another configuration's model with it."""
    if depth > 3:
        return False
    if isinstance(function, HParams):
        return True
    if isinstance(function, functools.partial):
        return any(captures_hparams(v, depth + 1)
                   for v in (function.func, *function.args, *function.keywords.values()))
    if isinstance(function, types.MethodType):
        return captures_hparams(function.__self__, depth + 1)
    if isinstance(function, types.FunctionType):
        for cell in function.__closure__ or ():
            try:
                if captures_hparams(cell.cell_contents, depth + 1):
                    return True
            except ValueError:
                continue
    return False


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


def parse_size(text: str) -> int | None:
    """Bytes from ``512MiB``, ``4GB``, ``1.5GiB`` or a plain number; None for ``auto``."""
    if text.strip().lower() == "auto":
        return None
    match = _SIZE.match(text)
    if not match or _UNITS.get(match.group(2).lower()) is None:
        raise ValueError(f"{text!r} is not a size: use e.g. 512MiB, 4GB or auto")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 1:
        raise ValueError(f"{text!r} is not a size: it must be more than 0 bytes")
    return size


def memory_budget_option(config: pytest.Config) -> int | None:
    text = config.getoption("hparams_vectorize_memory", None) or config.getini(
        "hparams_vectorize_memory")
    try:
        return parse_size(str(text))
    except ValueError as exc:
        raise pytest.UsageError(f"--hparams-vectorize-memory / hparams_vectorize_memory: "
                                f"{exc}") from None


def default_budget(device: torch.device) -> int:
    """Half the free memory of a GPU; 2 GiB on the CPU, where bigger groups gain little."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    return _CPU_BUDGET


def configure(config: pytest.Config) -> None:
    """Keep the session's registry of shared runs and print, under -v, how each trial trained."""
    config.stash[_REGISTRY] = _Registry(config)
    config.pluginmanager.register(_VectorizeSummary(config), "hparams-vectorize")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config), "hparams-vectorize-xdist")


class _XdistHooks:
    """Tells each xdist worker the --dist mode, so that it knows whether the items of one test
    all come to it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[_DIST_KEY] = str(self.config.getoption("dist", "load"))


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
