"""Many configurations of one architecture trained at once with torch.func: ``fit``'s default path.

``fit`` trains its seeds, and inside pytest the configurations of the other items of its test
function (see ``groups``), as one stack of models: ``torch.func.functional_call`` under ``vmap``
runs every (configuration, seed) row in one pass and ``StackedOptimizer`` steps each row with its
own hyperparameters. Each row is what the sequential loop trains: its model is built right after
seeding with its seed, its batches come in its seed's order, its dropout masks and augmentations
are drawn from its own copy of the random generator in the sequential loop's order, and no
reduction mixes rows, so a row that diverges cannot disturb another. A row stops on its own (at
its target, at divergence, after its epochs) and leaves the stack.

Rows may differ in seeds, lr, momentum, weight decay, L1, schedule and decay, clip, label
smoothing, epochs, augmentation, the optimiser within a family (sgd/momentum/nesterov,
adam/adamw, rmsprop) and anything the model factory reads that leaves the model's structure
alone (dropout rate, initialisation). Whatever cannot be vectorised trains sequentially, with
the reason noted on the trial.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from .groups import (
    FitCall,
    Member,
    Peers,
    Shared,
    add_note,
    captures_hparams,
    current_peers,
    default_budget,
    has_hooks,
    public_attributes,
    same_value,
)
from .hparams import HParams
from .metrics import Threshold, parse_threshold
from .recording import (
    RunRecorder,
    TrialRecorder,
    describe,
    free_accelerator_memory,
    is_out_of_memory,
    seed_everything,
)
from .settings import TrainSettings
from .stacked_optim import FAMILIES, RowSettings, StackedOptimizer
from .train import _EVAL_BATCH, LossFn, ModelSpec, _Source, build_model
from .trial import SeedRun

#: Settings that may differ between the rows of one group.
BATCHED_SETTINGS = frozenset({"lr", "momentum", "weight_decay", "l1", "schedule", "decay",
                              "step_size", "clip", "label_smoothing", "epochs", "augment",
                              "optimizer", "betas"})
_DEVICES = ("cpu", "cuda", "mps")
_OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "rmsprop": 2}

RngState = tuple[Tensor, Tensor | None]


class CannotVectorize(Exception):
    """This call has to train one configuration at a time; the message says why.

    ``sticky``: the failure came from running the stack, so the test's other items need not
    try again.
    """

    def __init__(self, reason: str, *, sticky: bool = False) -> None:
        super().__init__(reason)
        self.sticky = sticky


# --------------------------------------------------------------------------- fit's entry


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
        _set_rng_state(device, state)
        return net


def fit_vectorized(
    model: ModelSpec,
    data: tuple[Any, Any, Any],
    sources: tuple[_Source, _Source, _Source | None],
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
            why = shared.call.difference(call) or _hparams_difference(shared.hparams, hparams)
            if why is None:
                shared.adopt_into(result)
                _restore_rng(shared.rng, device)
                return None
            group_allowed = False
            peers.stop_sharing(why)
            add_note(result, f"vectorised: trained again by itself: {why} from the call that "
                             f"trained its group")
    problem = _call_problem(call, sources, vectorize, peers)
    if problem is not None:
        add_note(result, f"one by one: {problem}")
        return Fallback()
    members: list[Member] = []
    alone = _why_alone(peers, hparams, call) if group_allowed else None
    if peers is not None and group_allowed and alone is None:
        members = peers.members(index)
    leader = Member(result.nodeid or result.config_id, result.config_id, _as_hparams(hparams))
    group = _Group(call, sources, leader, config, members, hparams=hparams,
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
    _restore_rng(outcome.leader.rng, device)
    return None


def _call_problem(call: FitCall, sources: tuple[_Source, _Source, _Source | None],
                  vectorize: bool, peers: Peers | None) -> str | None:
    """Why this call cannot be vectorised at all, or None."""
    if not vectorize or (peers is not None and not peers.vectorize):
        return "vectorised training is off (vectorize=False, or --hparams-no-vectorize)"
    if peers is not None and peers.failed():
        return peers.failed()
    for source in sources:
        if source is not None and source.tensors is None:
            kind = "a DataLoader" if source.loader is not None else "a Dataset"
            return (f"{source.name} is {kind}; vectorised training takes (inputs, labels) "
                    f"tensors")
    if call.device.type not in _DEVICES:
        return f"device {call.device} is not one of {', '.join(_DEVICES)}"
    train = sources[0].tensors
    assert train is not None
    if call.loss_fn is None and train[1].is_floating_point():
        return "the default loss with floating-point labels (class probabilities)"
    return None


def _why_alone(peers: Peers | None, hparams: Mapping[str, Any], call: FitCall) -> str | None:
    """Why this item may vectorise only its own seeds, not other items' configurations."""
    if peers is None:
        return None
    why = peers.why_alone()
    if why is not None or not peers.restrict_keys:
        return why
    own = peers.own_values()
    if own is not None and not (isinstance(hparams, HParams)
                                and same_value(dict(hparams), dict(own))):
        return "fit() was not given this item's own hparams"
    for name, value in (("model", call.model), ("loss_fn", call.loss_fn)):
        if captures_hparams(value):
            return (f"the {name} reads hparams from its closure; give fit a factory that "
                    f"takes them, e.g. fit(lambda hparams: make_model(hparams), ...)")
    return None


def _hparams_difference(trained: HParams, given: Mapping[str, Any]) -> str | None:
    if isinstance(given, HParams) and same_value(trained, given):
        return None
    return "its fit() hparams differ"


def _as_hparams(hparams: Mapping[str, Any]) -> HParams:
    if isinstance(hparams, HParams):
        return hparams
    return HParams(hparams)


# --------------------------------------------------------------------------- random generators


def _rng_state(device: torch.device) -> RngState:
    """The generators a training step draws from: the CPU's, and the device's."""
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.get_rng_state(), torch.mps.get_rng_state()
    return torch.get_rng_state(), None


def _set_rng_state(device: torch.device, state: RngState) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        if device.type == "cuda":
            torch.cuda.set_rng_state(state[1], device)
        elif device.type == "mps":
            torch.mps.set_rng_state(state[1])


def _restore_rng(rng: tuple[int, Tensor, Tensor | None], device: torch.device) -> None:
    """Leave the generators as the sequential loop leaves them after its last seed."""
    seed, cpu, other = rng
    seed_everything(seed)
    _set_rng_state(device, (cpu, other))


def _dropout_mask(shape: torch.Size, p: float, like: Tensor) -> Tensor | None:
    """The noise ``F.dropout`` multiplies by on the CPU, drawn the same way (None: no draw)."""
    if p == 0:
        return None
    if p == 1:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    noise = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p)
    return noise.div_(1 - p)


class _SharedClockRun(RunRecorder):
    """A run in a stack: its clock is its share of the stack's wall time, each interval split
    evenly among the runs training during it (the runs' seconds add up to the wall time)."""

    share = 0.0

    @property
    def elapsed(self) -> float:
        return self.share


class _DropoutSlot(nn.Module):
    """Stands in for ``nn.Dropout`` in the stacked model: multiplies by a mask that was drawn
    outside ``vmap``, one per row, from that row's generator."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs * self.mask if self.training else inputs


# --------------------------------------------------------------------------- the group


@dataclass
class _Slot:
    """One row: a configuration and seed, with its model built as the sequential loop builds
    it."""

    member: int
    seed: int
    settings: TrainSettings
    net: nn.Module
    built_rng: RngState
    augment: Callable[[Tensor], Tensor] | None
    run: _SharedClockRun | None = None
    final_rng: RngState | None = None
    trained: dict[str, Tensor] | None = None

    def hand_back(self, device: torch.device) -> None:
        """Leave the trained values in the module the factory built, as the sequential loop
        trains that very module."""
        assert self.trained is not None
        net = self.net.to(device)
        with torch.no_grad():
            for name, value in (*net.named_parameters(), *net.named_buffers()):
                value.copy_(self.trained[name])


class _ReadHParams(HParams):
    """HParams that remember which keys a model factory read."""

    __slots__ = ("read",)

    def __init__(self, hparams: HParams) -> None:
        super().__init__(dict(hparams), seeds=hparams.seeds, id=hparams.id, axes=hparams.axes)
        object.__setattr__(self, "read", set())

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return super().__getattr__(name)

    def __contains__(self, key: object) -> bool:
        self.read.add(key)
        return key in self._values

    def __iter__(self) -> Any:
        self.read.update(self._values)
        return super().__iter__()


@dataclass
class _Outcome:
    leader: Shared
    shared: list[tuple[Member, Shared]] = field(default_factory=list)
    left_out: list[tuple[Member, str]] = field(default_factory=list)


class _Group:
    """The leader's configuration and the members that can train with it."""

    def __init__(self, call: FitCall, sources: tuple[_Source, _Source, _Source | None],
                 leader: Member, config: TrainSettings, members: list[Member], *,
                 hparams: Mapping[str, Any], restrict_keys: bool, budget: int,
                 on_epoch: Callable[[RunRecorder], None] | None) -> None:
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
        self.slots: list[_Slot] = []
        self.left_out: list[tuple[Member, str]] = []
        self.chunks = 0

    # -- planning

    def train(self) -> _Outcome:
        leader_reads = self._add_leader()
        template = self.slots[0].net
        problem = _model_problem(template)
        if problem is not None:
            raise CannotVectorize(problem)
        structure = _structure(template)
        if any(_structure_difference(structure, _structure(s.net)) for s in self.slots[1:]):
            raise CannotVectorize("the model factory builds a different model for each seed")
        for member in self.candidates:
            reason = self._add_member(member, structure, leader_reads)
            if reason is not None:
                self.left_out.append((member, reason))
        stack = _Template.of(self.slots, self.sources, self.config, self.call.device)
        per_slot = stack.bytes_per_slot
        size = max(1, int(self.budget // max(per_slot, 1)))
        for start in range(0, len(self.slots), size):
            self._train_chunk(stack, self.slots[start:start + size])
        return self._outcome()

    def _add_leader(self) -> set[str]:
        hparams = self.leader_hparams
        tracked = _ReadHParams(hparams) if isinstance(hparams, HParams) else hparams
        for seed in self.call.seeds:
            self.slots.append(self._build(0, seed, self.config, tracked))
        return set(getattr(tracked, "read", ()))

    def built(self) -> dict[int, tuple[nn.Module, RngState]]:
        """The leader's models built so far (untouched: the stack trains copies)."""
        return {s.seed: (s.net, s.built_rng) for s in self.slots if s.member == 0}

    def _add_member(self, member: Member, structure: list[tuple[Any, ...]],
                    leader_reads: set[str]) -> str | None:
        try:
            settings = TrainSettings.resolve(member.hparams, self.call.settings)
            settings.augmentation()
        except Exception as exc:
            return f"its settings are invalid ({describe(exc)})"
        if settings.batch_size != self.config.batch_size:
            return f"batch_size {settings.batch_size} differs from {self.config.batch_size}"
        if FAMILIES[settings.optimizer] != FAMILIES[self.config.optimizer]:
            return (f"optimizer {settings.optimizer} cannot step together with "
                    f"{self.config.optimizer}")
        tracked = _ReadHParams(member.hparams)
        index = len(self.members)
        try:
            built = [self._build(index, seed, settings, tracked) for seed in self.call.seeds]
        except Exception as exc:
            return f"building its model raised {describe(exc)}"
        if self.restrict_keys:
            allowed = BATCHED_SETTINGS | leader_reads | tracked.read
            own = self.leader_hparams
            other = [k for k in _differing_keys(own, member.hparams) if k not in allowed]
            if other:
                return (f"it differs in {other[0]!r}, which fit does not batch and the model "
                        f"factory does not read")
        for slot in built:
            problem = _model_problem(slot.net) or _structure_difference(
                structure, _structure(slot.net))
            if problem is not None:
                return problem
        self.members.append(member)
        self.slots.extend(built)
        return None

    def _build(self, member: int, seed: int, settings: TrainSettings,
               hparams: Mapping[str, Any]) -> _Slot:
        # The sequential loop: recorder.start(seed) seeds everything, then the model is built.
        seed_everything(seed)
        net = build_model(self.call.model, hparams)
        return _Slot(member, seed, settings, net, _rng_state(self.call.device),
                     settings.augmentation())

    # -- training

    def _train_chunk(self, template: _Template, slots: list[_Slot]) -> None:
        try:
            _Chunk(self, template, slots).train()
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

    def _outcome(self) -> _Outcome:
        for slot in self.slots:
            slot.hand_back(self.call.device)
        configurations = len(self.members)
        runs = len(self.slots)
        text = (f"vectorised: {runs} run{'s' if runs != 1 else ''} "
                f"({configurations} configuration{'s' if configurations != 1 else ''} × "
                f"{len(self.call.seeds)} seed{'s' if len(self.call.seeds) != 1 else ''}) "
                f"trained together in {self.chunks} chunk{'s' if self.chunks != 1 else ''}")
        if configurations > 1:
            text += f", led by {self.members[0].label}"
        text += "; seconds are each run's share of the stack's time"
        shares = []
        for index, member in enumerate(self.members):
            slots = [s for s in self.slots if s.member == index]
            assert all(s.run is not None and s.final_rng is not None for s in slots)
            last = slots[-1]
            rng = (last.seed, *last.final_rng)  # type: ignore[misc]
            shares.append(Shared(self.call, member.hparams,
                                 [s.run.record for s in slots],  # type: ignore[union-attr]
                                 {t.metric: t.value for t in self.thresholds}, text, rng))
        return _Outcome(shares[0], list(zip(self.members[1:], shares[1:], strict=True)),
                        self.left_out)

    def interrupted_into(self, result: Any) -> None:
        """On Ctrl-C, the leader keeps what its runs recorded, as the sequential loop does."""
        for slot in self.slots:
            if slot.member != 0 or slot.run is None:
                continue
            if not slot.run.finished:
                slot.run.fail("interrupted", "interrupted (KeyboardInterrupt)")
                slot.run.finish()
            result.runs.append(slot.run.record)


# --------------------------------------------------------------------------- compatibility


def _model_problem(net: nn.Module) -> str | None:
    """Why this model cannot be trained stacked, or None."""
    for name, module in net.named_modules():
        where = f"{type(module).__name__} {name!r}"
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            return f"the model keeps running statistics ({where})"
        if isinstance(module, nn.modules.dropout._DropoutNd) and type(module) is not nn.Dropout:
            return f"the model uses {where}; only nn.Dropout is drawn per configuration"
        if isinstance(module, nn.modules.lazy.LazyModuleMixin):
            return f"the model has an uninitialised lazy module ({where})"
        if has_hooks(module):
            return f"the model has hooks on {where}"
    params = list(net.named_parameters(remove_duplicate=False))
    if not params:
        return "the model has no parameters"
    if len(params) != len(list(net.named_parameters())):
        return "the model shares parameters between modules"
    if any(not p.is_floating_point() for _, p in params):
        return "the model has parameters that are not floating point"
    return None


def _structure(net: nn.Module) -> list[tuple[Any, ...]]:
    """What rows must share: modules, their settings (but dropout rates), parameter shapes."""
    rows: list[tuple[Any, ...]] = []
    for name, module in net.named_modules(remove_duplicate=False):
        skip = ("p",) if type(module) is nn.Dropout else ()
        rows.append((name, type(module), public_attributes(module, skip)))
    rows += [(name, p.shape, p.dtype, p.requires_grad) for name, p in net.named_parameters()]
    rows += [(name, b.shape, b.dtype) for name, b in net.named_buffers()]
    return rows


def _structure_difference(mine: list[tuple[Any, ...]],
                          theirs: list[tuple[Any, ...]]) -> str | None:
    for left, right in zip(mine, theirs, strict=False):
        if same_value(left, right):
            continue
        where = f"{right[0]!r}" if right[0] else "the top"
        if left[0] != right[0]:
            return f"its model has {where} where the group's has {left[0]!r}"
        if len(left) == 3 and left[1] is not right[1]:
            return (f"its model has a {right[1].__name__} at {where}, the group's a "
                    f"{left[1].__name__}")
        if len(left) == 3:
            return f"its model's {right[1].__name__} at {where} is set up differently"
        return f"its parameter {where} has another shape or dtype"
    if len(mine) != len(theirs):
        return "its model has other layers than the group's"
    return None


def _differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = list(dict.fromkeys([*a, *b]))
    return [k for k in keys if k not in a or k not in b or not same_value(a[k], b[k])]


# --------------------------------------------------------------------------- the stacked model


@dataclass
class _Template:
    """The first row's model as the stack's module, and what a step needs to know about it."""

    module: nn.Module
    dropouts: list[str]                       # dropout modules, in the order forward runs them
    mask_shapes: dict[int, list[torch.Size]]  # batch length -> each dropout's input shape
    mask_dtype: torch.dtype
    classes: int
    bytes_per_slot: int

    @classmethod
    def of(cls, slots: list[_Slot], sources: tuple[_Source, _Source, _Source | None],
           config: TrainSettings, device: torch.device) -> _Template:
        net = copy.deepcopy(slots[0].net).to(device)
        inputs = sources[0].tensors[0]  # type: ignore[index]
        n, batch = len(inputs), config.batch_size
        lengths = sorted({min(batch, n), n % batch} - {0})
        calls: dict[int, list[tuple[str, torch.Size]]] = {}
        activations: dict[int, int] = {}
        outputs: dict[int, Tensor] = {}
        for length in lengths:
            calls[length], activations[length], outputs[length] = _probe(net, inputs[:length])
        first = calls[lengths[-1]]
        names = [name for name, _ in first]
        if len(set(names)) != len(names):
            raise CannotVectorize("an nn.Dropout module runs more than once per forward pass")
        for name in names:
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent), attr, _DropoutSlot())
        net.requires_grad_(False)
        out = outputs[lengths[-1]]
        evaluated = max(len(s.tensors[0]) for s in sources if s is not None  # type: ignore[index]
                        )
        per_example = activations[lengths[-1]] / lengths[-1]
        weights = sum(t.numel() * t.element_size()
                      for t in [*slots[0].net.parameters(), *slots[0].net.buffers()])
        states = _OPTIMIZER_STATES[FAMILIES[config.optimizer]]
        per_slot = int(weights * (3 + states)
                       + per_example * (3 * batch + min(evaluated, _EVAL_BATCH)))
        classes = out.shape[1] if out.ndim > 1 else out.shape[0]
        dtype = next(iter(net.parameters())).dtype
        return cls(net, names, {k: [shape for _, shape in v] for k, v in calls.items()},
                   dtype, int(classes), per_slot)


def _probe(net: nn.Module, inputs: Tensor) -> tuple[list[tuple[str, torch.Size]], int, Tensor]:
    """Run ``net`` once (eval mode, so nothing is drawn): the dropouts it calls, in order, with
    their input shapes; the bytes of its activations; its output."""
    calls: list[tuple[str, torch.Size]] = []
    size = [0]
    handles = []
    for name, module in net.named_modules():
        if type(module) is nn.Dropout:
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, name=name: calls.append((name, args[0].shape))))
        if not list(module.children()):
            handles.append(module.register_forward_hook(
                lambda _m, _a, out: size.__setitem__(0, size[0] + (
                    out.numel() * out.element_size() if isinstance(out, Tensor) else 0))))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(inputs)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return calls, size[0], out


@dataclass
class _Stream:
    """One sequence of random draws: rows with the same seed, generator state, dropout rates
    and augmentation draw exactly the same numbers, so they share it."""

    state: RngState
    ps: tuple[float, ...]
    augment: Callable[[Tensor], Tensor] | None

    @property
    def draws(self) -> bool:
        return self.augment is not None or any(0 < p < 1 for p in self.ps)


class _Chunk:
    """Rows trained together, from stacking to their last epoch."""

    def __init__(self, group: _Group, template: _Template, slots: list[_Slot]) -> None:
        self.group = group
        self.call = group.call
        self.template = template
        self.slots = list(slots)
        device = self.call.device
        module = template.module
        names = [name for name, _ in module.named_parameters()]
        self.trainable = [name for name, p in slots[0].net.named_parameters() if p.requires_grad]
        self.weights = [name for name, p in slots[0].net.named_parameters() if p.ndim > 1]
        self.params = {name: _stack([dict(s.net.named_parameters())[name] for s in slots],
                                    device, name in self.trainable) for name in names}
        self.buffers = {name: _stack([dict(s.net.named_buffers())[name] for s in slots],
                                     device, False)
                        for name, _ in slots[0].net.named_buffers()}
        self.optimizer = StackedOptimizer([self.params[n] for n in self.trainable],
                                          [RowSettings.of(s.settings) for s in slots])
        dropouts = [dict(s.net.named_modules()) for s in slots]
        self.streams: dict[Hashable, _Stream] = {}
        self.stream_of: list[Hashable] = []
        for slot, modules in zip(slots, dropouts, strict=True):
            ps = tuple(float(modules[name].p) for name in template.dropouts)
            augment_key = slot.settings.augment
            key = (slot.seed, _state_key(slot.built_rng), ps,
                   augment_key if isinstance(augment_key, Hashable) else id(augment_key))
            self.streams.setdefault(key, _Stream(slot.built_rng, ps, slot.augment))
            self.stream_of.append(key)
        self.smoothing = any(s.settings.label_smoothing for s in slots)
        self.use_l1 = any(s.settings.l1 for s in slots)
        self.clipping = any(s.settings.clip is not None for s in slots)
        self._rows_changed()
        loss_fn = self.call.loss_fn

        def row_loss(params: dict[str, Tensor], buffers: dict[str, Tensor],
                     masks: dict[str, Tensor], inputs: Tensor, labels: Tensor,
                     hyper: dict[str, Tensor]) -> Tensor:
            outputs = functional_call(module, (params, buffers, masks), (inputs,))
            if loss_fn is not None:
                loss = loss_fn(outputs, labels)
            else:
                log_probs = F.log_softmax(outputs, 1 if outputs.ndim > 1 else 0)
                loss = F.nll_loss(log_probs, labels)
                if self.smoothing:
                    # torch's label smoothing: (1 - e) * nll + mean(-sum log p) * e / classes
                    smooth = -log_probs.sum(1 if outputs.ndim > 1 else 0).mean()
                    loss = hyper["keep"] * loss + smooth * hyper["spread"]
            if self.use_l1:
                loss = loss + hyper["l1"] * sum(params[n].abs().sum() for n in self.weights)
            return loss

        def row_outputs(params: dict[str, Tensor], buffers: dict[str, Tensor],
                        inputs: Tensor) -> Tensor:
            return functional_call(module, (params, buffers), (inputs,))

        self.criterion = loss_fn or F.cross_entropy
        self.batched_loss = vmap(row_loss, randomness="error")
        self.batched_outputs = vmap(row_outputs, in_dims=(0, 0, None), randomness="error")

    def _rows_changed(self) -> None:
        """Per-row values as tensors, for the rows now in the stack."""
        device, dtype = self.call.device, self.template.mask_dtype
        settings = [s.settings for s in self.slots]
        classes = self.template.classes

        def rows(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)

        self.hyper = {
            "l1": rows([float(s.l1) for s in settings]),
            "keep": rows([1 - float(s.label_smoothing) for s in settings]),
            "spread": rows([float(s.label_smoothing) / classes for s in settings]),
        }
        self.clip = rows([math.inf if s.clip is None else float(s.clip) for s in settings])
        self.clipped = torch.tensor([s.clip is not None for s in settings], device=device)

    # -- the loop

    def train(self) -> None:
        group, device = self.group, self.call.device
        for slot in self.slots:
            slot.run = _SharedClockRun(
                SeedRun(seed=slot.seed, device=str(device)), target=group.thresholds,
                stop_at_target=self.call.stop_at_target, epochs=slot.settings.epochs,
                on_epoch=group.members[slot.member].on_epoch if slot.member else group.on_epoch)
        train = self.group.sources[0].tensors
        assert train is not None
        inputs, labels = train
        n, batch = len(labels), self.slots[0].settings.batch_size
        orders = {seed: torch.Generator().manual_seed(seed)
                  for seed in dict.fromkeys(s.seed for s in self.slots)}
        self.template.module.train()
        self._last = time.perf_counter()
        epoch = 0
        while self.slots:
            lrs = [s.settings.lr_at(epoch) for s in self.slots]
            perms = {seed: torch.randperm(n, generator=orders[seed]).to(device)
                     for seed in dict.fromkeys(s.seed for s in self.slots)}
            order = torch.stack([perms[s.seed] for s in self.slots])
            total = torch.zeros(len(self.slots), device=device)
            seen = 0
            for start in range(0, n, batch):
                index = order[:, start:start + batch]
                batch_inputs, masks = self._draw(inputs[index], index.shape[1])
                loss = self.batched_loss(self.params, self.buffers, masks, batch_inputs,
                                         labels[index], self.hyper)
                trainable = [self.params[name] for name in self.trainable]
                grads = list(torch.autograd.grad(loss.sum(), trainable, allow_unused=True))
                if self.clipping:
                    grads = self._clip(grads)
                self.optimizer.step(grads, lrs)
                total += loss.detach() * index.shape[1]
                seen += index.shape[1]
            scores = self._scores(self.group.sources[1])
            train_loss = (total / max(seen, 1)).tolist()
            self._tick(range(len(self.slots)))
            done = []
            for row, slot in enumerate(self.slots):
                assert slot.run is not None
                stop = slot.run.log_epoch(train_loss=train_loss[row], **scores[row],
                                          lr=lrs[row])
                if stop or epoch + 1 >= slot.settings.epochs:
                    done.append(row)
            if done:
                self._finish(done)
            epoch += 1

    def _tick(self, rows: Any) -> None:
        """Split the wall time since the last tick among ``rows``."""
        now = time.perf_counter()
        rows = list(rows)
        for row in rows:
            run = self.slots[row].run
            assert run is not None
            run.share += (now - self._last) / len(rows)
        self._last = now

    def _draw(self, inputs: Tensor, length: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Each stream's augmentation and dropout masks for this batch, in the order the
        sequential loop draws them (augmentation first, then the forward pass)."""
        streams = self.streams
        if not any(stream.draws for stream in streams.values()):
            return inputs, {}
        device = self.call.device
        shapes = self.template.mask_shapes[length]
        like = torch.empty((), dtype=self.template.mask_dtype, device=device)
        drawn: dict[Hashable, tuple[Tensor | None, list[Tensor | None]]] = {}
        first_row = {}
        for row, key in enumerate(self.stream_of):
            first_row.setdefault(key, row)
        for key, row in first_row.items():
            stream = streams[key]
            if not stream.draws:
                drawn[key] = (None, [None] * len(shapes))
                continue
            _set_rng_state(device, stream.state)
            augmented = stream.augment(inputs[row]) if stream.augment is not None else None
            masks = [_dropout_mask(shape, p, like) for shape, p in zip(shapes, stream.ps,
                                                                      strict=True)]
            stream.state = _rng_state(device)
            drawn[key] = (augmented, masks)
        if any(augmented is not None for augmented, _ in drawn.values()):
            inputs = torch.stack([drawn[key][0] if drawn[key][0] is not None else inputs[row]
                                  for row, key in enumerate(self.stream_of)])
        ones = [torch.ones(shape, dtype=like.dtype, device=device) for shape in shapes]
        masks = {}
        for j, name in enumerate(self.template.dropouts):
            masks[f"{name}.mask"] = torch.stack([
                mask if (mask := drawn[key][1][j]) is not None else ones[j]
                for key in self.stream_of])
        return inputs, masks

    def _clip(self, grads: list[Tensor | None]) -> list[Tensor | None]:
        """``clip_grad_norm_`` per row: the norm over each row's gradients."""
        present = [g for g in grads if g is not None]
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in present])
        total = torch.linalg.vector_norm(norms, 2, dim=0)
        coefficient = torch.clamp(self.clip / (total + 1e-6), max=1.0)
        coefficient = torch.where(self.clipped, coefficient, torch.ones_like(coefficient))
        return [None if g is None else g * coefficient.view(-1, *([1] * (g.ndim - 1)))
                for g in grads]

    @torch.no_grad()
    def _scores(self, source: _Source, rows: list[int] | None = None) -> list[dict[str, float]]:
        """``train.evaluate`` for every row (or ``rows``): the same chunks, the same sums."""
        params, buffers = self.params, self.buffers
        if rows is not None:
            index = torch.tensor(rows, device=self.call.device)
            params = {k: v[index] for k, v in params.items()}
            buffers = {k: v[index] for k, v in buffers.items()}
        count_rows = len(rows) if rows is not None else len(self.slots)
        module = self.template.module
        module.eval()
        data = source.tensors
        assert data is not None
        inputs, labels = data
        loss_sum = [0.0] * count_rows
        correct = [0] * count_rows
        count, classify = 0, True
        for start in range(0, len(labels), _EVAL_BATCH):
            batch_inputs = inputs[start:start + _EVAL_BATCH]
            batch_labels = labels[start:start + _EVAL_BATCH]
            outputs = self.batched_outputs(params, buffers, batch_inputs)
            for row in range(count_rows):
                # Row by row, so that each loss is reduced exactly as train.evaluate does.
                loss_sum[row] += float(self.criterion(outputs[row], batch_labels)) * len(
                    batch_labels)
            classify = classify and outputs.ndim == 3 and not batch_labels.is_floating_point()
            if classify:
                hits = (outputs.argmax(dim=2) == batch_labels).sum(1).tolist()
                for row in range(count_rows):
                    correct[row] += int(hits[row])
            count += len(batch_labels)
        module.train()
        scores = []
        for row in range(count_rows):
            score = {"loss": loss_sum[row] / max(count, 1)}
            if classify:
                score["accuracy"] = correct[row] / max(count, 1)
            scores.append(score)
        return scores

    def _finish(self, rows: list[int]) -> None:
        """Close the runs of ``rows`` (test scores, final generator state); drop their rows."""
        test = self.group.sources[2]
        tested = self._scores(test, rows) if test is not None else [{} for _ in rows]
        self._tick(rows)
        for row, scores in zip(rows, tested, strict=True):
            slot = self.slots[row]
            assert slot.run is not None
            slot.run.finish(**{f"test_{k}": v for k, v in scores.items()})
            stream = self.streams[self.stream_of[row]]
            slot.final_rng = stream.state
            slot.trained = {name: value[row].detach()
                            for name, value in (*self.params.items(), *self.buffers.items())}
        keep = [row for row in range(len(self.slots)) if row not in set(rows)]
        self.slots = [self.slots[row] for row in keep]
        self.stream_of = [self.stream_of[row] for row in keep]
        self.streams = {key: self.streams[key] for key in dict.fromkeys(self.stream_of)}
        if not keep:
            return
        index = torch.tensor(keep, device=self.call.device)
        self.params = {name: _narrow(value, index) for name, value in self.params.items()}
        self.buffers = {name: value[index] for name, value in self.buffers.items()}
        self.optimizer.keep(index, [self.params[name] for name in self.trainable])
        self._rows_changed()


def _stack(tensors: list[Tensor], device: torch.device, trainable: bool) -> Tensor:
    stacked = torch.stack([t.detach() for t in tensors]).to(device)
    return stacked.requires_grad_(trainable)


def _narrow(value: Tensor, index: Tensor) -> Tensor:
    return value.detach()[index].requires_grad_(value.requires_grad)


def _state_key(state: RngState) -> tuple[bytes, ...]:
    return tuple(bytes(t.cpu().numpy().tobytes()) for t in state if t is not None)
