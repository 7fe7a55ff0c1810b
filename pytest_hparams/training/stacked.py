"""Many configurations of one architecture trained at once with torch.func: ``fit``'s default path.

``fit`` trains its seeds, and inside pytest the configurations of the other items of its test
function (see ``peers`` and ``pytest_hparams.sharing``), as one stack of models:
``torch.func.functional_call`` under ``vmap`` runs every (configuration, seed) row in one pass
and ``StackedOptimizer`` steps each row with its own hyperparameters. Each row is what the
sequential loop trains: its model is built right after seeding with its seed, its batches come in
its seed's order, its dropout masks and augmentations are drawn from its own copy of the random
generator in the sequential loop's order, and no reduction mixes rows, so a row that diverges
cannot disturb another. A row stops on its own (at its target, at divergence, after its epochs)
and leaves the stack.

This module decides who trains together (``Group``: the leader's seeds and the members that
``compat`` lets join), splits them into chunks that fit in memory (``chunk``) and hands each
member its runs. Rows may differ in seeds, lr, momentum, weight decay, L1, schedule and decay,
clip, label smoothing, epochs, augmentation, the optimiser within a family
(sgd/momentum/nesterov, adam/adamw, rmsprop) and anything the model factory reads that leaves
the model's structure alone (dropout rate, initialisation). Whatever cannot be vectorised trains
sequentially, with the reason noted on the trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..hparams import HParams, unobserved
from ..metrics import Threshold, parse_threshold
from ..recording import (
    RunRecorder,
    TrialRecorder,
    describe,
    free_accelerator_memory,
    is_out_of_memory,
    seed_everything,
)
from ..settings import TrainSettings
from ..trial import TrialResult
from .chunk import Chunk, Slot, Template
from .compat import (
    BATCHED_SETTINGS,
    CannotVectorize,
    FitCall,
    ReadHParams,
    call_problem,
    captures_hparams,
    differing_keys,
    hparams_difference,
    keys_read,
    model_problem,
    read_argument,
    same_value,
    stateful,
    structure,
    structure_difference,
)
from .optim import FAMILIES
from .peers import Member, Peers, Shared, add_note, current_peers, default_budget
from .snapshot import difference
from .sources import LossFn, ModelSpec, Sources, build_model
from .streams import RngState, restore_rng, rng_state, set_rng_state


class Fallback:
    """``fit`` trains one by one after all: with the models this attempt already built for its
    seeds (the factory is not called twice for a seed), each with the generator state its
    build left."""

    def __init__(self, built: Mapping[int, tuple[nn.Module, RngState]] | None = None) -> None:
        self.built = dict(built or {})

    def model(self, seed: int, build: Callable[[], nn.Module], device: torch.device) -> nn.Module:
        """The model for ``seed``, right after the sequential loop has seeded everything."""
        entry = self.built.pop(seed, None)
        if entry is None:
            return build()
        net, state = entry
        set_rng_state(device, state)
        return net


def fit_stacked(
    model: ModelSpec,
    data: tuple[Any, Any, Any],
    sources: Sources,
    hparams: Mapping[str, Any],
    config: TrainSettings,
    recorder: TrialRecorder,
    seeds: list[int],
    *,
    device: torch.device,
    target: Mapping[str, Any] | None,
    stop_at_target: bool,
    loss_fn: LossFn | None,
    settings: Mapping[str, Any],
    vectorize: bool,
) -> Fallback | None:
    """Train (or take from the group's leader) this call's runs; None when they are recorded,
    else how to train them sequentially.

    The reason for training sequentially, or how the runs were trained, is noted on the trial.
    """
    call = FitCall(model, *data, loss_fn, target, stop_at_target, tuple(seeds), device,
                   dict(settings))
    result = recorder.result
    peers = current_peers()
    index = peers.next_call() if peers is not None else 0
    group_allowed = True
    if peers is not None and vectorize and peers.vectorize:
        shared = peers.take(index)
        if shared is not None:
            why = shared.call.difference(call) or hparams_difference(shared.hparams, hparams)
            if why is None:
                shared.adopt_into(result)
                restore_rng(shared.rng, device)
                return None
            group_allowed = False
            peers.stop_sharing(why)
            add_note(result, f"vectorised: trained again by itself: {why} from the call that "
                             f"trained its group")
    problem = (_switched_off(vectorize, peers) or call_problem(call, sources)
               or stateful("augment", config.augment))
    if problem is not None:
        add_note(result, f"one by one: {problem}")
        return Fallback()
    members: list[Member] = []
    alone = _why_alone(peers, hparams, call) if group_allowed else None
    if peers is not None and group_allowed and alone is None:
        members = peers.members(index)
    leader = Member(result.nodeid or result.config_id, result.config_id, _as_hparams(hparams))
    group = Group(call, sources, leader, config, members, hparams=hparams,
                  restrict_keys=peers.restrict_keys if peers is not None else True,
                  budget=(peers.budget if peers is not None else None) or default_budget(device),
                  on_epoch=recorder.on_epoch)
    try:
        outcome = group.train()
    except CannotVectorize as exc:
        if peers is not None and exc.sticky:
            peers.record_failure(str(exc))
        add_note(result, f"one by one: {exc}")
        return Fallback(group.built())
    except KeyboardInterrupt:
        group.interrupted_into(result)
        raise
    except Exception as exc:
        # Building or probing the model failed: the sequential loop records the error itself.
        add_note(result, f"one by one: vectorised training raised {describe(exc)}")
        return Fallback(group.built())
    _hand_out(outcome, peers, index, result, alone or outcome.alone)
    restore_rng(outcome.leader.rng, device)
    return None


def _switched_off(vectorize: bool, peers: Peers | None) -> str | None:
    """Why this call may not stack: switched off, or failed already for this test."""
    if not vectorize or (peers is not None and not peers.vectorize):
        return "vectorised training is off (vectorize=False, or --hparams-no-vectorize)"
    if peers is not None:
        return peers.failed()
    return None


def _why_alone(peers: Peers | None, hparams: Mapping[str, Any], call: FitCall) -> str | None:
    """Why this item may vectorise only its own seeds, not other items' configurations."""
    if peers is None:
        return None
    why = peers.why_alone()
    if why is not None:
        return why
    opaque = call.reads["model"].opaque
    if opaque is not None:
        return (f"the model reads {opaque}, so fit cannot tell whether another "
                f"configuration's call would build the same model")
    if not peers.restrict_keys:
        return None
    own = peers.own_values()
    if own is not None and not (isinstance(hparams, HParams)
                                and same_value(unobserved(hparams), unobserved(own))):
        return "fit() was not given this item's own hparams"
    for name, value in (("model", call.model), ("loss_fn", call.loss_fn)):
        if captures_hparams(value):
            return (f"the {name} reads hparams from its closure; give fit a factory that "
                    f"takes them, e.g. fit(lambda hparams: make_model(hparams), ...)")
    return None


def _hand_out(outcome: Outcome, peers: Peers | None, index: int, result: TrialResult,
              alone: str | None) -> None:
    """Leave each member its runs, and record the leader's with how they were trained."""
    if peers is not None:
        for member, reason in outcome.left_out:
            peers.leave_out(member, index, reason)
        for member, shared in outcome.shared:
            peers.give(member, index, shared)
    if alone is not None:
        add_note(result, f"vectorised: other configurations train apart: {alone}")
    earlier = peers.left_out(index) if peers is not None else None
    if earlier is not None:
        add_note(result, f"vectorised: not with an earlier group: {earlier}")
    outcome.leader.adopt_into(result)


def _as_hparams(hparams: Mapping[str, Any]) -> HParams:
    if isinstance(hparams, HParams):
        return hparams
    return HParams(hparams)


# --------------------------------------------------------------------------- the group


@dataclass
class Outcome:
    """The leader's runs, each member's, and the members left out with the reason."""

    leader: Shared
    shared: list[tuple[Member, Shared]] = field(default_factory=list)
    left_out: list[tuple[Member, str]] = field(default_factory=list)
    alone: str | None = None


class Group:
    """The leader's configuration and the members that can train with it."""

    def __init__(self, call: FitCall, sources: Sources, leader: Member, config: TrainSettings,
                 members: list[Member], *, hparams: Mapping[str, Any], restrict_keys: bool,
                 budget: int, on_epoch: Callable[[RunRecorder], None] | None) -> None:
        self.call = call
        self.sources = sources
        self.members = [leader]
        self.candidates = members
        self.leader_hparams = hparams
        self.config = config
        self.restrict_keys = restrict_keys
        self.budget = budget
        self.on_epoch = on_epoch
        self.thresholds: list[Threshold] = [parse_threshold(metric, spec)
                                            for metric, spec in (call.target or {}).items()]
        self.slots: list[Slot] = []
        self.left_out: list[tuple[Member, str]] = []
        self.alone: str | None = None
        self.chunks = 0

    # -- planning

    def train(self) -> Outcome:
        leader_reads = self._add_leader()
        template = self.slots[0].net
        problem = model_problem(template)
        if problem is not None:
            raise CannotVectorize(problem)
        shape = structure(template)
        if any(structure_difference(shape, structure(s.net)) for s in self.slots[1:]):
            raise CannotVectorize("the model factory builds a different model for each seed")
        changed = difference(self.call.reads["model"], read_argument("model", self.call.model))
        if changed is not None and self.candidates:
            # The factory changes what it reads as it builds: another item's call would
            # build from what it left, not from what the leader's call read.
            self.alone = f"building this item's models changed what its model reads ({changed})"
            self.candidates = []
        for member in self.candidates:
            reason = self._add_member(member, shape, leader_reads)
            if reason is not None:
                self.left_out.append((member, reason))
        stack = Template.of(self.slots, self.sources, self.config, self.call.device)
        per_slot = stack.bytes_per_slot
        size = max(1, int(self.budget // max(per_slot, 1)))
        for start in range(0, len(self.slots), size):
            self._train_chunk(stack, self.slots[start:start + size])
        return self._outcome()

    def _add_leader(self) -> set[str]:
        hparams = self.leader_hparams
        tracked = ReadHParams(hparams) if isinstance(hparams, HParams) else hparams
        for seed in self.call.seeds:
            self.slots.append(self._build(0, seed, self.config, tracked))
        return keys_read(tracked)

    def built(self) -> dict[int, tuple[nn.Module, RngState]]:
        """The leader's models built so far (untouched: the stack trains copies)."""
        return {s.seed: (s.net, s.built_rng) for s in self.slots if s.member == 0}

    def _add_member(self, member: Member, shape: list[tuple[Any, ...]],
                    leader_reads: set[str]) -> str | None:
        try:
            settings = TrainSettings.resolve(member.hparams, self.call.settings)
            settings.augmentation()
        except Exception as exc:
            return f"its settings are invalid ({describe(exc)})"
        augment = stateful("augment", settings.augment)
        if augment is not None:
            return augment
        if settings.batch_size != self.config.batch_size:
            return f"batch_size {settings.batch_size} differs from {self.config.batch_size}"
        if FAMILIES[settings.optimizer] != FAMILIES[self.config.optimizer]:
            return (f"optimizer {settings.optimizer} cannot step together with "
                    f"{self.config.optimizer}")
        tracked = ReadHParams(member.hparams)
        index = len(self.members)
        try:
            built = [self._build(index, seed, settings, tracked) for seed in self.call.seeds]
        except Exception as exc:
            return f"building its model raised {describe(exc)}"
        if self.restrict_keys:
            allowed = BATCHED_SETTINGS | leader_reads | keys_read(tracked)
            own = self.leader_hparams
            other = [k for k in differing_keys(unobserved(own), unobserved(member.hparams))
                     if k not in allowed]
            if other:
                return (f"it differs in {other[0]!r}, which fit does not batch and the model "
                        f"factory does not read")
        for slot in built:
            problem = model_problem(slot.net) or structure_difference(shape, structure(slot.net))
            if problem is not None:
                return problem
        self.members.append(member)
        self.slots.extend(built)
        return None

    def _build(self, member: int, seed: int, settings: TrainSettings,
               hparams: Mapping[str, Any]) -> Slot:
        # The sequential loop: recorder.start(seed) seeds everything, then the model is built.
        seed_everything(seed)
        net = build_model(self.call.model, hparams)
        return Slot(member, seed, settings, net, rng_state(self.call.device),
                    settings.augmentation())

    # -- training

    def _train_chunk(self, template: Template, slots: list[Slot]) -> None:
        try:
            on_epochs = [self.on_epoch, *(member.on_epoch for member in self.members[1:])]
            Chunk(self.call, self.sources, template, slots, thresholds=self.thresholds,
                  on_epochs=on_epochs).train()
            self.chunks += 1
        except CannotVectorize:
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise CannotVectorize(f"vectorised training raised {describe(exc)}",
                                      sticky=True) from exc
            free_accelerator_memory()
            if len(slots) == 1:
                raise CannotVectorize("one configuration alone ran out of memory") from exc
            half = len(slots) // 2
            self._train_chunk(template, slots[:half])
            self._train_chunk(template, slots[half:])

    def _outcome(self) -> Outcome:
        for slot in self.slots:
            slot.hand_back(self.call.device)
        text = self._note()
        shares = []
        for index, member in enumerate(self.members):
            slots = [s for s in self.slots if s.member == index]
            assert all(s.run is not None and s.final_rng is not None for s in slots)
            last = slots[-1]
            rng = (last.seed, *last.final_rng)  # type: ignore[misc]
            shares.append(Shared(self.call, member.hparams,
                                 [s.run.record for s in slots],  # type: ignore[union-attr]
                                 {t.metric: t.value for t in self.thresholds}, text, rng))
        return Outcome(shares[0], list(zip(self.members[1:], shares[1:], strict=True)),
                       self.left_out, self.alone)

    def _note(self) -> str:
        """How the runs were trained, for every member's trial."""
        configurations, runs, seeds = len(self.members), len(self.slots), len(self.call.seeds)
        text = (f"vectorised: {runs} run{'s' if runs != 1 else ''} "
                f"({configurations} configuration{'s' if configurations != 1 else ''} × "
                f"{seeds} seed{'s' if seeds != 1 else ''}) "
                f"trained together in {self.chunks} chunk{'s' if self.chunks != 1 else ''}")
        if configurations > 1:
            text += f", led by {self.members[0].label}"
        return text + "; seconds are each run's share of the stack's time"

    def interrupted_into(self, result: TrialResult) -> None:
        """On Ctrl-C, the leader keeps what its runs recorded, as the sequential loop does."""
        for slot in self.slots:
            if slot.member != 0 or slot.run is None:
                continue
            if not slot.run.finished:
                slot.run.fail("interrupted", "interrupted (KeyboardInterrupt)")
                slot.run.finish()
            result.runs.append(slot.run.record)
