"""One chunk of a stack: its rows' models as one ``torch.func`` module, trained epoch by epoch.

A row is one (configuration, seed) with its model built as the sequential loop builds it
(``Slot``). ``Template`` turns the first row's model into the stack's module; ``Chunk`` trains
the rows that fit in memory together: ``StackedWeights`` holds their parameters and optimiser,
``RowValues`` their per-row loss and clipping settings, ``RowStreams`` their random draws and
``Scorer`` evaluates them all at once. No reduction mixes rows, and a row leaves the chunk when
its run stops (at its target, at divergence, after its epochs).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from ..metrics import Threshold
from ..recording import RunRecorder
from ..settings import TrainSettings
from ..trial import SeedRun
from .compat import CannotVectorize, FitCall
from .optim import FAMILIES, RowSettings, StackedOptimizer
from .sources import EVAL_BATCH, LossFn, Source, Sources
from .streams import Augment, DropoutSlot, RngState, RowStreams

_OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "rmsprop": 2}


class SharedClockRun(RunRecorder):
    """A run in a stack: its clock is its share of the stack's wall time, each interval split
    evenly among the runs training during it (the runs' seconds add up to the wall time)."""

    share = 0.0

    @property
    def elapsed(self) -> float:
        return self.share


@dataclass
class Slot:
    """One row: a configuration and seed, with its model built as the sequential loop builds
    it."""

    member: int
    seed: int
    settings: TrainSettings
    net: nn.Module
    built_rng: RngState
    augment: Augment | None
    run: SharedClockRun | None = None
    final_rng: RngState | None = None
    trained: dict[str, Tensor] | None = None

    def hand_back(self, device: torch.device) -> None:
        """Leave the trained values in the module the factory built, as the sequential loop
        trains that very module."""
        assert self.trained is not None
        net = self.net.to(device)
        with torch.no_grad():
            for name, value in (*net.named_parameters(), *net.named_buffers()):
                value.copy_(self.trained[name])


# --------------------------------------------------------------------------- the stacked model


@dataclass
class Template:
    """The first row's model as the stack's module, and what a step needs to know about it."""

    module: nn.Module
    dropouts: list[str]                       # dropout modules, in the order forward runs them
    mask_shapes: dict[int, list[torch.Size]]  # batch length -> each dropout's input shape
    mask_dtype: torch.dtype
    classes: int
    bytes_per_slot: int

    @classmethod
    def of(cls, slots: list[Slot], sources: Sources, config: TrainSettings,
           device: torch.device) -> Template:
        net = copy.deepcopy(slots[0].net).to(device)
        inputs = sources[0].tensors[0]  # type: ignore[index]
        n, batch = len(inputs), config.batch_size
        lengths = sorted({min(batch, n), n % batch} - {0})
        calls: dict[int, list[tuple[str, torch.Size]]] = {}
        activations: dict[int, int] = {}
        outputs: dict[int, Tensor] = {}
        for length in lengths:
            calls[length], activations[length], outputs[length] = _probe(net, inputs[:length])
        first = calls[lengths[-1]]
        names = [name for name, _ in first]
        if len(set(names)) != len(names):
            raise CannotVectorize("an nn.Dropout module runs more than once per forward pass")
        for name in names:
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent), attr, DropoutSlot())
        net.requires_grad_(False)
        out = outputs[lengths[-1]]
        evaluated = max(len(s.tensors[0]) for s in sources if s is not None  # type: ignore[index]
                        )
        per_example = activations[lengths[-1]] / lengths[-1]
        weights = sum(t.numel() * t.element_size()
                      for t in [*slots[0].net.parameters(), *slots[0].net.buffers()])
        states = _OPTIMIZER_STATES[FAMILIES[config.optimizer]]
        per_slot = int(weights * (3 + states)
                       + per_example * (3 * batch + min(evaluated, EVAL_BATCH)))
        classes = out.shape[1] if out.ndim > 1 else out.shape[0]
        dtype = next(iter(net.parameters())).dtype
        return cls(net, names, {k: [shape for _, shape in v] for k, v in calls.items()},
                   dtype, int(classes), per_slot)


def _probe(net: nn.Module, inputs: Tensor) -> tuple[list[tuple[str, torch.Size]], int, Tensor]:
    """Run ``net`` once (eval mode, so nothing is drawn): the dropouts it calls, in order, with
    their input shapes; the bytes of its activations; its output."""
    calls: list[tuple[str, torch.Size]] = []
    size = [0]
    handles = []
    for name, module in net.named_modules():
        if type(module) is nn.Dropout:
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, name=name: calls.append((name, args[0].shape))))
        if not list(module.children()):
            handles.append(module.register_forward_hook(
                lambda _m, _a, out: size.__setitem__(0, size[0] + (
                    out.numel() * out.element_size() if isinstance(out, Tensor) else 0))))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(inputs)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return calls, size[0], out


class StackedWeights:
    """The rows' parameters and buffers, stacked ``[rows, *shape]``, and their optimiser."""

    def __init__(self, slots: Sequence[Slot], names: list[str], device: torch.device) -> None:
        first = slots[0].net
        self.trainable = [name for name, p in first.named_parameters() if p.requires_grad]
        self.weights = [name for name, p in first.named_parameters() if p.ndim > 1]
        self.params = {name: _stack([dict(s.net.named_parameters())[name] for s in slots],
                                    device, name in self.trainable) for name in names}
        self.buffers = {name: _stack([dict(s.net.named_buffers())[name] for s in slots],
                                     device, False)
                        for name, _ in first.named_buffers()}
        self.optimizer = StackedOptimizer(self.trainable_params(),
                                          [RowSettings.of(s.settings) for s in slots])

    def trainable_params(self) -> list[Tensor]:
        return [self.params[name] for name in self.trainable]

    def select(self, rows: list[int] | None,
               device: torch.device) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The parameters and buffers of ``rows`` (all rows when None)."""
        if rows is None:
            return self.params, self.buffers
        index = torch.tensor(rows, device=device)
        return ({k: v[index] for k, v in self.params.items()},
                {k: v[index] for k, v in self.buffers.items()})

    def row(self, row: int) -> dict[str, Tensor]:
        """One row's trained values, by parameter and buffer name."""
        return {name: value[row].detach()
                for name, value in (*self.params.items(), *self.buffers.items())}

    def keep(self, index: Tensor) -> None:
        """Only the rows ``index`` stay, in this order, with their optimiser state."""
        self.params = {name: _narrow(value, index) for name, value in self.params.items()}
        self.buffers = {name: value[index] for name, value in self.buffers.items()}
        self.optimizer.keep(index, self.trainable_params())


@dataclass
class RowValues:
    """Each row's loss and clipping settings as tensors, for the rows now in the stack."""

    loss: dict[str, Tensor]  # "l1", "keep" and "spread" (label smoothing), per row
    clip: Tensor             # the max norm (inf without clipping)
    clipped: Tensor          # whether the row clips

    @classmethod
    def of(cls, settings: Sequence[TrainSettings], classes: int, device: torch.device,
           dtype: torch.dtype) -> RowValues:
        def rows(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)

        loss = {
            "l1": rows([float(s.l1) for s in settings]),
            "keep": rows([1 - float(s.label_smoothing) for s in settings]),
            "spread": rows([float(s.label_smoothing) / classes for s in settings]),
        }
        return cls(loss, rows([math.inf if s.clip is None else float(s.clip) for s in settings]),
                   torch.tensor([s.clip is not None for s in settings], device=device))

    def clip_gradients(self, grads: list[Tensor | None]) -> list[Tensor | None]:
        """``clip_grad_norm_`` per row: the norm over each row's gradients."""
        present = [g for g in grads if g is not None]
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in present])
        total = torch.linalg.vector_norm(norms, 2, dim=0)
        coefficient = torch.clamp(self.clip / (total + 1e-6), max=1.0)
        coefficient = torch.where(self.clipped, coefficient, torch.ones_like(coefficient))
        return [None if g is None else g * coefficient.view(-1, *([1] * (g.ndim - 1)))
                for g in grads]


def stacked_loss(module: nn.Module, loss_fn: LossFn | None, weights: list[str], *,
                 smoothing: bool, use_l1: bool) -> Callable[..., Tensor]:
    """Every row's training loss at once, each computed as the sequential loop computes it:
    ``(params, buffers, masks, inputs, labels, per-row values) -> [rows]``."""

    def row_loss(params: dict[str, Tensor], buffers: dict[str, Tensor],
                 masks: dict[str, Tensor], inputs: Tensor, labels: Tensor,
                 hyper: dict[str, Tensor]) -> Tensor:
        outputs = functional_call(module, (params, buffers, masks), (inputs,))
        if loss_fn is not None:
            loss = loss_fn(outputs, labels)
        else:
            classes = 1 if outputs.ndim > 1 else 0
            log_probs = F.log_softmax(outputs, classes)
            # F.nll_loss as torch decomposes it under vmap, without the decomposition's
            # shape check, whose first call imports torch's symbolic shapes (sympy, half a
            # second): the same operations in the same order, so the same numbers.
            picked = -log_probs.gather(classes, labels.unsqueeze(classes)).squeeze(classes)
            loss = picked.sum() / labels.numel() if classes else picked
            if smoothing:
                # torch's label smoothing: (1 - e) * nll + mean(-sum log p) * e / classes
                smooth = -log_probs.sum(1 if outputs.ndim > 1 else 0).mean()
                loss = hyper["keep"] * loss + smooth * hyper["spread"]
        if use_l1:
            loss = loss + hyper["l1"] * sum(params[n].abs().sum() for n in weights)
        return loss

    return vmap(row_loss, randomness="error")


class Scorer:
    """``loop.evaluate`` for every row at once: the same chunks, the same sums."""

    def __init__(self, module: nn.Module, loss_fn: LossFn | None) -> None:
        def row_outputs(params: dict[str, Tensor], buffers: dict[str, Tensor],
                        inputs: Tensor) -> Tensor:
            return functional_call(module, (params, buffers), (inputs,))

        self.module = module
        self.criterion = loss_fn or F.cross_entropy
        self.outputs = vmap(row_outputs, in_dims=(0, 0, None), randomness="error")

    @torch.no_grad()
    def scores(self, params: dict[str, Tensor], buffers: dict[str, Tensor],
               source: Source) -> list[dict[str, float]]:
        """``loss`` and, for class labels, ``accuracy`` of each row of ``params``."""
        count_rows = len(next(iter(params.values())))
        self.module.eval()
        data = source.tensors
        assert data is not None
        inputs, labels = data
        loss_sum = [0.0] * count_rows
        correct = [0] * count_rows
        count, classify = 0, True
        for start in range(0, len(labels), EVAL_BATCH):
            batch_inputs = inputs[start:start + EVAL_BATCH]
            batch_labels = labels[start:start + EVAL_BATCH]
            outputs = self.outputs(params, buffers, batch_inputs)
            for row in range(count_rows):
                # Row by row, so that each loss is reduced exactly as loop.evaluate does.
                loss_sum[row] += float(self.criterion(outputs[row], batch_labels)) * len(
                    batch_labels)
            classify = classify and outputs.ndim == 3 and not batch_labels.is_floating_point()
            if classify:
                hits = (outputs.argmax(dim=2) == batch_labels).sum(1).tolist()
                for row in range(count_rows):
                    correct[row] += int(hits[row])
            count += len(batch_labels)
        self.module.train()
        scores = []
        for row in range(count_rows):
            score = {"loss": loss_sum[row] / max(count, 1)}
            if classify:
                score["accuracy"] = correct[row] / max(count, 1)
            scores.append(score)
        return scores


class StackClock:
    """Splits the stack's wall time among the runs training during each interval."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def start(self) -> None:
        """The first interval starts now."""
        self.last = time.perf_counter()

    def tick(self, runs: Sequence[SharedClockRun]) -> None:
        """Give ``runs`` equal shares of the time since the last tick."""
        now = time.perf_counter()
        for run in runs:
            run.share += (now - self.last) / len(runs)
        self.last = now


# --------------------------------------------------------------------------- the chunk


class Chunk:
    """Rows trained together, from stacking to their last epoch."""

    def __init__(self, call: FitCall, sources: Sources, template: Template, slots: list[Slot],
                 *, thresholds: list[Threshold],
                 on_epochs: Sequence[Callable[[RunRecorder], None] | None]) -> None:
        self.call = call
        self.sources = sources
        self.template = template
        self.thresholds = thresholds
        self.on_epochs = list(on_epochs)  # by member: the leader's recorder's, then each member's
        self.slots = list(slots)
        module = template.module
        self.weights = StackedWeights(slots, [name for name, _ in module.named_parameters()],
                                      call.device)
        self.streams = RowStreams()
        for slot in slots:
            modules = dict(slot.net.named_modules())
            ps = tuple(float(modules[name].p) for name in template.dropouts)
            self.streams.add_row(slot.seed, slot.built_rng, ps, slot.augment,
                                 slot.settings.augment)
        self.clipping = any(s.settings.clip is not None for s in slots)
        self.values = self._row_values()
        self.loss = stacked_loss(module, call.loss_fn, self.weights.weights,
                                 smoothing=any(s.settings.label_smoothing for s in slots),
                                 use_l1=any(s.settings.l1 for s in slots))
        self.scorer = Scorer(module, call.loss_fn)
        self.clock = StackClock()

    def _row_values(self) -> RowValues:
        return RowValues.of([s.settings for s in self.slots], self.template.classes,
                            self.call.device, self.template.mask_dtype)

    def _runs(self, rows: Sequence[int]) -> list[SharedClockRun]:
        runs = [self.slots[row].run for row in rows]
        assert all(run is not None for run in runs)
        return runs  # type: ignore[return-value]

    def train(self) -> None:
        """Train every row to the end of its run."""
        device = self.call.device
        for slot in self.slots:
            slot.run = SharedClockRun(
                SeedRun(seed=slot.seed, device=str(device)), target=self.thresholds,
                stop_at_target=self.call.stop_at_target, epochs=slot.settings.epochs,
                on_epoch=self.on_epochs[slot.member])
        train = self.sources[0].tensors
        assert train is not None
        n = len(train[1])
        orders = {seed: torch.Generator().manual_seed(seed)
                  for seed in dict.fromkeys(s.seed for s in self.slots)}
        self.template.module.train()
        self.clock.start()
        epoch = 0
        while self.slots:
            lrs = [s.settings.lr_at(epoch) for s in self.slots]
            perms = {seed: torch.randperm(n, generator=orders[seed]).to(device)
                     for seed in dict.fromkeys(s.seed for s in self.slots)}
            order = torch.stack([perms[s.seed] for s in self.slots])
            mean_loss = self._epoch(train, order, lrs)
            scores = self._scores(self.sources[1])
            train_loss = mean_loss.tolist()
            runs = self._runs(range(len(self.slots)))
            self.clock.tick(runs)
            done = []
            for row, run in enumerate(runs):
                stop = run.log_epoch(train_loss=train_loss[row], **scores[row], lr=lrs[row])
                if stop or epoch + 1 >= self.slots[row].settings.epochs:
                    done.append(row)
            if done:
                self._finish(done)
            epoch += 1

    def _epoch(self, train: tuple[Tensor, Tensor], order: Tensor, lrs: list[float]) -> Tensor:
        """One pass over the training data in each row's ``order``: each row's mean loss."""
        inputs, labels = train
        device, template = self.call.device, self.template
        batch = self.slots[0].settings.batch_size
        total = torch.zeros(len(self.slots), device=device)
        seen = 0
        for start in range(0, len(labels), batch):
            index = order[:, start:start + batch]
            batch_inputs, masks = self.streams.draw(
                inputs[index], template.mask_shapes[index.shape[1]], template.dropouts,
                template.mask_dtype, device)
            loss = self.loss(self.weights.params, self.weights.buffers, masks, batch_inputs,
                             labels[index], self.values.loss)
            grads = list(torch.autograd.grad(loss.sum(), self.weights.trainable_params(),
                                             allow_unused=True))
            if self.clipping:
                grads = self.values.clip_gradients(grads)
            self.weights.optimizer.step(grads, lrs)
            total += loss.detach() * index.shape[1]
            seen += index.shape[1]
        return total / max(seen, 1)

    def _scores(self, source: Source, rows: list[int] | None = None) -> list[dict[str, float]]:
        params, buffers = self.weights.select(rows, self.call.device)
        return self.scorer.scores(params, buffers, source)

    def _finish(self, rows: list[int]) -> None:
        """Close the runs of ``rows`` (test scores, final generator state); drop their rows."""
        test = self.sources[2]
        tested = self._scores(test, rows) if test is not None else [{} for _ in rows]
        self.clock.tick(self._runs(rows))
        for row, scores in zip(rows, tested, strict=True):
            slot = self.slots[row]
            assert slot.run is not None
            slot.run.finish(**{f"test_{k}": v for k, v in scores.items()})
            slot.final_rng = self.streams.state_of(row)
            slot.trained = self.weights.row(row)
        keep = [row for row in range(len(self.slots)) if row not in set(rows)]
        self.slots = [self.slots[row] for row in keep]
        self.streams.keep(keep)
        if not keep:
            return
        self.weights.keep(torch.tensor(keep, device=self.call.device))
        self.values = self._row_values()


def _stack(tensors: list[Tensor], device: torch.device, trainable: bool) -> Tensor:
    stacked = torch.stack([t.detach() for t in tensors]).to(device)
    return stacked.requires_grad_(trainable)


def _narrow(value: Tensor, index: Tensor) -> Tensor:
    return value.detach()[index].requires_grad_(value.requires_grad)
