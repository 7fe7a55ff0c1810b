"""What every benchmark shares: the training seeds, the target, and the checks on a result.

Each module varies one hyperparameter of a small, fixed recipe (an MLP on the 8×8 digits) and
states its recipe in its marker. ``HPARAMS_BENCH_SEEDS=3,4,5 pytest benchmarks`` reruns the
whole suite with other seeds: the thresholds are meant to hold for them too.
"""

from __future__ import annotations

import os

from pytest_hparams import TrialResult, lower_is_better


def _seeds() -> tuple[int, ...]:
    text = os.environ.get("HPARAMS_BENCH_SEEDS", "").strip()
    if not text:
        return (0, 1, 2)
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"HPARAMS_BENCH_SEEDS must be comma-separated integers such as '3,4,5', got {text!r}"
        ) from None
    if len(seeds) < 3:
        raise ValueError(f"HPARAMS_BENCH_SEEDS needs at least 3 seeds, got {text!r}")
    return seeds


#: The training seeds of every configuration.
SEEDS = _seeds()

#: Validation accuracy every configuration is timed to: epochs and seconds to reach it.
TARGET = {"accuracy": 0.95}


def assert_every_seed_reaches(result: TrialResult) -> None:
    """Fail unless each seed reached the target within the configuration's epochs."""
    __tracebackhide__ = True
    target = ", ".join(f"{k} {v:g}" for k, v in result.target.items())
    epochs = [run.epochs_to_target for run in result.runs]
    assert result.reached == len(result.runs), (
        f"{result.reached}/{len(result.runs)} seeds reached {target} "
        f"(epochs to target per seed: {epochs}; final accuracy {result.accuracy:.3f})"
    )


def by(results: list[TrialResult], *keys: str) -> dict[object, TrialResult]:
    """``sweep`` results keyed by the value of one hyperparameter (or a tuple of several)."""
    if len(keys) == 1:
        return {r.hparams[keys[0]]: r for r in results}
    return {tuple(r.hparams[k] for k in keys): r for r in results}


def best(results: dict[object, TrialResult], metric: str = "accuracy") -> object:
    """The key whose result has the best mean ``metric`` (the first of equals)."""
    sign = -1 if lower_is_better(metric) else 1
    return max(results, key=lambda key: sign * results[key].metric(metric).mean)
