"""The reference training loop: one seed at a time, as every stacked row must reproduce it.

Each seed's run is seeded (torch, NumPy, random) by its recorder, then builds its model,
shuffles with its own generator, stops early at the target, stops at once when the loss is
NaN/inf (``diverged``) and records an out-of-memory error as ``oom`` before the next seed runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..recording import RunRecorder, TrialRecorder, free_accelerator_memory, is_out_of_memory
from ..settings import TrainSettings
from .sources import EVAL_BATCH, LossFn, Source, Sources


def train_seeds(
    build: Callable[[int], nn.Module],
    sources: Sources,
    config: TrainSettings,
    recorder: TrialRecorder,
    seeds: Sequence[int],
    *,
    device: torch.device,
    target: Mapping[str, Any] | None,
    stop_at_target: bool,
    loss_fn: LossFn | None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None,
) -> None:
    """Train and record each seed in turn; ``build(seed)`` is called once the run has seeded
    everything."""
    train, val, test = sources
    for seed in list(seeds):
        out_of_memory = False
        try:
            with recorder.run(seed, target=target, stop_at_target=stop_at_target,
                              epochs=config.epochs, device=str(device)) as run:
                net = build(seed).to(device)
                _train_one(net, config, run, train, val, loss_fn, augment, device)
                if test is not None:
                    scores = evaluate(net, test, loss_fn)
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


def _train_one(
    net: nn.Module,
    config: TrainSettings,
    run: RunRecorder,
    train: Source,
    val: Source,
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
def evaluate(net: nn.Module, data: Source, loss_fn: LossFn | None = None) -> dict[str, float]:
    """``loss`` and, for class labels, ``accuracy`` of ``net`` on ``data``."""
    was_training = net.training
    net.eval()
    criterion = loss_fn or F.cross_entropy
    loss_sum, correct, count, classify = 0.0, 0, 0, True
    for inputs, labels in data.batches(EVAL_BATCH, None):
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
