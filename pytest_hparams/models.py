"""Small reference models whose depth, width, activation, dropout and initialisation are
hyperparameters: an MLP for flat inputs and a small CNN for images."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}

#: Weight initialisations; "default" keeps PyTorch's own (Kaiming-uniform with a=sqrt(5)).
INITS = ("default", "xavier", "kaiming", "normal", "zeros")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}"
        ) from None


def initialise(model: nn.Module, init: str, *, std: float = 0.01) -> nn.Module:
    """Re-initialise every Linear and Conv weight of ``model`` by ``init``; biases to zero.

    ``normal`` draws from N(0, std²) (a "small random" start); ``zeros`` shows why symmetry
    must be broken.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    if init == "default":
        return model
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif init == "kaiming":
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            elif init == "normal":
                nn.init.normal_(module.weight, 0.0, std)
            else:
                nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


class MLP(nn.Sequential):
    """``layers`` hidden layers of ``hidden`` units (or one width per layer), then a classifier."""

    def __init__(
        self,
        in_features: int = 64,
        classes: int = 10,
        hidden: int | Sequence[int] = 64,
        layers: int = 1,
        activation: str = "relu",
        dropout: float = 0.0,
        init: str = "default",
    ) -> None:
        widths = [hidden] * layers if isinstance(hidden, int) else list(hidden)
        parts: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for out in widths:
            parts += [nn.Linear(width, out), make_activation(activation)]
            if dropout:
                parts.append(nn.Dropout(dropout))
            width = out
        parts.append(nn.Linear(width, classes))
        super().__init__(*parts)
        initialise(self, init)


class SmallCNN(nn.Sequential):
    """Two 3×3 convolutions and a classifier, sized for 8×8 digit images."""

    def __init__(
        self,
        classes: int = 10,
        channels: int = 16,
        side: int = 8,
        activation: str = "relu",
        dropout: float = 0.0,
        init: str = "default",
    ) -> None:
        pooled = math.ceil(side / 2)
        super().__init__(
            nn.Conv2d(1, channels, 3, padding=1), make_activation(activation),
            nn.Conv2d(channels, channels, 3, padding=1), make_activation(activation),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Linear(channels * pooled * pooled, classes),
        )
        initialise(self, init)
