"""The README's quick start: a 2 × 3 grid over learning rate and optimiser, 3 seeds each, on
scikit-learn's bundled 8×8 digits. Run it with ``pytest examples``."""

import pytest

from pytest_hparams import MLP, digits, fit

DATA = digits()  # 1,797 real images, split 60/20/20 with a fixed seed; nothing downloads


@pytest.mark.hparams(lr=[0.01, 0.1], optimizer=["sgd", "momentum", "adam"], seeds=3,
                     epochs=20, expect={"accuracy": ">=0.85"},
                     xfail=lambda hp: hp.optimizer == "sgd" and hp.lr < 0.05
                     and "plain SGD at lr=0.01 needs more than 20 epochs")
def test_optimizer(hparams, hparams_device):
    result = fit(lambda: MLP(64, 10, hidden=64), DATA.train, DATA.val, hparams,
                 device=hparams_device, target={"accuracy": 0.95})
    assert result.status == "ok"
