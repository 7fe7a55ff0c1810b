"""Batch size: examples per step, from 16 to 512, with Adam at lr 0.01 on the digits.

Claim: every batch size from 16 to 512 brings every seed to 95 % validation accuracy within 30
epochs and keeps test accuracy above 92 %; larger batches take more epochs to get there (fewer
steps per epoch), while each epoch costs less.

Seen (seeds 0-2, epochs to 95 %): 3.7 at batch 16, 4.3 at 32, 5.7 at 64, 7.3 at 128, 11.0 at
256, 18.0 at 512 (at most 23 of 30 over seeds 0-8); test accuracy 0.945-0.961, the lowest over
seeds 0-8 0.938 (batch 128, seeds 6-8).
"""

import pytest

from benchmarks.recipe import SEEDS, TARGET, assert_every_seed_reaches
from pytest_hparams import MLP, fit


@pytest.mark.hparams(batch_size=[16, 32, 64, 128, 256, 512], optimizer="adam", lr=0.01,
                     epochs=30, seeds=SEEDS, expect={"test_accuracy": ">=0.92"})
def test_batch_size(hparams, digits_data, hparams_device):
    result = fit(lambda: MLP(hidden=64), digits_data.train, digits_data.val, hparams,
                 test=digits_data.test, target=TARGET, device=hparams_device)
    assert_every_seed_reaches(result)
