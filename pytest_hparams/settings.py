"""Training settings read from the hyperparameters: optimiser, schedule, batch size, penalties."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .errors import SettingsError

if TYPE_CHECKING:  # torch loads when an optimiser is built: naming settings needs none of it
    import torch

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "exponential", "cosine")
_DEFAULT_DECAY = {"step": 0.5, "exponential": 0.9, "cosine": 0.0}


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``fit`` reads from the hyperparameters, with defaults.

    optimizer   sgd, momentum, nesterov, adam, adamw, rmsprop
    lr          the initial learning rate
    batch_size  examples per step
    epochs      the most epochs to train (fewer when the target is reached)
    momentum    for momentum, nesterov and rmsprop (default 0.9; rmsprop 0)
    weight_decay  L2 strength (default 0; adamw 0.01, decoupled)
    l1          L1 strength on the weights (matrices and kernels, not biases)
    schedule    none, step, exponential, cosine
    decay       step and exponential: the factor per step/epoch (0.5, 0.9);
                cosine: the final lr as a fraction of lr (0)
    step_size   epochs between steps of the step schedule (default epochs // 3)
    clip        the largest gradient norm, or None
    label_smoothing  for the default cross-entropy loss
    augment     None, "none", an augmentation name from pytest_hparams.data, or a function
    betas       adam and adamw: (beta1, beta2), default (0.9, 0.999); in a marker, a list of
                pairs is an axis: betas=[(0.9, 0.999), (0.8, 0.99)]
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 10
    momentum: float | None = None
    weight_decay: float | None = None
    l1: float = 0.0
    schedule: str = "none"
    decay: float | None = None
    step_size: int | None = None
    clip: float | None = None
    label_smoothing: float = 0.0
    augment: Any = None
    betas: tuple[float, float] | None = None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def resolve(cls, hparams: Mapping[str, Any], explicit: Mapping[str, Any]) -> TrainSettings:
        """Settings from ``hparams``, with ``explicit`` keyword arguments of ``fit`` beside them.

        A key given in both places is an error: it is unclear which one the user meant.
        """
        keys = cls.keys()
        unknown = [k for k in explicit if k not in keys]
        if unknown:
            close = difflib.get_close_matches(unknown[0], keys, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; settings are: {', '.join(keys)}"
            raise TypeError(f"fit() got an unknown setting {unknown[0]!r}{hint}")
        both = [k for k, v in explicit.items() if v is not None and k in hparams]
        if both:
            raise SettingsError(
                f"fit(): {both[0]!r} is given both in the hparams ({hparams[both[0]]!r}) and to "
                f"fit() ({explicit[both[0]]!r}); give it in one place"
            )
        values = {k: hparams[k] for k in keys if k in hparams}
        values.update({k: v for k, v in explicit.items() if v is not None})
        settings = cls(**values)
        settings._validate()
        return settings

    def _validate(self) -> None:
        def bad(key: str, problem: str) -> SettingsError:
            return SettingsError(f"fit(): hparams key {key!r}: {problem}")

        for key, options in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            value = getattr(self, key)
            if value not in options:
                close = difflib.get_close_matches(str(value), options, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise bad(key, f"{value!r} is not one of {', '.join(options)}{hint}")
        for key in ("batch_size", "epochs"):
            value = getattr(self, key)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise bad(key, f"must be a positive integer, got {value!r}")
        if not _positive(self.lr):
            raise bad("lr", f"must be a positive number, got {self.lr!r}")
        for key in ("momentum", "weight_decay", "l1", "decay", "label_smoothing"):
            value = getattr(self, key)
            if value is not None and not _non_negative(value):
                raise bad(key, f"must be a number >= 0, got {value!r}")
        if self.clip is not None and not _positive(self.clip):
            raise bad("clip", f"must be a positive number or None, got {self.clip!r}")
        if self.betas is not None and not (
            isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
            and all(_non_negative(b) and b < 1 for b in self.betas)
        ):
            raise bad("betas", f"must be a pair of numbers in [0, 1), got {self.betas!r}")
        if self.step_size is not None and not (
            isinstance(self.step_size, numbers.Integral) and self.step_size >= 1
        ):
            raise bad("step_size", f"must be a positive integer, got {self.step_size!r}")

    # -- derived values, shared by the sequential and the vectorised loops

    @property
    def effective_momentum(self) -> float:
        if self.momentum is not None:
            return float(self.momentum)
        return 0.9 if self.optimizer in ("momentum", "nesterov") else 0.0

    @property
    def effective_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 0.01 if self.optimizer == "adamw" else 0.0

    @property
    def effective_betas(self) -> tuple[float, float]:
        if self.betas is not None:
            return (float(self.betas[0]), float(self.betas[1]))
        return (0.9, 0.999)

    @property
    def effective_decay(self) -> float:
        if self.decay is not None:
            return float(self.decay)
        return _DEFAULT_DECAY.get(self.schedule, 1.0)

    def lr_at(self, epoch: int) -> float:
        """The learning rate during ``epoch`` (counted from 0)."""
        lr, decay = float(self.lr), self.effective_decay
        if self.schedule == "step":
            step = self.step_size or max(1, self.epochs // 3)
            return lr * decay ** (epoch // step)
        if self.schedule == "exponential":
            return lr * decay**epoch
        if self.schedule == "cosine":
            floor = lr * decay
            return floor + (lr - floor) * (1 + math.cos(math.pi * epoch / self.epochs)) / 2
        return lr

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import torch

        lr, wd, momentum = float(self.lr), self.effective_weight_decay, self.effective_momentum
        params = list(params)
        if self.optimizer in ("sgd", "momentum", "nesterov"):
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd,
                                   nesterov=self.optimizer == "nesterov")
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=self.effective_betas)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=self.effective_betas)
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=wd)

    def augmentation(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if self.augment is None or self.augment == "none":
            return None
        if callable(self.augment):
            return self.augment
        from .data import augmentation

        try:
            return augmentation(self.augment)
        except KeyError as exc:
            raise SettingsError(f"fit(): hparams key 'augment': {exc.args[0]}") from None


def _positive(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _non_negative(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
