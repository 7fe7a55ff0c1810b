"""The reference training loop, ``fit``: one configuration over its seeds, recorded.

Each seed's run is seeded (torch, NumPy, random), initialises its own model, shuffles with its
own generator, stops early at the target, stops at once when the loss is NaN/inf (``diverged``)
and records an out-of-memory error as ``oom`` before the next seed runs.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .devices import resolve_device
from .hparams import HParams
from .recording import (
    RunRecorder,
    TrialRecorder,
    current_recorder,
    free_accelerator_memory,
    is_out_of_memory,
)
from .settings import TrainSettings
from .trial import TrialResult

ModelSpec = nn.Module | Callable[[], nn.Module] | Callable[[HParams], nn.Module]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_EVAL_BATCH = 4096


def fit(
    model: ModelSpec,
    train: Any,
    val: Any = None,
    hparams: Mapping[str, Any] | None = None,
    *,
    device: str | torch.device | None = None,
    target: Mapping[str, Any] | None = None,
    stop_at_target: bool = True,
    test: Any = None,
    loss_fn: LossFn | None = None,
    seeds: Sequence[int] | None = None,
    vectorize: bool = True,
    **settings: Any,
) -> TrialResult:
    """Train a classifier once per seed and return the configuration's ``TrialResult``.

    ``model`` is a module (each seed re-initialises a copy), a factory ``() -> Module`` or a
    factory ``(hparams) -> Module``. ``train``/``val``/``test`` are ``(inputs, labels)`` pairs,
    Datasets or DataLoaders. Training settings (``lr``, ``optimizer``, ``batch_size``,
    ``epochs``...; see ``TrainSettings``) come from ``hparams`` or as keyword arguments.
    ``target`` (e.g. ``{"accuracy": 0.9}``) records the epochs and seconds to reach it and,
    with ``stop_at_target``, stops there. Metrics: ``accuracy`` and ``loss`` on ``val`` (on
    ``train`` without it), ``train_loss``, ``lr``, and ``test_accuracy``/``test_loss``.

    The seeds (and, inside pytest, the configurations of the test's other items) train
    together as one vectorised stack where they can (see ``pytest_hparams.vectorized``);
    ``vectorize=False`` trains them one by one.
    """
    hparams = hparams if hparams is not None else HParams()
    config = TrainSettings.resolve(hparams, settings)
    recorder = current_recorder() or _standalone_recorder(hparams)
    if seeds is None:
        seeds = hparams.seeds if isinstance(hparams, HParams) else recorder.seeds
    if device is None:
        device = recorder.result.device or "cpu"
    device = resolve_device(device)
    recorder.result.device = str(device)
    augment = config.augmentation()
    _load_optimizer_machinery()
    train_source = _Source.of(train, "train", device)
    val_source = _Source.of(val, "val", device) if val is not None else train_source
    test_source = _Source.of(test, "test", device) if test is not None else None
    from .vectorized import fit_vectorized  # it builds on this module

    fallback = fit_vectorized(model, (train, val, test), (train_source, val_source, test_source),
                              hparams, config, recorder, seeds, device=device, target=target,
                              stop_at_target=stop_at_target, loss_fn=loss_fn, settings=settings,
                              vectorize=vectorize)
    if fallback is None:
        return recorder.result
    for seed in list(seeds):
        out_of_memory = False
        try:
            with recorder.run(seed, target=target, stop_at_target=stop_at_target,
                              epochs=config.epochs, device=str(device)) as run:
                net = fallback.model(seed, lambda: build_model(model, hparams), device)
                net = net.to(device)
                _train_one(net, config, run, train_source, val_source, loss_fn, augment, device)
                if test_source is not None:
                    scores = evaluate(net, test_source, loss_fn)
                    run.finish(**{f"test_{k}": v for k, v in scores.items()})
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            out_of_memory = True
        if out_of_memory:
            # Out of the except block the traceback, which held the failed run's activations
            # and optimizer, is gone; dropping the model too lets the cache really be emptied.
            net = None
            free_accelerator_memory()
    return recorder.result


@functools.cache
def _load_optimizer_machinery() -> None:
    """The first optimiser a process builds imports torch's compiler stack (over a second on
    a small CPU); do it once here so that no trial's timings include it."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _standalone_recorder(hparams: Mapping[str, Any]) -> TrialRecorder:
    seeds = list(getattr(hparams, "seeds", (0,)))
    return TrialRecorder(TrialResult(hparams=dict(hparams), seeds=seeds,
                                     config_id=getattr(hparams, "id", "default")))


def build_model(model: ModelSpec, hparams: Mapping[str, Any]) -> nn.Module:
    """A fresh model for the current seed (the caller has seeded torch)."""
    if isinstance(model, nn.Module):
        net = copy.deepcopy(model)
        for module in net.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return net
    if not callable(model):
        raise TypeError(f"fit(): model must be an nn.Module or a factory, got {model!r}")
    net = model(hparams) if _takes_argument(model) else model()
    if not isinstance(net, nn.Module):
        raise TypeError(f"fit(): the model factory returned {type(net).__name__}, not nn.Module")
    return net


def _takes_argument(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [p for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1


def _train_one(
    net: nn.Module,
    config: TrainSettings,
    run: RunRecorder,
    train: _Source,
    val: _Source,
    loss_fn: LossFn | None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None,
    device: torch.device,
) -> None:
    optimizer = config.make_optimizer(net.parameters())
    weights = [p for p in net.parameters() if p.ndim > 1]
    criterion = loss_fn or _cross_entropy(config.label_smoothing)
    order = torch.Generator().manual_seed(run.seed)
    for epoch in range(config.epochs):
        lr = config.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        net.train()
        total = torch.zeros((), device=device)
        seen = 0
        for inputs, labels in train.batches(config.batch_size, order):
            if augment is not None:
                inputs = augment(inputs)
            loss = criterion(net(inputs), labels)
            if config.l1:
                loss = loss + config.l1 * sum(w.abs().sum() for w in weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), config.clip)
            optimizer.step()
            total += loss.detach() * len(labels)
            seen += len(labels)
        scores = evaluate(net, val, loss_fn)
        if run.log_epoch(train_loss=(total / max(seen, 1)).item(), **scores, lr=lr):
            break


def _cross_entropy(label_smoothing: float) -> LossFn:
    def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, labels, label_smoothing=label_smoothing)

    return loss


@torch.no_grad()
def evaluate(net: nn.Module, data: _Source, loss_fn: LossFn | None = None) -> dict[str, float]:
    """``loss`` and, for class labels, ``accuracy`` of ``net`` on ``data``."""
    was_training = net.training
    net.eval()
    criterion = loss_fn or F.cross_entropy
    loss_sum, correct, count, classify = 0.0, 0, 0, True
    for inputs, labels in data.batches(_EVAL_BATCH, None):
        outputs = net(inputs)
        loss_sum += float(criterion(outputs, labels)) * len(labels)
        classify = classify and outputs.ndim == 2 and not labels.is_floating_point()
        if classify:
            correct += int((outputs.argmax(dim=1) == labels).sum())
        count += len(labels)
    net.train(was_training)
    scores = {"loss": loss_sum / max(count, 1)}
    if classify:
        scores["accuracy"] = correct / max(count, 1)
    return scores


@dataclass
class _Source:
    """Training or evaluation data: tensors on the device (fast path) or a loader."""

    name: str
    device: torch.device
    tensors: tuple[torch.Tensor, torch.Tensor] | None = None
    dataset: Dataset[Any] | None = None
    loader: DataLoader[Any] | None = None

    @classmethod
    def of(cls, data: Any, name: str, device: torch.device) -> _Source:
        if isinstance(data, DataLoader):
            return cls(name, device, loader=data)
        if isinstance(data, TensorDataset) and len(data.tensors) == 2:
            data = data.tensors
        if isinstance(data, (tuple, list)) and len(data) == 2:
            inputs, labels = (torch.as_tensor(part) for part in data)
            if len(inputs) != len(labels):
                raise ValueError(
                    f"fit(): {name} has {len(inputs)} inputs but {len(labels)} labels"
                )
            return cls(name, device, tensors=(inputs.to(device), labels.to(device)))
        if isinstance(data, Dataset):
            return cls(name, device, dataset=data)
        raise TypeError(
            f"fit(): {name} must be an (inputs, labels) pair, a Dataset or a DataLoader, "
            f"got {type(data).__name__}"
        )

    def batches(
        self, batch_size: int, order: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in a shuffled order drawn from ``order`` (in sequence when None)."""
        if self.tensors is not None:
            inputs, labels = self.tensors
            n = len(labels)
            if order is None:
                for start in range(0, n, batch_size):
                    yield inputs[start:start + batch_size], labels[start:start + batch_size]
                return
            perm = torch.randperm(n, generator=order).to(self.device)
            for start in range(0, n, batch_size):
                index = perm[start:start + batch_size]
                yield inputs[index], labels[index]
            return
        loader = self.loader or DataLoader(self.dataset, batch_size=batch_size,
                                           shuffle=order is not None, generator=order)
        for inputs, labels in loader:
            yield inputs.to(self.device), labels.to(self.device)
