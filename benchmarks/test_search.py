"""Grid search against random search on the same budget: 9 trials of 3 seeds each, over the
learning rate (which matters) and dropout (which barely does), 10 epochs of Adam, batch 128.

The grid tries 3 learning rates × 3 dropout rates; random search draws 9 points from
``log_uniform(1e-4, 1)`` × ``uniform(0, 0.5)`` (sampling seed 0). Both are rows of one table,
told apart by the ``search`` column. "Trials needed" counts the trials, in the order each
search ran them, until it first found a configuration within 1 point of its own best.

Seen (seeds 0-2): grid best 0.959 (lr 0.01, dropout 0), found at trial 4 because its first
three trials all use lr 1e-4; random best 0.966 (lr 0.030, dropout 0.13), found at trial 3.
Six of the grid's nine trials end below 0.40 (lr 1e-4 crawls, lr 1 collapses), two of random
search's. Seeds 3-5 / 6-8: grid 0.959 / 0.959, random 0.968 / 0.969. Sampling seeds 1-4 gave
random bests of 0.956, 0.966, 0.970 and 0.964.
"""

from benchmarks.recipe import SEEDS
from pytest_hparams import MLP, TrialResult, log_uniform, sweep, uniform

RECIPE = {"optimizer": "adam", "batch_size": 128, "epochs": 10, "seeds": SEEDS}
TRIALS = 9


def search(space: dict, data, device) -> list[TrialResult]:
    return sweep(lambda hp: MLP(hidden=64, dropout=hp.dropout), data.train, data.val,
                 space={**space, **RECIPE}, test=data.test, target={"accuracy": 0.96},
                 stop_at_target=False, device=device)


def best_accuracy(results: list[TrialResult]) -> float:
    return max(r.accuracy for r in results)


def trials_needed(results: list[TrialResult], within: float = 0.01) -> int:
    """How many trials, in order, until one came within ``within`` of the search's best."""
    best = best_accuracy(results)
    return next(i for i, r in enumerate(results, 1) if r.accuracy >= best - within)


def test_random_search_matches_grid_search_on_the_same_budget(digits_data, hparams_device):
    """Claim: with the same 9 trials, random search finds a configuration as good as grid
    search's best, within 1 point of validation accuracy (and above 95 %): the grid spends its
    budget on only 3 learning rates, two of which fail whatever the dropout, while random
    search tries 9 different learning rates.

    Found (seeds 0-2): random 0.966 against grid 0.959, in 3 trials against 4.
    """
    grid = search({"search": ["grid"], "lr": [1e-4, 1e-2, 1.0], "dropout": [0.0, 0.25, 0.5]},
                  digits_data, hparams_device)
    random = search({"search": ["random"], "lr": log_uniform(1e-4, 1.0),
                     "dropout": uniform(0.0, 0.5), "samples": TRIALS, "seed": 0},
                    digits_data, hparams_device)
    assert len(grid) == len(random) == TRIALS
    found = {"grid": best_accuracy(grid), "random": best_accuracy(random)}
    print(f"best validation accuracy found: {found}; trials needed: "
          f"grid {trials_needed(grid)}, random {trials_needed(random)}")
    assert found["random"] >= found["grid"] - 0.01, found
    assert found["random"] >= 0.95, found
