"""Search spaces: grid axes, distributions, seeded sampling, validation and readable ids.

A marker's keywords are axes. A list, tuple or range is a grid axis, a dict is a grid axis whose
keys are the ids, a distribution (``choice``, ``uniform``, ``log_uniform``, ``int_uniform``) is
sampled ``samples`` times with the sampling ``seed``, and any other value is fixed for every
configuration. A handful of keywords are options rather than axes (see ``OPTIONS``).
"""

from __future__ import annotations

import difflib
import itertools
import math
import numbers
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SpaceError
from .hparams import shadowed
from .metrics import Threshold, parse_threshold

DEFAULT_MAX_TRIALS = 10_000

#: Marker keywords that configure the space instead of being hyperparameters.
OPTIONS: dict[str, str] = {
    "seeds": "training seeds run inside each test item: an int N (seeds 0..N-1) or a list of ints",
    "samples": "how many points to draw from the distributions",
    "seed": "the seed of the sampling of distributions (an int)",
    "where": "a function of the hyperparameters; configurations where it is false are dropped",
    "expect": "thresholds the mean over seeds must meet, e.g. {'accuracy': '>=0.9'}",
    "xfail": "a function of the hyperparameters: true, or a reason string, marks it xfail",
    "marks": "a function of the hyperparameters returning pytest marks for that configuration",
    "device": "the device this test trains on, instead of --hparams-device",
    "skip_unavailable": "skip this test, instead of failing, when its device is unavailable",
    "max_trials": "the most configurations this test may expand to",
    "tolerance": "per-test baseline tolerances, e.g. {'accuracy': '-0.02'}",
    "vectorize": "False trains this test's configurations one by one",
}


# --------------------------------------------------------------------------- distributions


class Distribution:
    """A one-dimensional distribution that a random search samples from."""

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def check(self) -> str | None:
        """Return what is wrong with the parameters, or None."""
        raise NotImplementedError

    def strategy(self) -> Any:
        """A hypothesis strategy over the same values."""
        raise NotImplementedError

    def format(self, value: Any) -> str:
        return format_value(value)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class Choice(Distribution):
    """Pick one of ``values`` uniformly."""

    values: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        return self.values[rng.randrange(len(self.values))]

    def check(self) -> str | None:
        return None if self.values else "choice() needs at least one value"

    def strategy(self) -> Any:
        from hypothesis import strategies as st

        return st.sampled_from(self.values)


@dataclass(frozen=True)
class Uniform(Distribution):
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return self.low + (self.high - self.low) * rng.random()

    def check(self) -> str | None:
        if not (_is_real(self.low) and _is_real(self.high)):
            return f"bounds must be numbers, got {self.low!r} and {self.high!r}"
        try:
            if not (math.isfinite(self.low) and math.isfinite(self.high)):
                return f"bounds must be finite, got {self.low!r} and {self.high!r}"
            if not math.isfinite(float(self.high) - float(self.low)):
                return f"the interval from {self.low!r} to {self.high!r} is too wide to sample"
        except OverflowError:
            return f"bounds must fit in a float, got {self.low!r} and {self.high!r}"
        if self.low > self.high:
            return f"low={self.low!r} is greater than high={self.high!r}"
        return None

    def strategy(self) -> Any:
        from hypothesis import strategies as st

        return st.floats(self.low, self.high)

    def format(self, value: Any) -> str:
        return f"{value:.4g}"


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A float whose logarithm is uniform on ``[log low, log high]``: for rates and strengths."""

    def sample(self, rng: random.Random) -> float:
        low, high = math.log(self.low), math.log(self.high)
        return math.exp(low + (high - low) * rng.random())

    def check(self) -> str | None:
        problem = super().check()
        if problem is None and self.low <= 0:
            return f"log_uniform needs bounds > 0, got low={self.low!r}"
        return problem


@dataclass(frozen=True)
class IntUniform(Distribution):
    """An int drawn uniformly from ``low..high``, both included."""

    low: int
    high: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def check(self) -> str | None:
        if not all(isinstance(b, numbers.Integral) and not isinstance(b, bool)
                   for b in (self.low, self.high)):
            return f"int_uniform needs integer bounds, got {self.low!r} and {self.high!r}"
        if self.low > self.high:
            return f"low={self.low!r} is greater than high={self.high!r}"
        return None

    def strategy(self) -> Any:
        from hypothesis import strategies as st

        return st.integers(self.low, self.high)


def choice(*values: Any) -> Choice:
    """Sample one of the values: ``choice("relu", "tanh")`` or ``choice(["relu", "tanh"])``."""
    if len(values) == 1 and isinstance(values[0], (list, tuple)):
        values = tuple(values[0])
    return Choice(tuple(values))


def uniform(low: float, high: float) -> Uniform:
    """Sample a float uniformly from ``[low, high]``."""
    return Uniform(low, high)


def log_uniform(low: float, high: float) -> LogUniform:
    """Sample a float log-uniformly from ``[low, high]`` (both > 0): learning rates, L2."""
    return LogUniform(low, high)


def int_uniform(low: int, high: int) -> IntUniform:
    """Sample an int uniformly from ``low..high``, both included."""
    return IntUniform(low, high)


# --------------------------------------------------------------------------- ids


def format_value(value: Any) -> str:
    """A short, stable text for a hyperparameter value, used in test ids and tables."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        short = f"{value:.6g}"  # 1e+06 rather than 1000000.0, when it is exact
        text = short if float(short) == value and len(short) < len(repr(value)) else repr(value)
        # A float reads as one (lr=1.0, not lr=1), so that -k 1.0 selects it.
        return text if any(c in text for c in ".enia") else f"{text}.0"
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(format_value(v) for v in value) + ")"
    name = getattr(value, "__name__", None)
    if isinstance(name, str):
        return name
    return type(value).__name__


#: The '-' before the next ``key=`` of an id (a value may hold '-', as in ``lr=1e-05``).
_NEXT_KEY = re.compile(r"-(?=[^-=\[\]]+=)")


def parse_id(config_id: str) -> dict[str, str] | None:
    """The ``key: value-id`` texts an id joins (``lr=0.1-opt=adam``), the inverse of the ids
    ``Space.expand`` builds; ``{}`` for ``default``, None for an id that is not one."""
    if config_id == "default":
        return {}
    texts: dict[str, str] = {}
    for piece in _NEXT_KEY.split(config_id):
        key, equals, value = piece.partition("=")
        if not equals or not key or key in texts:
            return None
        texts[key] = value
    return texts


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Config:
    """One point of a space: every hyperparameter's value, the keys of its axes, its id."""

    values: Mapping[str, Any]
    axes: tuple[str, ...]
    id: str
    index: int
    labels: Mapping[str, str] = field(default_factory=dict)  # names of named values (dict axes)


@dataclass(frozen=True)
class Space:
    """A validated search space, parsed from one test's ``hparams`` markers."""

    test: str
    grid: dict[str, tuple[tuple[str, Any], ...]]  # key -> ((id, value), ...)
    distributions: dict[str, Distribution]
    fixed: dict[str, Any]
    order: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    samples: int | None = None
    sample_seed: int = 0
    where: Callable[[Mapping[str, Any]], Any] | None = None
    expect: dict[str, Threshold] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    max_trials: int = DEFAULT_MAX_TRIALS

    @property
    def size_before_filter(self) -> int:
        size = math.prod(len(axis) for axis in self.grid.values())
        return size * (self.samples or 1)

    def expand(self) -> list[Config]:
        """Every configuration, in a stable order: samples outermost, then the grid."""
        draws = self._draws()
        axes = tuple(k for k in self.order if k in self.grid or k in self.distributions)
        configs: list[Config] = []
        for sample_index, draw in enumerate(draws):
            for point in itertools.product(*self.grid.values()):
                values: dict[str, Any] = {}
                labels: dict[str, str] = {}
                ids: list[str] = []
                if self.samples is not None:
                    ids.append(f"sample={sample_index}")
                chosen = dict(zip(self.grid, point, strict=True))
                for key in self.order:
                    if key in chosen:
                        value_id, values[key] = chosen[key]
                        ids.append(f"{key}={value_id}")
                        if value_id != format_value(values[key]):
                            labels[key] = value_id
                    elif key in draw:
                        values[key] = draw[key]
                        ids.append(f"{key}={self.distributions[key].format(draw[key])}")
                    else:
                        values[key] = self.fixed[key]
                if self.where is not None and not self._keep(values):
                    continue
                configs.append(Config(values, axes, "-".join(ids) or "default", len(configs),
                                      labels))
        self._check_ids(configs)
        if not configs:
            raise SpaceError(
                f"{self.test}: hparams key 'where': the constraint removes every one of the "
                f"{self.size_before_filter} combinations; loosen it or widen the axes"
            )
        return configs

    def _check_ids(self, configs: list[Config]) -> None:
        """Two configurations whose ids join to the same text (``a='1-b=2', b='2'`` and
        ``a='1', b='2-b=2'``) would be told apart only by a suffix pytest adds: refuse them."""
        seen: dict[str, Config] = {}
        for config in configs:
            other = seen.setdefault(config.id, config)
            if other is config:
                continue
            def shown(c: Config) -> str:
                return ", ".join(f"{k}={c.values[k]!r}" for k in c.axes)

            key = next((k for k in config.axes
                        if repr(config.values[k]) != repr(other.values[k])), config.axes[0])
            raise SpaceError(
                f"{self.test}: hparams key {key!r}: the configurations {shown(other)} and "
                f"{shown(config)} would both have the id {config.id!r}; give values whose ids "
                f"do not run into another axis's, or a dict of id -> value"
            )

    def strategy(self) -> Any:
        """A hypothesis strategy drawing configurations from this space (grid and sampled)."""
        from hypothesis import strategies as st

        parts: dict[str, Any] = {}
        for key in self.order:
            if key in self.grid:
                parts[key] = st.sampled_from([v for _, v in self.grid[key]])
            elif key in self.distributions:
                parts[key] = self.distributions[key].strategy()
            else:
                parts[key] = st.just(self.fixed[key])
        strategy = st.fixed_dictionaries(parts)
        if self.where is not None:
            strategy = strategy.filter(self._keep)
        return strategy

    def _draws(self) -> list[dict[str, Any]]:
        if self.samples is None:
            return [{}]
        rng = random.Random(self.sample_seed)
        return [{k: d.sample(rng) for k, d in self.distributions.items()}
                for _ in range(self.samples)]

    def _keep(self, values: dict[str, Any]) -> bool:
        from .hparams import HParams

        assert self.where is not None
        try:
            return bool(self.where(HParams(values)))
        except Exception as exc:
            shown = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
            raise SpaceError(
                f"{self.test}: hparams key 'where': the constraint raised "
                f"{type(exc).__name__}: {exc} for {shown}"
            ) from exc


# --------------------------------------------------------------------------- parsing


def parse_space(
    test: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    max_trials: int = DEFAULT_MAX_TRIALS,
) -> Space:
    """Validate one test's marker arguments and build its space.

    Raises SpaceError naming ``test`` and the offending key for any bad input.
    """
    spec: dict[str, Any] = {}
    for arg in args:
        if not isinstance(arg, Mapping):
            raise SpaceError(
                f"{test}: hparams takes keywords (or one dict of them), got the positional "
                f"argument {arg!r}"
            )
        spec.update(arg)
    spec.update(kwargs or {})
    return _Parser(test, spec, max_trials).parse()


class _Parser:
    def __init__(self, test: str, spec: dict[str, Any], max_trials: int) -> None:
        self.test = test
        self.spec = spec
        self.max_trials = max_trials

    def error(self, key: str, problem: str) -> SpaceError:
        return SpaceError(f"{self.test}: hparams key {key!r}: {problem}")

    def parse(self) -> Space:
        grid: dict[str, tuple[tuple[str, Any], ...]] = {}
        distributions: dict[str, Distribution] = {}
        fixed: dict[str, Any] = {}
        options: dict[str, Any] = {}
        order: list[str] = []
        # The limit is known before any axis is read, so that a huge one is never materialised.
        self.limit = self._positive_int(self.spec, "max_trials", self.max_trials)
        for key, value in self.spec.items():
            if not isinstance(key, str) or not key:
                raise self.error(str(key), "keys must be non-empty strings")
            if key in OPTIONS:
                options[key] = value
                continue
            own = shadowed(key)
            if own is not None:
                raise self.error(key, f"hparams.{key} is {own}, so it cannot give this "
                                      f"hyperparameter; rename it (for example to 'hp_{key}')")
            self._check_spelling(key, value)
            order.append(key)
            if isinstance(value, Distribution):
                problem = value.check()
                if problem:
                    raise self.error(key, problem)
                distributions[key] = value
            elif _is_axis(value):
                grid[key] = self._axis(key, value)
            elif isinstance(value, (set, frozenset)):
                raise self.error(key, "a set has no order; give a list so the ids are stable")
            elif isinstance(value, Iterator):
                raise self.error(key, "an iterator can only be read once; give a list")
            else:
                fixed[key] = value

        samples = self._samples(options, distributions)
        sample_seed = self._sample_seed(options, distributions)
        max_trials = self.limit
        space = Space(
            test=self.test,
            grid=grid,
            distributions=distributions,
            fixed=fixed,
            order=tuple(order),
            seeds=self._seeds(options.get("seeds", 1)),
            samples=samples,
            sample_seed=sample_seed,
            where=self._callable(options, "where"),
            expect=self._expect(options.get("expect")),
            options=options,
            max_trials=max_trials,
        )
        for key in ("xfail", "marks"):
            self._callable(options, key)
        if space.size_before_filter > max_trials:
            sizes = " × ".join(f"{k}: {len(v)}" for k, v in grid.items())
            if samples:
                sizes = f"{sizes} × samples: {samples}" if sizes else f"samples: {samples}"
            raise self.error(
                "max_trials",
                f"the space has {space.size_before_filter:,} configurations ({sizes}), above the "
                f"limit of {max_trials:,}; shrink it, sample it, or raise max_trials=",
            )
        return space

    def _check_spelling(self, key: str, value: Any) -> None:
        close = difflib.get_close_matches(key, OPTIONS, n=1, cutoff=0.8)
        if close:
            raise self.error(
                key,
                f"{key!r} is not an option; did you mean {close[0]}={value!r}? "
                f"({close[0]}: {OPTIONS[close[0]]})",
            )

    def _axis(self, key: str, value: Any) -> tuple[tuple[str, Any], ...]:
        size = _length(value)
        if size > self.limit:
            raise self.error(
                "max_trials",
                f"the axis {key!r} alone has {size:,} values, above the limit of "
                f"{self.limit:,} configurations; shrink it, sample it, or raise max_trials=",
            )
        if isinstance(value, Mapping):
            items = [(format_value(k), v) for k, v in value.items()]
        else:
            if hasattr(value, "tolist") and not isinstance(value, (list, tuple, range)):
                value = value.tolist()
            items = [(format_value(v), v) for v in value]
        if not items:
            raise self.error(key, "the list is empty; give at least one value")
        seen: dict[str, Any] = {}
        for value_id, v in items:
            if value_id in seen:
                raise self.error(
                    key,
                    f"values {seen[value_id]!r} and {v!r} would both have the id "
                    f"'{key}={value_id}'; give distinct values, or a dict of id -> value",
                )
            seen[value_id] = v
        return tuple(items)

    def _seeds(self, seeds: Any) -> tuple[int, ...]:
        if (_is_int(seeds) and seeds > self.limit) or (
            isinstance(seeds, (list, tuple, range)) and _length(seeds) > self.limit
        ):
            count = seeds if _is_int(seeds) else _length(seeds)
            raise self.error("seeds", f"{count:,} seeds train each configuration {count:,} "
                                      f"times, above the limit of {self.limit:,}; use fewer")
        if _is_int(seeds):
            if seeds < 1:
                raise self.error("seeds", f"needs at least one seed, got seeds={seeds!r}")
            return tuple(range(int(seeds)))
        if isinstance(seeds, (list, tuple, range)) and seeds:
            if not all(_is_int(s) for s in seeds):
                raise self.error("seeds", f"seeds must be integers, got {list(seeds)!r}")
            if len(set(seeds)) != len(seeds):
                raise self.error("seeds", f"seeds repeat: {list(seeds)!r}")
            if not all(-(2**63) <= s < 2**64 for s in seeds):  # what torch.manual_seed takes
                raise self.error("seeds", "seeds must be from -2**63 to 2**64 - 1 (what "
                                          "torch.manual_seed takes)")
            return tuple(int(s) for s in seeds)
        raise self.error(
            "seeds", f"give a number of seeds (seeds=3) or a list of integers, got {seeds!r}"
        )

    def _samples(
        self, options: dict[str, Any], distributions: dict[str, Distribution]
    ) -> int | None:
        if "samples" not in options:
            if distributions:
                first = next(iter(distributions))
                raise self.error(
                    first, "is a distribution: say how many points to draw with samples=N"
                )
            return None
        if not distributions:
            raise self.error(
                "samples",
                "samples= draws from distributions, but no key is one; use choice(), uniform(), "
                "log_uniform() or int_uniform(), or drop samples=",
            )
        return self._positive_int(options, "samples", None)

    def _sample_seed(self, options: dict[str, Any], distributions: dict[str, Distribution]) -> int:
        seed = options.get("seed", 0)
        if "seed" in options and not distributions:
            raise self.error(
                "seed",
                f"seed= seeds the sampling of distributions, but no key is one; did you mean "
                f"seeds={seed!r} (the training seeds)?",
            )
        if not _is_int(seed):
            raise self.error("seed", f"the sampling seed must be an integer, got {seed!r}")
        return int(seed)

    def _positive_int(self, options: dict[str, Any], key: str, default: int | None) -> Any:
        value = options.get(key, default)
        if not _is_int(value) or value < 1:
            raise self.error(key, f"must be a positive integer, got {value!r}")
        return int(value)

    def _callable(self, options: dict[str, Any], key: str) -> Any:
        value = options.get(key)
        if value is not None and not callable(value):
            raise self.error(key, f"must be a function of the hyperparameters, got {value!r}")
        return value

    def _expect(self, expect: Any) -> dict[str, Threshold]:
        if expect is None:
            return {}
        if not isinstance(expect, Mapping):
            raise self.error("expect", f"give a dict of metric -> threshold, got {expect!r}")
        parsed = {}
        for metric, text in expect.items():
            try:
                parsed[str(metric)] = parse_threshold(str(metric), text)
            except ValueError as exc:
                raise self.error("expect", str(exc)) from None
        return parsed


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _length(values: Any) -> int:
    """How many values an axis has, without reading them."""
    if isinstance(values, range):
        # len() raises OverflowError for a range longer than sys.maxsize.
        step = values.step
        return max(0, (values.stop - values.start + step - (1 if step > 0 else -1)) // step)
    return len(values)


def _is_axis(value: Any) -> bool:
    if isinstance(value, (list, tuple, range, Mapping)):
        return True
    # 1-D numpy arrays and tensors behave like lists; scalars (0-d) stay fixed values.
    shape = getattr(value, "shape", None)
    return hasattr(value, "tolist") and shape is not None and len(shape) == 1
