"""What a ``fit`` call trains: its data as ``Source``s, its model (``ModelSpec``) and its loss."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import SettingsError
from ..hparams import HParams

ModelSpec = nn.Module | Callable[[], nn.Module] | Callable[[HParams], nn.Module]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Examples per forward pass when a model is evaluated.
EVAL_BATCH = 4096


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
    refuse_own_training_logic(net)
    return net


def refuse_own_training_logic(net: nn.Module) -> None:
    """``fit`` trains with its own loop and optimiser: a model that brings its own (a
    LightningModule, a ``training_step``) would be bypassed, so it is refused, never ignored."""
    kind = type(net).__name__
    lightning = any(base.__name__ == "LightningModule"
                    and base.__module__.split(".")[0] in ("lightning", "pytorch_lightning")
                    for base in type(net).__mro__)
    if lightning:
        raise SettingsError(
            f"fit(): the model is a LightningModule ({kind}): fit() would train it with its own "
            f"loop and ignore its training_step and configure_optimizers; test it through "
            f"Lightning with pytest_hparams.fit_lightning(...) (pip install "
            f'"pytest-hparams[lightning]"), or with your own loop and the hparams_trial fixture')
    own = [name for name in ("training_step", "configure_optimizers")
           if callable(getattr(net, name, None))]
    if own:
        raise SettingsError(
            f"fit(): the model ({kind}) defines {' and '.join(own)}, which fit() would bypass "
            f"with its own loop and optimiser; record your own loop with the hparams_trial "
            f"fixture instead (or remove the method if fit's loop is what you want)")


def apply_batch_size(data: Any, batch_size: int, name: str) -> Any:
    """``data`` with the ``batch_size`` hyperparameter applied: a DataLoader built with another
    batch size is rebuilt on the same dataset, sampler and collate function; one whose batches
    come from its own batch sampler cannot take a batch size and is refused."""
    if not isinstance(data, DataLoader) or data.batch_size == batch_size:
        return data
    if data.batch_size is None:
        raise SettingsError(
            f"fit(): batch_size={batch_size} cannot be applied to the {name} DataLoader, which "
            f"makes its batches with its own batch_sampler ({type(data.batch_sampler).__name__});"
            f" pass its Dataset instead, or drop batch_size from the hyperparameters")
    extra = {"prefetch_factor": data.prefetch_factor} if data.num_workers > 0 else {}
    return DataLoader(
        data.dataset, batch_size=batch_size, sampler=data.sampler, collate_fn=data.collate_fn,
        drop_last=data.drop_last, num_workers=data.num_workers, pin_memory=data.pin_memory,
        timeout=data.timeout, worker_init_fn=data.worker_init_fn, generator=data.generator,
        multiprocessing_context=data.multiprocessing_context,
        persistent_workers=data.persistent_workers, **extra)


def _takes_argument(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [p for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1


@dataclass
class Source:
    """Training or evaluation data: tensors on the device (fast path) or a loader."""

    name: str
    device: torch.device
    tensors: tuple[torch.Tensor, torch.Tensor] | None = None
    dataset: Dataset[Any] | None = None
    loader: DataLoader[Any] | None = None

    @classmethod
    def of(cls, data: Any, name: str, device: torch.device) -> Source:
        """``data`` as ``fit``'s argument ``name`` (train, val or test); empty data, and inputs
        and labels of different lengths, are refused with a ValueError naming the argument."""
        if isinstance(data, DataLoader):
            _check_size(data.dataset, name, in_loader=True)
            return cls(name, device, loader=data)
        if isinstance(data, TensorDataset) and len(data.tensors) == 2:
            data = data.tensors
        if isinstance(data, (tuple, list)) and len(data) == 2:
            inputs, labels = (torch.as_tensor(part) for part in data)
            for part, what in ((inputs, "inputs"), (labels, "labels")):
                if part.ndim == 0:
                    raise ValueError(f"fit(): {name} {what} must hold one row per example, got "
                                     f"a tensor of shape ()")
            if len(inputs) != len(labels):
                raise ValueError(
                    f"fit(): {name} has {len(inputs)} inputs but {len(labels)} labels"
                )
            if len(labels) == 0:
                raise ValueError(f"fit(): {name} has no examples")
            return cls(name, device, tensors=(inputs.to(device), labels.to(device)))
        if isinstance(data, Dataset):
            _check_size(data, name, in_loader=False)
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
        # Not ``self.loader or ...``: a DataLoader's truth is its length, which a loader of
        # an IterableDataset does not have.
        loader = self.loader if self.loader is not None else DataLoader(
            self.dataset, batch_size=batch_size, shuffle=order is not None, generator=order)
        empty = True
        for inputs, labels in loader:
            empty = False
            yield inputs.to(self.device), labels.to(self.device)
        if empty:  # a dataset without a length, or a sampler that drew nothing
            kind = type(loader.dataset).__name__
            what = f"a DataLoader of a {kind}" if self.loader is not None else f"a {kind}"
            raise ValueError(f"fit(): {self.name} gave no batches ({what})")


def _check_size(dataset: Any, name: str, *, in_loader: bool) -> None:
    """Refuse a dataset that says it has no examples (one without a length is checked as it
    is read, in ``Source.batches``)."""
    try:
        size = len(dataset)
    except (TypeError, NotImplementedError):
        return
    if size == 0:
        empty = f"an empty {type(dataset).__name__}"
        raise ValueError(f"fit(): {name} has no examples "
                         f"({f'a DataLoader of {empty}' if in_loader else empty})")


#: A call's train, val (the train source when it has none) and test (None when it has none).
Sources = tuple[Source, Source, Source | None]
