"""The ``hparams`` marker, parsed once at collection into a typed ``MarkerSpec``.

Every keyword is validated here, with a message naming the test and the key; nothing else
reads a marker's raw keywords.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import SpaceError
from .gate.tolerance import marker_tolerances
from .hparams import HParams
from .space import DEFAULT_MAX_TRIALS, Config, Space, parse_space

if TYPE_CHECKING:
    import pytest
    import torch

    from .gate.tolerance import Tolerance


@dataclass(frozen=True)
class MarkerSpec:
    """One test's ``hparams`` markers, merged (the closest wins per key) and validated."""

    space: Space
    tolerance: Mapping[str, Tolerance | None] = field(default_factory=dict)
    device: torch.device | None = None  # None: the session's device
    skip_reason: str | None = None  # the marker's device is missing and skip_unavailable=True
    xfail: Callable[[HParams], Any] | None = None
    marks: Callable[[HParams], Any] | None = None
    vectorize: bool = True

    @property
    def test(self) -> str:
        return self.space.test

    @property
    def max_trials(self) -> int:
        return self.space.max_trials

    @property
    def varied_axes(self) -> tuple[str, ...]:
        """The axes that take more than one value in the space (every axis when none does):
        the table's columns, whichever of the configurations a run selects (``-k``, ``--lf``)."""
        space = self.space
        varied = tuple(key for key in space.order
                       if len(space.grid.get(key, ())) > 1
                       or (key in space.distributions and (space.samples or 1) > 1))
        return varied or tuple(k for k in space.order
                               if k in space.grid or k in space.distributions)

    def marks_for(self, config: Config) -> list[Any]:
        """The pytest marks of one configuration: skip, ``xfail=`` and ``marks=``."""
        import pytest

        marks: list[Any] = [pytest.mark.skip(reason=self.skip_reason)] if self.skip_reason else []
        returned = self._call("xfail", self.xfail, config)
        xfail = _verdict(returned)
        if xfail is None:
            raise SpaceError(f"{self.test}: hparams key 'xfail': must return True, False, None "
                             f"or a reason (text), got {_short(returned)} for {config.id}")
        if xfail:
            reason = xfail if isinstance(xfail, str) else f"declared xfail for {config.id}"
            marks.append(pytest.mark.xfail(reason=reason))
        added = self._call("marks", self.marks, config)
        if added is not None and added is not False:
            added = list(added) if isinstance(added, (list, tuple)) else [added]
            if not all(isinstance(m, (pytest.MarkDecorator, pytest.Mark)) for m in added):
                raise SpaceError(f"{self.test}: hparams key 'marks': must return pytest marks, "
                                 f"got {_short(added)} for {config.id}")
            marks.extend(added)
        return marks

    def _call(self, key: str, function: Callable[[HParams], Any] | None, config: Config) -> Any:
        if function is None:
            return None
        try:
            return function(HParams(config.values))
        except Exception as exc:
            raise SpaceError(f"{self.test}: hparams key {key!r}: raised {type(exc).__name__}: "
                             f"{exc} for {config.id}") from exc


def _verdict(value: Any) -> bool | str | None:
    """What an ``xfail=`` function returned, as False, True or a reason; None when it is
    something else (an array, a list), whose truth would be a guess."""
    if value is None or isinstance(value, (bool, str)):
        return value or False
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # numpy's or torch's bool
        try:
            value = item()
        except Exception:
            return None
        return value if isinstance(value, bool) else None
    return None


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:59] + "…"


def merge_markers(markers: Iterable[pytest.Mark]) -> tuple[list[Any], dict[str, Any]]:
    """The arguments of a test's ``hparams`` markers, given closest last: the closest wins."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for marker in markers:
        args.extend(marker.args)
        kwargs.update(marker.kwargs)
    return args, kwargs


def parse_marker(test: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 *, max_trials: int = DEFAULT_MAX_TRIALS) -> MarkerSpec:
    """Validate one test's marker keywords (or ``sweep``'s space); SpaceError names the test
    and the key of the first problem."""
    space = parse_space(test, args, kwargs, max_trials=max_trials)
    options = space.options
    device, skip_reason = _device(test, options)
    return MarkerSpec(
        space=space,
        tolerance=marker_tolerances(test, options.get("tolerance")),
        device=device,
        skip_reason=skip_reason,
        xfail=options.get("xfail"),
        marks=options.get("marks"),
        vectorize=_flag(test, options, "vectorize", True,
                        "(False trains the configurations one by one)"),
    )


def _flag(test: str, options: Mapping[str, Any], key: str, default: bool, hint: str = "") -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise SpaceError(f"{test}: hparams key {key!r}: must be True or False {hint}".rstrip()
                         + f", got {value!r}")
    return value


def _device(test: str, options: Mapping[str, Any]) -> tuple[torch.device | None, str | None]:
    skip_unavailable = _flag(test, options, "skip_unavailable", False)
    spec = options.get("device")
    if spec is None:
        return None, None
    from .devices import DeviceUnavailable, resolve_device  # torch: only for a marker's device

    try:
        return resolve_device(spec), None
    except DeviceUnavailable as exc:
        if skip_unavailable:
            return None, str(exc)
        raise SpaceError(f"{test}: hparams key 'device': {exc} (skip_unavailable=True skips "
                         f"the test instead)") from None
