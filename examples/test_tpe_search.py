"""The README's adaptive search: TPE over the learning rate and dropout of Adam, 24 trials
asked 8 at a time (each batch trained as one vectorised stack), successive halving stopping
the unpromising ones. Run it with ``pytest examples/test_tpe_search.py`` (needs
``pip install "pytest-hparams[search]"``).
"""

import pytest

from pytest_hparams import MLP, digits, log_uniform, search, uniform

pytest.importorskip("optuna", reason='search() needs pip install "pytest-hparams[search]"')

DATA = digits()


def test_tpe_finds_a_good_setting(hparams_device):
    result = search(lambda hp: MLP(64, 10, hidden=64, dropout=hp.dropout), DATA.train, DATA.val,
                    space={"lr": log_uniform(1e-4, 1.0), "dropout": uniform(0.0, 0.5),
                           "optimizer": "adam", "epochs": 15, "seeds": 2},
                    sampler="tpe", trials=24, batch=8, seed=0, pruner="halving",
                    device=hparams_device)
    assert result.best.accuracy >= 0.95  # result.best: a TrialResult; .hparams its configuration
    assert len(result.trials) == 24  # in the order they were asked
