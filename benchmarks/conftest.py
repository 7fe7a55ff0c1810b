"""Shared setup of the benchmark suite: one CPU thread, and the datasets loaded once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pytest_hparams import Split, breast_cancer, digits

#: The modules in the seed article's order, so that the run and RESULTS.md read like it.
ARTICLE_ORDER = (
    "test_learning_rate", "test_batch_size", "test_hidden_layers", "test_neurons",
    "test_dropout", "test_activation", "test_weight_init", "test_optimizer", "test_lr_decay",
    "test_augmentation", "test_regularisation", "test_search", "test_adaptive_search",
    "test_misconceptions",
)


def pytest_configure(config: pytest.Config) -> None:
    # These models are tiny (a 64×64 matrix product per layer): on the 2-core machine the suite
    # is timed on, a second intra-op thread only adds synchronisation, and when other processes
    # share the cores it made an epoch 10× slower (15 ms against 180 ms, same results). An
    # explicit OMP_NUM_THREADS still wins.
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the benchmark modules in ``ARTICLE_ORDER``; other items keep their places."""
    here = Path(__file__).parent
    slots = [index for index, item in enumerate(items) if item.path.parent == here]

    def position(item: pytest.Item) -> int:
        name = item.path.stem
        return ARTICLE_ORDER.index(name) if name in ARTICLE_ORDER else len(ARTICLE_ORDER)

    # sorted() is stable: the items of one module keep their order
    for index, item in zip(slots, sorted((items[i] for i in slots), key=position), strict=True):
        items[index] = item


@pytest.fixture(scope="session")
def digits_data() -> Split:
    """scikit-learn's 1,797 8×8 digits as flat (N, 64) inputs, split 60/20/20 with seed 0."""
    return digits()


@pytest.fixture(scope="session")
def digit_images() -> Split:
    """The same digits and the same split, as (N, 1, 8, 8) images for the convolutional model."""
    return digits(images=True)


@pytest.fixture(scope="session")
def cancer_data() -> Split:
    """scikit-learn's 569 breast-cancer biopsies (30 features, 2 classes), split 60/20/20."""
    return breast_cancer()
