"""Activation function: two hidden layers of 64 units, SGD with momentum at lr 0.05.

Claim: relu and its smooth relatives (leaky_relu, elu, gelu, silu) and tanh bring every seed to
95 % validation accuracy within 20 epochs; sigmoid, whose gradient is at most 1/4 and vanishes
when it saturates, does not get there.

Seen (seeds 0-2, epochs to 95 %): relu 7.0, leaky_relu 6.7, elu 8.3, gelu 6.7, silu 8.3, tanh
6.0 (at most 11 over seeds 0-8), test accuracy 0.945-0.962; sigmoid ends at 0.868 (0.859 and
0.852 on seeds 3-5 and 6-8).
"""

import pytest

from benchmarks.recipe import SEEDS, TARGET, assert_every_seed_reaches
from pytest_hparams import MLP, fit


@pytest.mark.hparams(activation=["relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid"],
                     optimizer="momentum", lr=0.05, batch_size=32, epochs=20, seeds=SEEDS,
                     expect={"test_accuracy": ">=0.92"},
                     xfail=lambda hp: hp.activation == "sigmoid"
                     and "sigmoid's small, saturating gradient: too slow for 20 epochs")
def test_activation(hparams, digits_data, hparams_device):
    result = fit(lambda hp: MLP(hidden=64, layers=2, activation=hp.activation),
                 digits_data.train, digits_data.val, hparams, test=digits_data.test,
                 target=TARGET, device=hparams_device)
    assert_every_seed_reaches(result)
