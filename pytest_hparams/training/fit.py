"""``fit``, the entry point: one configuration trained over its seeds, stacked or one by one."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..devices import resolve_device
from ..hparams import HParams
from ..recording import current_recorder, standalone_recorder
from ..settings import TrainSettings
from ..trial import TrialResult
from .loop import train_seeds
from .sources import (
    LossFn,
    ModelSpec,
    Source,
    apply_batch_size,
    build_model,
    refuse_own_training_logic,
)
from .stacked import fit_stacked


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
    together as one vectorised stack where they can (see ``pytest_hparams.training.stacked``);
    ``vectorize=False`` trains them one by one.
    """
    hparams = hparams if hparams is not None else HParams()
    config = TrainSettings.resolve(hparams, settings)
    recorder = current_recorder() or standalone_recorder(hparams)
    if seeds is None:
        seeds = hparams.seeds if isinstance(hparams, HParams) else recorder.seeds
    if device is None:
        device = recorder.result.device or "cpu"
    device = resolve_device(device)
    recorder.result.device = str(device)
    augment = config.augmentation()
    if isinstance(model, torch.nn.Module):
        refuse_own_training_logic(model)
    if "batch_size" in hparams or "batch_size" in settings:
        train = apply_batch_size(train, config.batch_size, "train")
    train_source = Source.of(train, "train", device)
    val_source = Source.of(val, "val", device) if val is not None else train_source
    test_source = Source.of(test, "test", device) if test is not None else None
    sources = (train_source, val_source, test_source)
    fallback = fit_stacked(model, (train, val, test), sources, hparams, config, recorder, seeds,
                           device=device, target=target, stop_at_target=stop_at_target,
                           loss_fn=loss_fn, settings=settings, vectorize=vectorize)
    if fallback is not None:
        _load_optimizer_machinery()
        train_seeds(lambda seed: fallback.model(seed, lambda: build_model(model, hparams),
                                                device),
                    sources, config, recorder, seeds, device=device, target=target,
                    stop_at_target=stop_at_target, loss_fn=loss_fn, augment=augment)
    return recorder.result


@functools.cache
def _load_optimizer_machinery() -> None:
    """The first ``torch.optim`` optimiser a process builds imports torch's compiler stack
    (over a second on a small CPU); do it once here so that no trial's timings include it. A
    stacked fit has its own optimisers (``training.optim``) and never pays for it."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

