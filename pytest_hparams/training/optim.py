"""Optimiser steps on stacked parameters: one row per configuration, hyperparameters as tensors.

A stacked parameter has one row per configuration (``[K, *shape]``, as ``torch.func`` stacks
them). ``StackedOptimizer`` updates every row with that row's own learning rate, momentum,
weight decay, betas and state. The arithmetic follows torch.optim's single-tensor
implementations operation by operation (SGD with momentum and Nesterov, Adam, AdamW, RMSprop),
so each row takes the same steps as its own ``torch.optim`` optimiser would;
``tests/test_stacked_optim.py`` compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..settings import TrainSettings

#: Optimisers whose rows can share one stacked optimiser: the same update rule, other values.
FAMILIES = {"sgd": "sgd", "momentum": "sgd", "nesterov": "sgd", "adam": "adam",
            "adamw": "adam", "rmsprop": "rmsprop"}


@dataclass(frozen=True)
class RowSettings:
    """One row's optimiser: torch.optim's defaults where ``TrainSettings`` has no say."""

    optimizer: str
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99

    @classmethod
    def of(cls, settings: TrainSettings) -> RowSettings:
        """The optimiser ``settings.make_optimizer`` builds, as a row."""
        return cls(settings.optimizer, settings.effective_momentum,
                   settings.effective_weight_decay, settings.effective_betas)

    @property
    def family(self) -> str:
        return FAMILIES[self.optimizer]

    @property
    def nesterov(self) -> bool:
        return self.optimizer == "nesterov"

    @property
    def decoupled(self) -> bool:
        return self.optimizer == "adamw"


class _Rows:
    """Per-row values as tensors shaped to broadcast against ``[K, *shape]`` parameters."""

    def __init__(self, flat: Tensor) -> None:
        self.flat = flat
        self._views: dict[int, Tensor] = {}

    def like(self, param: Tensor) -> Tensor:
        view = self._views.get(param.ndim)
        if view is None:
            view = self.flat.view(-1, *([1] * (param.ndim - 1)))
            self._views[param.ndim] = view
        return view


def _rows(table: dict[str, list[float]], like: Tensor) -> dict[str, _Rows]:
    """Each list of per-row values as ``_Rows``: computed in float64 and rounded once to the
    parameters' dtype, as torch.optim rounds its Python floats; one tensor for all of them."""
    values = torch.tensor(list(table.values()), dtype=torch.float64)
    values = values.to(device=like.device, dtype=like.dtype)
    return {name: _Rows(row) for name, row in zip(table, values, strict=True)}


class StackedOptimizer:
    """Steps stacked parameters in place, each row with its own hyperparameters and state."""

    def __init__(self, params: Sequence[Tensor], rows: Sequence[RowSettings]) -> None:
        families = {row.family for row in rows}
        if len(families) != 1:
            raise ValueError(f"one stacked optimiser takes one family of optimisers, got "
                             f"{sorted({row.optimizer for row in rows})}")
        if params and any(p.shape[0] != len(rows) for p in params):
            raise ValueError("every stacked parameter needs one row per optimiser row")
        self.family = families.pop()
        self.params = list(params)
        self.rows = list(rows)
        self.steps = 0
        self._first: list[Tensor | None] = [None] * len(self.params)
        self._second: list[Tensor | None] = [None] * len(self.params)
        self._fixed: dict[str, _Rows] | None = None
        self._by_lr: tuple[tuple[float, ...], dict[str, _Rows]] | None = None

    def keep(self, index: Tensor, params: Sequence[Tensor]) -> None:
        """Keep only the rows at ``index`` (rows that stopped training leave), with ``params``
        the parameters narrowed the same way."""
        self.params = list(params)
        self.rows = [self.rows[i] for i in index.tolist()]
        self._first = [None if s is None else s[index] for s in self._first]
        self._second = [None if s is None else s[index] for s in self._second]
        self._fixed = self._by_lr = None

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor | None], lrs: Sequence[float]) -> None:
        """One step with each row's learning rate; parameters without a gradient stay."""
        if not self.params:
            return
        self.steps += 1
        like = self.params[0]
        if self._fixed is None:
            self._fixed = _rows(self._fixed_values(), like)
        lrs = tuple(lrs)
        if self._by_lr is None or self._by_lr[0] != lrs:
            self._by_lr = (lrs, _rows({"neg_lr": [-lr for lr in lrs]}, like))
        values = {**self._fixed, **self._by_lr[1]}
        if self.family == "adam":
            values.update(_rows(self._adam_values(lrs), like))
        getattr(self, f"_{self.family}")(list(grads), values)

    def _fixed_values(self) -> dict[str, list[float]]:
        rows = self.rows
        return {
            "decay": [r.weight_decay for r in rows],
            "momentum": [r.momentum for r in rows],
            "keep1": [1 - r.betas[0] for r in rows],
            "beta2": [r.betas[1] for r in rows],
            "keep2": [1 - r.betas[1] for r in rows],
            "eps": [r.eps for r in rows],
            "coupled": [0.0 if r.decoupled else r.weight_decay for r in rows],
            "alpha": [r.alpha for r in rows],
            "keep_alpha": [1 - r.alpha for r in rows],
        }

    def _adam_values(self, lrs: tuple[float, ...]) -> dict[str, list[float]]:
        # torch.optim computes the bias corrections from Python floats: so do we, per row.
        rows, step = self.rows, self.steps
        return {
            "step_size": [-(lr / (1 - r.betas[0] ** step)) for lr, r in zip(lrs, rows,
                                                                          strict=True)],
            "bias2_sqrt": [(1 - r.betas[1] ** step) ** 0.5 for r in rows],
            "shrink": [1 - lr * r.weight_decay if r.decoupled else 1.0
                       for lr, r in zip(lrs, rows, strict=True)],
        }

    def _sgd(self, grads: list[Tensor | None], v: dict[str, _Rows]) -> None:
        rows = self.rows
        any_decay = any(r.weight_decay != 0 for r in rows)
        with_momentum = [r.momentum != 0 for r in rows]
        any_nesterov = any(r.nesterov for r in rows)
        device = self.params[0].device
        nesterov = torch.tensor([r.nesterov for r in rows], device=device)
        has_momentum = torch.tensor(with_momentum, device=device)
        for i, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if grad is None:
                continue
            if any_decay:
                grad = torch.addcmul(grad, param, v["decay"].like(param))
            if any(with_momentum):
                buf = self._first[i]
                if buf is None:
                    buf = grad.detach().clone()
                    self._first[i] = buf
                else:
                    buf.mul_(v["momentum"].like(param)).add_(grad)
                update = buf
                if any_nesterov:
                    update = torch.where(_bcast(nesterov, param),
                                         torch.addcmul(grad, buf, v["momentum"].like(param)), buf)
                if not all(with_momentum):
                    update = torch.where(_bcast(has_momentum, param), update, grad)
            else:
                update = grad
            param.addcmul_(update, v["neg_lr"].like(param))

    def _adam(self, grads: list[Tensor | None], v: dict[str, _Rows]) -> None:
        rows = self.rows
        any_coupled = any(r.weight_decay != 0 and not r.decoupled for r in rows)
        any_decoupled = any(r.weight_decay != 0 and r.decoupled for r in rows)
        for i, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if grad is None:
                continue
            if self._first[i] is None:
                self._first[i] = torch.zeros_like(param)
                self._second[i] = torch.zeros_like(param)
            exp_avg, exp_avg_sq = self._first[i], self._second[i]
            assert exp_avg is not None and exp_avg_sq is not None
            if any_decoupled:
                param.mul_(v["shrink"].like(param))
            if any_coupled:
                grad = torch.addcmul(grad, param, v["coupled"].like(param))
            exp_avg.lerp_(grad, v["keep1"].like(param))
            exp_avg_sq.mul_(v["beta2"].like(param)).addcmul_(grad, grad * v["keep2"].like(param))
            denom = (exp_avg_sq.sqrt() / v["bias2_sqrt"].like(param)).add_(v["eps"].like(param))
            param.add_((v["step_size"].like(param) * exp_avg) / denom)

    def _rmsprop(self, grads: list[Tensor | None], v: dict[str, _Rows]) -> None:
        rows = self.rows
        any_decay = any(r.weight_decay != 0 for r in rows)
        with_momentum = [r.momentum > 0 for r in rows]
        has_momentum = torch.tensor(with_momentum, device=self.params[0].device)
        for i, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if grad is None:
                continue
            if self._first[i] is None:
                self._first[i] = torch.zeros_like(param)
                self._second[i] = torch.zeros_like(param) if any(with_momentum) else None
            square_avg, buf = self._first[i], self._second[i]
            assert square_avg is not None
            if any_decay:
                grad = torch.addcmul(grad, param, v["decay"].like(param))
            square_avg.mul_(v["alpha"].like(param)).addcmul_(
                grad, grad * v["keep_alpha"].like(param))
            avg = square_avg.sqrt().add_(v["eps"].like(param))
            if buf is None:
                param.add_((v["neg_lr"].like(param) * grad) / avg)
                continue
            buf.mul_(v["momentum"].like(param)).addcdiv_(grad, avg)
            if all(with_momentum):
                param.addcmul_(buf, v["neg_lr"].like(param))
            else:
                moved = torch.addcmul(param, buf, v["neg_lr"].like(param))
                plain = param + (v["neg_lr"].like(param) * grad) / avg
                param.copy_(torch.where(_bcast(has_momentum, param), moved, plain))


def _bcast(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))
