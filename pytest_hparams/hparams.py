"""The read-only mapping a test receives as its ``hparams`` fixture."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any


class HParams(Mapping[str, Any]):
    """One configuration's hyperparameters: ``hparams["lr"]``, ``hparams.lr``, ``hparams.get``.

    ``seeds`` are the training seeds of this configuration and ``id`` its test id. Attribute
    access gives a hyperparameter unless the mapping has an attribute of that name (``get``,
    ``items``, ``keys``, ``values``, ``id``, ``axes``, ``seeds``): the marker refuses such keys
    (``shadowed``), so ``hparams.name`` never means two things.
    """

    __slots__ = ("_reads", "_values", "axes", "id", "seeds")

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        seeds: tuple[int, ...] = (0,),
        id: str = "default",
        axes: tuple[str, ...] = (),
    ) -> None:
        object.__setattr__(self, "_values", dict(values or {}))
        object.__setattr__(self, "seeds", tuple(seeds))
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "axes", tuple(axes))
        object.__setattr__(self, "_reads", None)  # the keys read, where something asks (observe)

    def __getitem__(self, key: str) -> Any:
        if self._reads is not None:
            self._reads.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        if self._reads is not None:  # dict(hparams), **hparams, items(): every key handed on
            self._reads.update(self._values)
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._values[name]
        except KeyError:
            have = ", ".join(self._values) or "none"
            raise AttributeError(
                f"hparams has no {name!r} (it has: {have}); use hparams.get({name!r}, default)"
            ) from None
        if self._reads is not None:
            self._reads.add(name)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("hparams are read-only; copy them with dict(hparams) to change one")

    def with_seeds(self, seeds: tuple[int, ...] | list[int]) -> HParams:
        """The same configuration with other training seeds (the gate's seeds on demand)."""
        return observe(HParams(self._values, seeds=tuple(seeds), id=self.id, axes=self.axes),
                       self._reads)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._reads is not None:  # pickled or copied: handed on whole, where reads go unseen
            self._reads.update(self._values)
        return (partial(HParams, seeds=self.seeds, id=self.id, axes=self.axes), (self._values,))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"HParams({inner}; seeds={list(self.seeds)})"


_OWN = {
    "get": "the mapping's get() method",
    "items": "the mapping's items() method",
    "keys": "the mapping's keys() method",
    "values": "the mapping's values() method",
    "id": "the configuration's test id",
    "axes": "the names of the axes that vary",
    "seeds": "the training seeds",
}


def observe(hparams: HParams, reads: set[str] | None) -> HParams:
    """``hparams``, noting into ``reads`` every key read from it from now on (by index, by
    attribute, ``get`` or ``in``; iterating it hands on, and so reads, every key). Objects that
    share one set pool what one configuration's test, model factory and ``fit`` read."""
    object.__setattr__(hparams, "_reads", reads)
    return hparams


def reads_of(hparams: HParams) -> set[str] | None:
    """The set ``observe`` notes ``hparams``' reads into, or None."""
    return hparams._reads


def unobserved(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``hparams`` as a dict that reads nothing: for the plugin's own bookkeeping
    (records, comparisons), which must not count as a use of a key."""
    if isinstance(hparams, HParams):
        return dict(hparams._values)
    return dict(hparams)


def shadowed(key: str) -> str | None:
    """What ``hparams.<key>`` gives instead of a hyperparameter named ``key``, or None when
    attribute access would give the hyperparameter."""
    if key in _OWN:
        return _OWN[key]
    if key in _ATTRIBUTES:
        return "an attribute of the mapping itself"
    return None


# Mapping's methods and HParams' fields answer attribute access before __getattr__ is asked;
# a preferring __getattr__ is no way out: dict(hparams) and **hparams call hparams.keys().
_ATTRIBUTES = frozenset(dir(HParams))
