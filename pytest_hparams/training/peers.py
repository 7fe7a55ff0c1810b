"""How a stack trains other configurations: the protocol between ``fit`` and the runs it shares.

While a pytest item (see ``pytest_hparams.sharing``) or a sweep row runs, ``current_peers()``
says which other configurations ``fit`` may train along with its own (``Peers.members``),
where it leaves their runs (``Peers.give``) and where a later call finds the runs left for it
(``Peers.take``). Each configuration stays its own item or row: a later call takes its runs only
after checking that it is the call its leader assumed (``training.compat``), so sharing never
changes a result. This module knows nothing of pytest and imports neither torch nor NumPy.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..hparams import HParams
    from ..recording import RunRecorder
    from ..trial import SeedRun, TrialResult
    from .compat import FitCall

_CPU_BUDGET = 2 * 1024**3
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}

_current: ContextVar[Peers | None] = ContextVar("pytest_hparams_peers", default=None)


@dataclass(frozen=True)
class Member:
    """A configuration that a stack's leader may train for another item (or sweep row).

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
    """Note on the trial how it trained (once, however many calls say it)."""
    if note and note not in result.notes:
        result.notes.append(note)


class Peers:
    """Where ``fit`` finds the other configurations of its stack and leaves or takes runs.

    ``restrict_keys``: configurations may differ only in keys that ``fit`` batches or that the
    model factory reads (pytest items, whose test bodies the leader cannot see); a sweep makes
    every call itself, so its rows may differ in anything.
    """

    restrict_keys = True

    def __init__(self, *, vectorize: bool = True, budget: int | None = None) -> None:
        self.vectorize = vectorize
        self.budget = budget
        self.calls = 0

    def next_call(self) -> int:
        """The index of this ``fit`` call within the running item (0 for its first)."""
        index = self.calls
        self.calls += 1
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
        """Remember why ``member`` was not trained with this stack (shown when it trains)."""

    def left_out(self, call: int) -> str | None:
        """Why an earlier stack left this item out, or None."""
        return None

    def failed(self) -> str | None:
        """Why vectorised training already failed for this test, or None."""
        return None

    def record_failure(self, reason: str) -> None:
        """Remember that this test's fit call cannot be vectorised, so no item tries again."""

    def stop_sharing(self, reason: str) -> None:
        """An item's call was not the one its leader assumed: this test's later items train
        their own configurations only, rather than stacks that would be thrown away."""


def current_peers() -> Peers | None:
    """The peers of the item or sweep row now running, or None outside both."""
    return _current.get()


@contextlib.contextmanager
def using_peers(peers: Peers) -> Iterator[Peers]:
    """Make ``peers`` the ``current_peers()`` inside the block."""
    token = _current.set(peers)
    try:
        yield peers
    finally:
        _current.reset(token)


class SweepPeers(Peers):
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
        self.current, self.calls = key, 0
        self.started.add(key)
        with using_peers(self):
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


def sweep_peers(members: list[Member], *, vectorize: bool = True) -> SweepPeers:
    """Peers for the rows of a sweep; inside a test, that test's switch and budget apply."""
    outer = current_peers()
    enabled = vectorize and (outer is None or outer.vectorize)
    return SweepPeers(members, vectorize=enabled, budget=outer.budget if outer else None)


# --------------------------------------------------------------------------- memory budget


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


def default_budget(device: torch.device) -> int:
    """Half the free memory of a GPU; 2 GiB on the CPU, where bigger stacks gain little."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    return _CPU_BUDGET
