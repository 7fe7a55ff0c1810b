"""Small real datasets that ship inside installed packages, and image augmentations.

Nothing here downloads: the datasets are scikit-learn's bundled copies (``pip install
pytest-hparams[data]``), read from its package folder as its loaders read them (importing
scikit-learn would cost every test process over a second), split with a fixed seed into train,
validation and test.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Split:
    """A dataset split into train, validation and test ``(inputs, labels)`` pairs."""

    name: str
    train: Pair
    val: Pair
    test: Pair
    classes: int

    @property
    def features(self) -> int:
        return int(self.train[0][0].numel())


def _sklearn() -> object:
    try:
        import sklearn.datasets
    except ImportError as exc:
        raise ImportError(_NO_SKLEARN) from exc
    return sklearn.datasets


_NO_SKLEARN = ("pytest_hparams.data needs scikit-learn for its bundled datasets: "
               "pip install 'pytest-hparams[data]'")


def _bundled(name: str, loader: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data, target)`` of the csv file ``name`` that scikit-learn ships, read as its
    ``loader`` reads it, without importing scikit-learn (over a second, most of it scipy): the
    file is found from the package's location. A scikit-learn that keeps its files elsewhere
    is asked through ``loader`` instead."""
    spec = importlib.util.find_spec("sklearn")  # a top-level package: found, not imported
    if spec is None:
        raise ImportError(_NO_SKLEARN)
    found = (Path(folder, "datasets", "data", name)
             for folder in spec.submodule_search_locations or ())
    path = next((candidate for candidate in found if candidate.is_file()), None)
    if path is None:
        bunch = getattr(_sklearn(), loader)()
        return bunch.data, bunch.target
    if name.endswith(".gz"):  # sklearn's load_gzip_compressed_csv_data: no header
        with gzip.open(path, "rt") as file:
            table = np.loadtxt(file, delimiter=",")
        return table[:, :-1], table[:, -1].astype(int, copy=False)
    with open(path, newline="") as file:  # sklearn's load_csv_data: a header line, then rows
        rows = csv.reader(file)
        samples, features = (int(x) for x in next(rows)[:2])
        data, target = np.empty((samples, features)), np.empty((samples,), dtype=int)
        for i, row in enumerate(rows):
            data[i] = np.asarray(row[:-1], dtype=np.float64)
            target[i] = np.asarray(row[-1], dtype=int)
    return data, target


def _split(name: str, inputs: torch.Tensor, labels: torch.Tensor, seed: int,
           val_fraction: float, test_fraction: float) -> Split:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(labels) * test_fraction)
    n_val = round(len(labels) * val_fraction)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return Split(name, (inputs[train], labels[train]), (inputs[val], labels[val]),
                 (inputs[test], labels[test]), int(labels.max()) + 1)


def digits(*, images: bool = False, seed: int = 0, val_fraction: float = 0.2,
           test_fraction: float = 0.2) -> Split:
    """scikit-learn's 1,797 real 8×8 handwritten digits, pixels scaled to [0, 1].

    Inputs are flat (N, 64), or (N, 1, 8, 8) with ``images=True`` for convolutional models.
    """
    data, target = _bundled("digits.csv.gz", "load_digits")
    inputs = torch.tensor(data, dtype=torch.float32) / 16.0
    if images:
        inputs = inputs.reshape(-1, 1, 8, 8)
    labels = torch.tensor(target, dtype=torch.long)
    return _split("digits", inputs, labels, seed, val_fraction, test_fraction)


def breast_cancer(*, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Split:
    """scikit-learn's 569 real breast-cancer biopsies (30 features, 2 classes), standardised
    with the training split's mean and spread."""
    data, target = _bundled("breast_cancer.csv", "load_breast_cancer")
    inputs = torch.tensor(data, dtype=torch.float32)
    labels = torch.tensor(target, dtype=torch.long)
    split = _split("breast_cancer", inputs, labels, seed, val_fraction, test_fraction)
    mean, std = split.train[0].mean(0), split.train[0].std(0).clamp_min(1e-8)

    def scale(pair: Pair) -> Pair:
        return ((pair[0] - mean) / std, pair[1])

    return Split(split.name, scale(split.train), scale(split.val), scale(split.test),
                 split.classes)


# --------------------------------------------------------------------------- augmentation


def _as_images(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    shape = inputs.shape
    if inputs.ndim == 4:
        return inputs, shape
    side = math.isqrt(shape[-1])
    if inputs.ndim != 2 or side * side != shape[-1]:
        raise ValueError(f"augmentations need square images, got inputs of shape {tuple(shape)}")
    return inputs.reshape(-1, 1, side, side), shape


def _affine(inputs: torch.Tensor, max_degrees: float, max_shift: float) -> torch.Tensor:
    images, shape = _as_images(inputs)
    n = images.shape[0]
    angle = (torch.rand(n, device=images.device) * 2 - 1) * math.radians(max_degrees)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / side.
    shift = (torch.rand(n, 2, device=images.device) * 2 - 1) * max_shift * 2 / images.shape[-1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False).reshape(shape)


def _named(name: str, apply: Callable[[torch.Tensor], torch.Tensor]
           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``apply`` under ``name``: test ids and tables show an augmentation by its name."""
    apply.__name__ = apply.__qualname__ = name
    return apply


def rotation(degrees: float = 15.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rotate each image by a random angle in ``[-degrees, degrees]``."""
    return _named(f"rotation({degrees:g})", lambda x: _affine(x, degrees, 0.0))


def shift(pixels: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Translate each image by a random offset of up to ``pixels`` in each direction
    (bilinear: fractions of a pixel blur)."""
    return _named(f"shift({pixels:g})", lambda x: _affine(x, 0.0, pixels))


def flip() -> Callable[[torch.Tensor], torch.Tensor]:
    """Mirror a random half of the images left to right."""

    def apply(inputs: torch.Tensor) -> torch.Tensor:
        images, shape = _as_images(inputs)
        mask = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
        return torch.where(mask, images.flip(-1), images).reshape(shape)

    return _named("flip", apply)


def noise(std: float = 0.1) -> Callable[[torch.Tensor], torch.Tensor]:
    """Add Gaussian noise of standard deviation ``std``."""
    return _named(f"noise({std:g})", lambda x: x + std * torch.randn_like(x))


AUGMENTATIONS: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]] = {
    "rotation": rotation,
    "shift": shift,
    "flip": flip,
    "noise": noise,
}


def augmentation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The augmentation called ``name`` (rotation, shift, flip, noise), with its defaults.

    Each draws from torch's global generator, which ``fit`` seeds for every run. For other
    strengths call a factory of ``pytest_hparams.data`` (``rotation(30)``, ``noise(0.05)``): a
    grid of those shows them by name, e.g. ``augment=[rotation(15), rotation(30)]``.
    """
    try:
        return AUGMENTATIONS[name]()
    except KeyError:
        raise KeyError(
            f"unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)} or pass a "
            f"function of a batch of inputs"
        ) from None
