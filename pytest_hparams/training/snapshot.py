"""What a ``fit`` call reads, frozen by value at the moment of the call, and whether a callable
keeps state between its calls.

A stack's leader trains other items' configurations with its own call's model factory, loss
and data; a member may take those runs only if its own call would have read the same values.
``snapshot`` freezes a value as ``fit`` sees it: numbers and strings by value, containers item
by item, tensors by identity and in-place version (or equal contents), and a function by its
code, defaults, closure cells and every global it (or a function, class or method of the user's
code that it reaches) loads, recursively. Two snapshots taken at two calls are compared with
``difference``, so a module-level dict that a test body changes between items is seen.

A loss or an augmentation runs once per step for the whole stack, but once per step per run in
the one-by-one loop, so a stack may only call one that keeps no state. ``snapshot(...,
strict=True)`` also says why that cannot be proven: code that assigns a global, an enclosing
variable or an attribute, or reads a mutable container or an object whose state lies outside
Python (iterators, generators, random generators). Code from installed packages, the standard
library and pytest_hparams is trusted as it is, by identity.
"""

from __future__ import annotations

import builtins
import dataclasses
import dis
import enum
import functools
import hashlib
import math
import os
import site
import sys
import sysconfig
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..hparams import HParams

#: Beyond this many values a snapshot gives up (and so never proves two calls equal).
MAX_VALUES = 20_000
_MAX_DEPTH = 40
#: The instance size of a class whose whole state is its ``__dict__``.
_PLAIN_SIZE = type("_Plain", (), {}).__basicsize__
_SCALARS = (type(None), bool, int, float, complex, str, bytes, range, slice, type(Ellipsis),
            torch.device, torch.dtype)
#: Names whose use lets code change state without an assignment fit can see.
_MUTATING_BUILTINS = frozenset({"setattr", "delattr", "globals", "vars", "exec", "eval",
                                "__import__", "locals"})
_MUTATING_ATTRIBUTES = frozenset({"__dict__", "__setattr__", "__delattr__", "__setitem__",
                                  "__delitem__"})
#: Methods that make or restore an object rather than run on one: they may assign attributes.
_CONSTRUCTORS = frozenset({"__init__", "__new__", "__post_init__", "__init_subclass__",
                           "__set_name__", "__setstate__", "__class_getitem__"})
_CLASS_MACHINERY = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__",
                              "__annotations__", "__slots__", "__firstlineno__",
                              "__static_attributes__", "__orig_bases__", "__parameters__",
                              "__match_args__", "__hash__", "__abstractmethods__"})


# --------------------------------------------------------------------------- frozen values


@dataclass(frozen=True)
class Leaf:
    """An immutable value, compared by type and value (NaN equals NaN)."""

    value: Any


@dataclass(frozen=True)
class Same:
    """A value compared by identity: modules, library code, builtins."""

    value: Any


@dataclass(frozen=True, eq=False)
class TensorAt:
    """A tensor and its in-place version counter when it was read."""

    tensor: torch.Tensor
    version: int


@dataclass(frozen=True)
class Node:
    """A composite value: its kind (a type or a tag) and its labelled parts, in order."""

    kind: Any
    parts: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Opaque:
    """A value whose state cannot be read: equal to nothing, itself included."""

    what: str


@dataclass(frozen=True)
class Cycle:
    """A reference back to the value being frozen ``depth`` levels up."""

    depth: int


@dataclass(frozen=True)
class Snapshot:
    """A value frozen at one moment; ``problem``: why, under ``strict``, it may keep state;
    ``opaque``: the first part whose state could not be read."""

    root: Any
    problem: str | None = None
    opaque: str | None = None


def snapshot(value: Any, *, strict: bool = False, reset_modules: bool = False) -> Snapshot:
    """``value`` frozen now. ``reset_modules``: a module given to ``fit`` is re-initialised
    per seed, so the values of parameters ``reset_parameters`` overwrites do not count."""
    freezer = _Freezer(strict, reset_modules)
    try:
        root = freezer.freeze(value, "")
    except Exception as exc:  # an object that fails when read: nothing is proven about it
        what = f"a value that raised {type(exc).__name__} when read"
        return Snapshot(Opaque(what), f"reads {what}" if strict else None, what)
    return Snapshot(root, freezer.problem, freezer.opaque)


def difference(before: Snapshot, now: Snapshot) -> str | None:
    """How ``now`` differs from ``before``, e.g. ``WIDTH['w'] = 64, was 4``; None if equal."""
    return _difference(before.root, now.root, "")


# --------------------------------------------------------------------------- freezing


class _Freezer:
    def __init__(self, strict: bool, reset_modules: bool) -> None:
        self.strict = strict
        self.reset_modules = reset_modules
        self.count = 0
        self.active: list[int] = []
        self.problem: str | None = None
        self.opaque: str | None = None

    def freeze(self, value: Any, path: str) -> Any:
        self.count += 1
        if self.count > MAX_VALUES or len(self.active) > _MAX_DEPTH:
            return self._opaque(path, "holds too many values to compare")
        if isinstance(value, enum.Enum) or type(value) in (types.ModuleType, type(None)):
            return Same(value)
        if isinstance(value, _SCALARS):
            return Leaf(value)
        if id(value) in self.active:
            return Cycle(len(self.active) - self.active.index(id(value)))
        self.active.append(id(value))
        try:
            return self._composite(value, path)
        finally:
            self.active.pop()

    def _composite(self, value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            return TensorAt(value, value._version)
        if isinstance(value, np.ndarray):
            # No version counter to read: a digest of the contents, without keeping a copy.
            flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
            digest = hashlib.blake2b(flat).digest()
            return Leaf((np.ndarray, value.shape, value.dtype.str, digest))
        if isinstance(value, np.generic):
            return Leaf(value.item())
        if isinstance(value, HParams):
            return Node(HParams, (("seeds", Leaf(value.seeds)), ("id", Leaf(value.id)),
                                  ("axes", Leaf(value.axes)),
                                  ("", self._container(dict(value), path))))
        if isinstance(value, functools.partial):
            return Node(functools.partial, (
                ("", self.freeze(value.func, path)), ("(args)", self.freeze(value.args, path)),
                ("(keywords)", self._container(value.keywords, path))))
        if isinstance(value, types.MethodType):
            return self._method(value, path)
        if isinstance(value, types.FunctionType):
            return self._function(value, path)
        if isinstance(value, type):
            return self._class(value, path)
        if callable(value) and type(value).__module__ == "builtins":
            return self._builtin(value, path)
        if isinstance(value, nn.Module):
            return self._module(value, path)
        if isinstance(value, (tuple, frozenset, types.MappingProxyType)):
            return self._container(value, path)
        if isinstance(value, (list, set, bytearray, Mapping)):
            if self.strict:
                self._refuse(f"reads the {type(value).__name__} {path!r}, which it may change "
                             f"between calls" if path else f"is a {type(value).__name__}")
            return self._container(value, path)
        return self._object(value, path)

    def _container(self, value: Any, path: str) -> Any:
        if isinstance(value, bytearray):
            return Leaf(bytes(value))
        if isinstance(value, (set, frozenset)):
            if all(isinstance(v, _SCALARS) for v in value):
                return Leaf(frozenset(value) if isinstance(value, set) else value)
            return self._opaque(path, f"a {type(value).__name__} of objects")
        if isinstance(value, Mapping):
            return Node(type(value), tuple(
                (f"[{k!r}]", Node("item", (("(key)", self.freeze(k, path)),
                                           ("", self.freeze(v, f"{path}[{k!r}]")))))
                for k, v in value.items()))
        return Node(type(value), tuple((f"[{i}]", self.freeze(v, f"{path}[{i}]"))
                                       for i, v in enumerate(value)))

    def _method(self, value: types.MethodType, path: str) -> Any:
        owner = value.__self__
        where = f"{path}.__self__" if path else "its object"
        if self.strict and not isinstance(owner, type) and not _is_library(type(owner)):
            why = _code_problem(value.__func__, "")
            if why is not None:
                self._refuse(f"is a method of a {type(owner).__name__} object, whose "
                             f"{value.__func__.__name__} {why}")
        return Node(types.MethodType, (("", self.freeze(value.__func__, path)),
                                       ("(self)", self.freeze(owner, where))))

    def _function(self, value: types.FunctionType, path: str) -> Any:
        if _is_library(value):
            return Same(value)
        if self.strict:
            why = _code_problem(value, path)
            if why is not None:
                self._refuse(why)
        code = value.__code__
        parts: list[tuple[str, Any]] = [("(code)", Leaf(code)),
                                        ("(module)", Same(value.__globals__))]
        parts.append(("(defaults)", self.freeze(value.__defaults__, path)))
        parts.append(("(keyword defaults)", self.freeze(value.__kwdefaults__, path)))
        for name, cell in zip(code.co_freevars, value.__closure__ or (), strict=True):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: a name assigned later in the enclosing function
                parts.append((name, Opaque("an unassigned variable")))
                continue
            parts.append((name, self.freeze(contents, _join(path, name))))
        namespace = value.__globals__
        for name in global_names(code):
            if name in namespace:
                parts.append((name, self.freeze(namespace[name], _join(path, name))))
            elif hasattr(builtins, name):
                parts.append((name, Same(getattr(builtins, name))))
            else:
                parts.append((name, Leaf("(undefined)")))
        return Node(types.FunctionType, tuple(parts))

    def _class(self, value: type, path: str) -> Any:
        if _is_library(value) or issubclass(value, enum.Enum):
            return Same(value)
        parts: list[tuple[str, Any]] = [("", Same(value))]
        for owner in value.__mro__:
            if owner is object or _is_library(owner):
                continue
            for name, attribute in vars(owner).items():
                if name in _CLASS_MACHINERY or name.startswith("_abc"):
                    continue
                if isinstance(attribute, (staticmethod, classmethod)):
                    attribute = attribute.__func__
                if isinstance(attribute, property):
                    attribute = (attribute.fget, attribute.fset, attribute.fdel)
                elif not callable(attribute) and name.startswith("_"):
                    continue  # data kept by the class's machinery (namedtuple, dataclass...)
                where = f"{owner.__name__}.{name}"
                parts.append((where, self._lenient(attribute, where) if name in _CONSTRUCTORS
                              else self.freeze(attribute, where)))
        return Node(type, tuple(parts))

    def _builtin(self, value: Any, path: str) -> Any:
        owner = getattr(value, "__self__", None)
        if owner is None or isinstance(owner, (types.ModuleType, type)):
            return Same(value)
        if self.strict:
            self._refuse(f"is a method of a {type(owner).__name__} object, whose state fit "
                         f"cannot read" if not path else f"reads {path!r}, a method of a "
                                                         f"{type(owner).__name__} object")
        where = f"{path}.__self__" if path else "its object"
        return Node(type(value), (("", Leaf(getattr(value, "__name__", ""))),
                                  ("(self)", self.freeze(owner, where))))

    def _module(self, value: nn.Module, path: str) -> Any:
        parts: list[tuple[str, Any]] = [("(class)", self.freeze(type(value), path))]
        for name, module in value.named_modules(remove_duplicate=False):
            where = _join(path, name)
            reset = self.reset_modules and reset_by_torch(module)
            parts.append((f"{where}(type)", Same(type(module))))
            attributes = {k: v for k, v in vars(module).items() if not k.startswith("_")}
            parts.append((f"{where}(attributes)", self._container(attributes, where)))
            for kind in ("_parameters", "_buffers"):
                for key, tensor in getattr(module, kind).items():
                    label = _join(where, key)
                    if tensor is None:
                        parts.append((label, Leaf(None)))
                    elif reset:
                        parts.append((label, Leaf((tuple(tensor.shape), tensor.dtype))))
                    else:
                        parts.append((label, TensorAt(tensor, tensor._version)))
            if self.strict and (has_hooks(module)):
                self._refuse(f"{where or 'the module'} has hooks")
        return Node(nn.Module, tuple(parts))

    def _object(self, value: Any, path: str) -> Any:
        cls = type(value)
        where = path or f"the {cls.__name__} object"
        if dataclasses.is_dataclass(value):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        elif _plain(cls) and hasattr(value, "__dict__"):
            fields = dict(vars(value))
        else:
            return self._opaque(path, f"a {cls.__name__} object, whose state fit cannot read",
                                refuse=f"is a {cls.__name__} object, whose state fit cannot "
                                       f"read" if not path else None)
        if self.strict and not _is_library(cls):
            for name, method in _methods(cls):
                why = _code_problem(method, "")
                if why is not None:
                    self._refuse(f"is a {cls.__name__} object, whose {name} {why}"
                                 if not path else f"reads {path!r}, a {cls.__name__} object "
                                                  f"whose {name} {why}")
        parts = [("(class)", self.freeze(cls, where))]
        parts += [(f".{k}", self.freeze(v, f"{path}.{k}" if path else k))
                  for k, v in fields.items()]
        return Node(cls, tuple(parts))

    def _lenient(self, value: Any, path: str) -> Any:
        """``value`` frozen without the proof of statelessness (a constructor may assign)."""
        strict, self.strict = self.strict, False
        try:
            return self.freeze(value, path)
        finally:
            self.strict = strict

    def _opaque(self, path: str, what: str, refuse: str | None = None) -> Opaque:
        text = f"{path!r}, {what}" if path else what
        if self.opaque is None:
            self.opaque = text
        if self.strict:
            self._refuse(refuse or f"reads {text}")
        return Opaque(text)

    def _refuse(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem


def _join(path: str, name: str) -> str:
    if not name:
        return path
    return f"{path}.{name}" if path else name


def _plain(cls: type) -> bool:
    """Whether instances of ``cls`` keep all their state in their ``__dict__``."""
    return cls.__basicsize__ <= _PLAIN_SIZE and not any(
        "__slots__" in vars(owner) for owner in cls.__mro__)


def _methods(cls: type) -> list[tuple[str, types.FunctionType]]:
    found = []
    for owner in cls.__mro__:
        if owner is object or _is_library(owner):
            continue
        for name, attribute in vars(owner).items():
            if isinstance(attribute, (staticmethod, classmethod)):
                attribute = attribute.__func__
            if isinstance(attribute, types.FunctionType) and name not in _CONSTRUCTORS:
                found.append((name, attribute))
    return found


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward or backward hooks of its own."""
    return any(getattr(module, name, None) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def reset_by_torch(module: nn.Module) -> bool:
    """torch.nn's own layers re-initialise all their parameters in ``reset_parameters``."""
    return type(module).__module__.startswith("torch.nn.") and callable(
        getattr(module, "reset_parameters", None))


# --------------------------------------------------------------------------- code


def _codes(code: types.CodeType) -> list[types.CodeType]:
    """``code`` and the code of the functions, lambdas and comprehensions defined inside it."""
    found = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.extend(_codes(const))
    return found


@functools.lru_cache(maxsize=4096)
def global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global names ``code`` (or code defined inside it) loads, in order."""
    names: dict[str, None] = {}
    for each in _codes(code):
        for instruction in dis.get_instructions(each):
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                names[str(instruction.argval)] = None
    return tuple(names)


@functools.lru_cache(maxsize=4096)
def _stores(code: types.CodeType) -> str | None:
    """What ``code`` (or code inside it) does that can change state outside one call."""
    outer = set(code.co_freevars)
    for each in _codes(code):
        for instruction in dis.get_instructions(each):
            op, name = instruction.opname, instruction.argval
            if op in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                return f"assigns the global {name!r}"
            if op in ("STORE_DEREF", "DELETE_DEREF") and name in outer:
                return f"assigns {name!r} of its enclosing function (nonlocal)"
            if op in ("STORE_ATTR", "DELETE_ATTR"):
                return f"assigns an attribute (.{name})"
            if op in ("LOAD_GLOBAL", "LOAD_NAME") and name in _MUTATING_BUILTINS:
                return f"calls {name}()"
            if op in ("LOAD_ATTR", "LOAD_METHOD") and name in _MUTATING_ATTRIBUTES:
                return f"uses .{name}"
    return None


def _code_problem(function: types.FunctionType, path: str) -> str | None:
    if _is_library(function):
        return None
    why = _stores(function.__code__)
    if why is None:
        return None
    return f"calls {path!r}, which {why}" if path else why


# --------------------------------------------------------------------------- library code


def _is_library(value: Any) -> bool:
    """Whether ``value`` (a function or class) comes from the standard library, an installed
    package or pytest_hparams: trusted as it is, compared by identity."""
    module = getattr(value, "__module__", None)
    return isinstance(module, str) and _library_module(module)


@functools.lru_cache(maxsize=1024)
def _library_module(name: str) -> bool:
    root = name.partition(".")[0]
    if root in ("builtins", "pytest_hparams", "torch", "numpy") or (
            root in sys.stdlib_module_names):
        return True
    module = sys.modules.get(name) or sys.modules.get(root)
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = os.path.realpath(file)
    return any(path.startswith(prefix) for prefix in _installed_prefixes())


@functools.cache
def _installed_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    folders = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    folders.update(getattr(site, "getsitepackages", list)())
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        folders.add(user)
    return tuple(os.path.join(os.path.realpath(folder), "") for folder in folders)


# --------------------------------------------------------------------------- comparing


def _difference(a: Any, b: Any, path: str) -> str | None:
    if type(a) is not type(b):
        return _changed(path, a, b)
    if isinstance(a, Leaf):
        return None if _same_leaf(a.value, b.value) else _changed(path, a, b)
    if isinstance(a, Same):
        return None if a.value is b.value else _changed(path, a, b)
    if isinstance(a, TensorAt):
        return None if _same_tensor(a, b) else _changed(path, a, b)
    if isinstance(a, Cycle):
        return None if a.depth == b.depth else _changed(path, a, b)
    if isinstance(a, Opaque):
        return f"{a.what}" if not path else f"it reads {a.what}"
    assert isinstance(a, Node)
    if a.kind is not b.kind and a.kind != b.kind:
        return _changed(path, a, b)
    if [label for label, _ in a.parts] != [label for label, _ in b.parts]:
        return _changed(path, a, b)
    for (label, left), (_, right) in zip(a.parts, b.parts, strict=True):
        found = _difference(left, right, _label(path, label))
        if found is not None:
            return found
    return None


def _label(path: str, label: str) -> str:
    if not label or label.startswith("("):
        return path
    if label.startswith(("[", ".")):
        return f"{path}{label}"
    return f"{path}.{label}" if path else label


def _same_leaf(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _same_tensor(a: TensorAt, b: TensorAt) -> bool:
    if a.tensor is b.tensor and a.version == b.version:
        return True
    # Another tensor: equal contents, unless either was changed in place since it was read.
    if a.tensor._version != a.version or b.tensor._version != b.version:
        return False
    x, y = a.tensor, b.tensor
    return (x.shape == y.shape and x.dtype == y.dtype and x.device == y.device
            and bool(torch.equal(x, y)))


def _changed(path: str, a: Any, b: Any) -> str:
    where = path or "it"
    if isinstance(a, Leaf) and isinstance(a.value, types.CodeType):
        return f"{where} is another function" if path else "another function"
    if isinstance(a, Leaf) and isinstance(b, Leaf) and isinstance(a.value, _SCALARS):
        return f"it reads {where} = {_short(b.value)}, its group's call read {_short(a.value)}"
    return f"it reads another {where}" if path else "another value"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
