"""Whether a model, a ``fit`` call or another configuration can join a stack, and if not why.

A stack trains rows that would each train the same way on their own: the same call (model,
data, loss, target, settings: ``FitCall``, each argument frozen by value when the call is made,
see ``snapshot``), a loss and augmentation that keep no state between calls, models of one
structure that ``torch.func`` can stack, and configurations that differ only in what ``fit``
batches or what the model factory reads. Every ``str | None`` function here returns the
reason something cannot stack, as noted on the trial, or None.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..hparams import HParams, observe, reads_of, unobserved
from .snapshot import Snapshot, difference, has_hooks, reset_by_torch, snapshot
from .sources import Sources

#: Settings that may differ between the rows of one stack.
BATCHED_SETTINGS = frozenset({"lr", "momentum", "weight_decay", "l1", "schedule", "decay",
                              "step_size", "clip", "label_smoothing", "epochs", "augment",
                              "optimizer", "betas"})
_DEVICES = ("cpu", "cuda", "mps")
_CALL_ARGUMENTS = ("model", "train", "val", "test", "loss_fn", "target", "stop_at_target",
                   "seeds", "device", "default_dtype")
#: The arguments a difference is worth spelling out for: what a callable read.
_CALLABLES = ("model", "loss_fn")


class CannotVectorize(Exception):
    """This call has to train one configuration at a time; the message says why.

    ``sticky``: the failure came from running the stack, so the test's other items need not
    try again.
    """

    def __init__(self, reason: str, *, sticky: bool = False) -> None:
        super().__init__(reason)
        self.sticky = sticky


# --------------------------------------------------------------------------- the call


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

    @functools.cached_property
    def reads(self) -> dict[str, Snapshot]:
        """Every argument frozen by value the first time this is asked for: a leader asks
        before it builds any model, a member when its own call is made."""
        reads = {name: read_argument(name, getattr(self, name)) for name in _CALL_ARGUMENTS}
        for key, value in self.settings.items():
            reads[f"keyword {key}="] = read_argument(key, value)
        return reads

    def difference(self, other: FitCall) -> str | None:
        """What makes ``other`` a different call (None when it is the same): any argument,
        or anything a model factory or loss reads, with another value than at this call."""
        mine, theirs = self.reads, other.reads
        for name in _CALL_ARGUMENTS:
            found = difference(mine[name], theirs[name])
            if found is not None:
                detail = f" ({found})" if name in _CALLABLES else ""
                return f"its fit() {name} differs{detail}"
        for key in dict.fromkeys([*self.settings, *other.settings]):
            name = f"keyword {key}="
            if name not in mine or name not in theirs or difference(mine[name], theirs[name]):
                return f"its fit() keyword {key}= differs"
        return None


def read_argument(name: str, value: Any) -> Snapshot:
    """``value``, an argument ``name`` of ``fit``, frozen now. A loss or augmentation must
    also be proven to keep no state; a module given as the model is re-initialised per seed."""
    return snapshot(value, strict=name in ("loss_fn", "augment"),
                    reset_modules=name == "model" and isinstance(value, nn.Module))


def stateful(name: str, value: Any, read: Snapshot | None = None) -> str | None:
    """Why a stack may not call ``value``, the ``loss_fn`` or ``augment`` function (``read``:
    it frozen already), in place of the one-by-one loop's calls; None for a function that keeps
    no state."""
    if value is None or isinstance(value, str):
        return None
    problem = (read or snapshot(value, strict=True)).problem
    if problem is None:
        return None
    return (f"the {name} {problem}: fit cannot prove that it keeps no state between calls, "
            f"and a stack calls it once per step for all its runs")


def call_problem(call: FitCall, sources: Sources) -> str | None:
    """Why this call's data, device or loss cannot be stacked at all."""
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
    # The call is read here, before the leader builds anything (``FitCall.reads``).
    return stateful("loss_fn", call.loss_fn, call.reads["loss_fn"])


def hparams_difference(trained: HParams, given: Mapping[str, Any]) -> str | None:
    """Why runs trained with ``trained`` are not those of a call given ``given``."""
    if isinstance(given, HParams) and same_value(unobserved(trained), unobserved(given)):
        return None
    return "its fit() hparams differ"


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The keys with another value (or missing) in one of two configurations, in order."""
    keys = list(dict.fromkeys([*a, *b]))
    return [k for k in keys if k not in a or k not in b or not same_value(a[k], b[k])]


class ReadHParams(HParams):
    """HParams that remember which keys a model factory read (and note them where
    ``hparams``' reads are observed: a model factory's read is a use of the key)."""

    __slots__ = ("_read",)

    def __init__(self, hparams: HParams) -> None:
        super().__init__(unobserved(hparams), seeds=hparams.seeds, id=hparams.id,
                         axes=hparams.axes)
        observe(self, reads_of(hparams))
        object.__setattr__(self, "_read", set())

    def __getitem__(self, key: str) -> Any:
        self._read.add(key)
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:
        self._read.add(name)
        return super().__getattr__(name)

    def __contains__(self, key: object) -> bool:
        self._read.add(key)
        return super().__contains__(key)

    def __iter__(self) -> Any:
        self._read.update(self._values)
        return super().__iter__()


def keys_read(hparams: Mapping[str, Any]) -> set[str]:
    """The keys a model factory read from ``hparams`` (a ``ReadHParams``; none from others)."""
    return set(hparams._read) if isinstance(hparams, ReadHParams) else set()


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


# --------------------------------------------------------------------------- the model


def model_problem(net: nn.Module) -> str | None:
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


def structure(net: nn.Module) -> list[tuple[Any, ...]]:
    """What rows must share: modules, their settings (but dropout rates), parameter shapes."""
    rows: list[tuple[Any, ...]] = []
    for name, module in net.named_modules(remove_duplicate=False):
        skip = ("p",) if type(module) is nn.Dropout else ()
        rows.append((name, type(module), public_attributes(module, skip)))
    rows += [(name, p.shape, p.dtype, p.requires_grad) for name, p in net.named_parameters()]
    rows += [(name, b.shape, b.dtype) for name, b in net.named_buffers()]
    return rows


def structure_difference(mine: list[tuple[Any, ...]],
                         theirs: list[tuple[Any, ...]]) -> str | None:
    """How the model of ``theirs`` (a ``structure``) differs from that of ``mine``."""
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


def public_attributes(module: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings a module keeps as plain attributes (``in_features``, ``p``, ...)."""
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and k not in skip}


# --------------------------------------------------------------------------- equal values


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
        reset = reset_by_torch(left)
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
