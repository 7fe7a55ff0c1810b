"""L1 and L2 regularisation: each penalty alone at rising strengths, 20 epochs of Adam at lr
0.01, batch 64 (no early stop).

``weight_decay`` is L2 (added to the gradient by the optimiser); ``l1`` adds ``l1 · Σ|w|`` over
the weight matrices to the loss. Claim: on the digits a 64-unit network does not overfit enough
for either penalty to help: up to L2 0.01 or L1 0.001 they cost little (validation loss at or
below 0.3, test accuracy at or above 93 %); L2 0.1 and L1 0.01 shrink the weights so hard
that the network underfits.

Seen (seeds 0-2, validation loss / test accuracy after 20 epochs): none 0.114 / 0.965; L2
0.001 0.132 / 0.961, L2 0.01 0.244 / 0.943, L2 0.1 1.354 / 0.733; L1 0.001 0.155 / 0.954, L1
0.01 0.572 / 0.816. Over seeds 0-8 the lowest test accuracy of a passing row is 0.943 (L2
0.01) and the highest of a failing one 0.751 (L2 0.1).
"""

import pytest

from benchmarks.recipe import SEEDS
from pytest_hparams import MLP, fit


@pytest.mark.hparams(weight_decay=[0.0, 1e-3, 1e-2, 1e-1], l1=[0.0, 1e-3, 1e-2],
                     where=lambda hp: hp.weight_decay == 0 or hp.l1 == 0,
                     optimizer="adam", lr=0.01, batch_size=64, epochs=20, seeds=SEEDS,
                     expect={"loss": "<=0.3", "test_accuracy": ">=0.93"},
                     xfail=lambda hp: (hp.weight_decay >= 0.1 or hp.l1 >= 0.01)
                     and "too strong: the penalty outweighs the data and the network underfits")
def test_regularisation(hparams, digits_data, hparams_device):
    result = fit(lambda: MLP(hidden=64), digits_data.train, digits_data.val, hparams,
                 test=digits_data.test, target={"accuracy": 0.97}, stop_at_target=False,
                 device=hparams_device)
    assert result.status == "ok", result.reason
