"""Per-row random streams of a stack: generator states, dropout masks and augmentations.

The sequential loop draws each seed's dropout masks and augmentations from the global
generators in a fixed order. A stacked row reproduces them by keeping its own copy of those
generators' state, switching to it to draw (outside ``vmap``), and saving it again afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..recording import seed_everything

#: The states of the generators a training step draws from: the CPU's and the device's.
RngState = tuple[Tensor, Tensor | None]
Augment = Callable[[Tensor], Tensor]


def rng_state(device: torch.device) -> RngState:
    """The generators a training step draws from: the CPU's, and the device's."""
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.get_rng_state(), torch.mps.get_rng_state()
    return torch.get_rng_state(), None


def set_rng_state(device: torch.device, state: RngState) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        if device.type == "cuda":
            torch.cuda.set_rng_state(state[1], device)
        elif device.type == "mps":
            torch.mps.set_rng_state(state[1])


def restore_rng(rng: tuple[int, Tensor, Tensor | None], device: torch.device) -> None:
    """Leave the generators as the sequential loop leaves them after its last seed."""
    seed, cpu, other = rng
    seed_everything(seed)
    set_rng_state(device, (cpu, other))


def dropout_mask(shape: torch.Size, p: float, like: Tensor) -> Tensor | None:
    """The noise ``F.dropout`` multiplies by on the CPU, drawn the same way (None: no draw)."""
    if p == 0:
        return None
    if p == 1:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    noise = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p)
    return noise.div_(1 - p)


class DropoutSlot(nn.Module):
    """Stands in for ``nn.Dropout`` in the stacked model: multiplies by a mask that was drawn
    outside ``vmap``, one per row, from that row's generator."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs * self.mask if self.training else inputs


@dataclass
class Stream:
    """One sequence of random draws: rows with the same seed, generator state, dropout rates
    and augmentation draw exactly the same numbers, so they share it."""

    state: RngState
    ps: tuple[float, ...]
    augment: Augment | None

    @property
    def draws(self) -> bool:
        return self.augment is not None or any(0 < p < 1 for p in self.ps)


class RowStreams:
    """The stream of each row of a stack, in row order."""

    def __init__(self) -> None:
        self.streams: dict[Hashable, Stream] = {}
        self.stream_of: list[Hashable] = []

    def add_row(self, seed: int, state: RngState, ps: tuple[float, ...],
                augment: Augment | None, augment_setting: object) -> None:
        """A row after the others: it shares a stream with any row that would draw the same."""
        setting = augment_setting if isinstance(augment_setting, Hashable) else id(augment_setting)
        key = (seed, _state_key(state), ps, setting)
        self.streams.setdefault(key, Stream(state, ps, augment))
        self.stream_of.append(key)

    def state_of(self, row: int) -> RngState:
        return self.streams[self.stream_of[row]].state

    def keep(self, rows: list[int]) -> None:
        """Only ``rows`` stay in the stack, in this order."""
        self.stream_of = [self.stream_of[row] for row in rows]
        self.streams = {key: self.streams[key] for key in dict.fromkeys(self.stream_of)}

    def draw(self, inputs: Tensor, shapes: list[torch.Size], names: list[str],
             dtype: torch.dtype, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
        """Each stream's augmentation of ``inputs`` (``[rows, batch, ...]``) and the masks of
        the dropouts ``names`` (inputs ``shapes``), in the order the sequential loop draws them
        (augmentation first, then the forward pass); the masks keyed by their buffers' names."""
        streams = self.streams
        if not any(stream.draws for stream in streams.values()):
            return inputs, {}
        like = torch.empty((), dtype=dtype, device=device)
        drawn: dict[Hashable, tuple[Tensor | None, list[Tensor | None]]] = {}
        first_row = {}
        for row, key in enumerate(self.stream_of):
            first_row.setdefault(key, row)
        for key, row in first_row.items():
            stream = streams[key]
            if not stream.draws:
                drawn[key] = (None, [None] * len(shapes))
                continue
            set_rng_state(device, stream.state)
            augmented = stream.augment(inputs[row]) if stream.augment is not None else None
            masks = [dropout_mask(shape, p, like) for shape, p in zip(shapes, stream.ps,
                                                                     strict=True)]
            stream.state = rng_state(device)
            drawn[key] = (augmented, masks)
        if any(augmented is not None for augmented, _ in drawn.values()):
            inputs = torch.stack([drawn[key][0] if drawn[key][0] is not None else inputs[row]
                                  for row, key in enumerate(self.stream_of)])
        ones = [torch.ones(shape, dtype=dtype, device=device) for shape in shapes]
        stacked = {}
        for j, name in enumerate(names):
            stacked[f"{name}.mask"] = torch.stack([
                mask if (mask := drawn[key][1][j]) is not None else ones[j]
                for key in self.stream_of])
        return inputs, stacked


def _state_key(state: RngState) -> tuple[bytes, ...]:
    return tuple(bytes(t.cpu().numpy().tobytes()) for t in state if t is not None)
