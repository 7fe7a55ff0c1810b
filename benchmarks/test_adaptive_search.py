"""Misconception 4, "random hyperparameter search is sufficient": Bayesian optimisation (TPE)
against random search with ``search``, on the same budget, over 10 search seeds.

The space has four hyperparameters that matter differently: the learning rate
(``log_uniform(1e-4, 1)``: a lot), momentum (``uniform(0, 0.99)``: with it), weight decay
(``log_uniform(1e-6, 0.1)``: only when large) and dropout (``uniform(0, 0.7)``: little), for an
MLP (32 ReLU units) trained with SGD and momentum, batch 64, 3 epochs. Each search asks 16
trials, 4 at a time (each batch one vectorised stack); TPE's first 8 are random like random
search's, its last 8 are chosen from the results. One training seed per trial, so a trial's
value carries seed noise.

Seen (search seeds 0-9): over TPE's 8 chosen trials, 17 of 80 ended below 50 % validation
accuracy (a rate that crawls or collapses), against 51 of random search's last 8; the median
best found was 0.925 for TPE and 0.921 for random. Search seeds 10-19: 15 against 49, medians
0.925 and 0.921. So the claim holds in the form the data support: the adaptive search stops
spending trials where the space fails, and finds at least as good a configuration; with 16
trials of a problem this easy, the best found differs by less than a point.

``python benchmarks/search_study.py`` measures the claim at length (TPE, Gaussian-process BO,
random search and the grid, 32 trials, 10 epochs, successive halving against full training);
the README quotes its figures.
"""

from __future__ import annotations

import statistics

import pytest

from pytest_hparams import MLP, TrialRecorder, log_uniform, search, uniform
from pytest_hparams.recording import recording_into

pytest.importorskip("optuna", reason='search() needs pip install "pytest-hparams[search]"')

SPACE = {"lr": log_uniform(1e-4, 1.0), "momentum": uniform(0.0, 0.99),
         "weight_decay": log_uniform(1e-6, 0.1), "dropout": uniform(0.0, 0.7),
         "optimizer": "momentum", "batch_size": 64, "epochs": 3, "seeds": 1}
SEARCH_SEEDS = range(10)
TRIALS, BATCH, RANDOM_START = 16, 4, 8  # TPE's random start: two batches of 4
FAILED = 0.5  # validation accuracy below this: the configuration failed to learn


def _searches(sampler: str, data) -> list[list[float]]:
    """Each search's validation accuracy per trial, in the order asked."""
    found = []
    for seed in SEARCH_SEEDS:
        # Each search records into a recorder of its own: 320 trials would drown this test's
        # table; the summary below is what the claim is about.
        with recording_into(TrialRecorder()):
            result = search(lambda hp: MLP(data.features, data.classes, 32, dropout=hp.dropout),
                            data.train, data.val, space=SPACE, sampler=sampler, trials=TRIALS,
                            batch=BATCH, seed=seed)
        found.append(result.values)
    return found


def test_tpe_stops_spending_trials_where_random_search_keeps_failing(digits_data):
    """Claim: after its random start, TPE proposes at most 60 % as many failing configurations
    as random search does over the same trials, and its median best is within half a point of
    random search's (or better).

    Found (search seeds 0-9): 17 against 51 failing trials; median best 0.925 against 0.921.
    """
    runs = {sampler: _searches(sampler, digits_data) for sampler in ("tpe", "random")}
    # A trial that diverged has no value (NaN): it failed too.
    failing = {s: sum(not v >= FAILED for values in found for v in values[RANDOM_START:])
               for s, found in runs.items()}
    best = {s: statistics.median(max(v for v in values if v == v) for values in found)
            for s, found in runs.items()}
    chosen = len(SEARCH_SEEDS) * (TRIALS - RANDOM_START)
    print(f"\ntrials {RANDOM_START + 1}-{TRIALS} below {FAILED:.0%} validation accuracy, of "
          f"{chosen}: " + ", ".join(f"{s} {n}" for s, n in failing.items()))
    print("median best validation accuracy over 10 search seeds: "
          + ", ".join(f"{s} {b:.3f}" for s, b in best.items()))
    assert failing["tpe"] <= 0.6 * failing["random"], failing
    assert best["tpe"] >= best["random"] - 0.005, best
