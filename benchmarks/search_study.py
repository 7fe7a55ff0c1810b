"""Adaptive search against random search and the grid on the digits, over many search seeds.

The seed article's misconception 4 says random search is not enough: Bayesian optimisation
searches more efficiently. This study measures that claim with ``pytest_hparams.search`` on
scikit-learn's digits, in a space of four hyperparameters that matter differently (the learning
rate a lot, momentum with it, weight decay only when large, dropout little), with equal budgets:

- TPE, Gaussian-process BO (GP), random search, and the grid (4 x 2 x 2 x 2 = 32 points, walked
  in a seeded random order), each over ``--seeds`` search seeds;
- the best validation accuracy after n trials (median and spread over the search seeds), and
  the trials each needed to come within 0.5 points of the best configuration any of them found;
- TPE with successive halving (and Hyperband) against TPE with full training, each given
  ``--pruning-trials`` trials: the epochs spent until the search first came within 0.5 points
  of the best any of them found.

Every trial is one training run (one seed) of an MLP (64 ReLU units, dropout) with SGD and
momentum, batch 64, ``--epochs`` epochs, and the batches of ``--batch`` trials train as one
vectorised stack. It prints the tables and draws the best-so-far curves:

    python benchmarks/search_study.py --png docs/search-curves.png
    python benchmarks/search_study.py --seeds 20 --trials 48 --methods tpe,random
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from pytest_hparams import MLP, digits, log_uniform, search, uniform

SPACE = {"lr": log_uniform(1e-4, 1.0), "momentum": uniform(0.0, 0.99),
         "weight_decay": log_uniform(1e-6, 0.1), "dropout": uniform(0.0, 0.7)}
GRID = {"lr": [1e-3, 1e-2, 0.1, 1.0], "momentum": [0.5, 0.9], "weight_decay": [1e-5, 1e-2],
        "dropout": [0.1, 0.5]}
RECIPE = {"optimizer": "momentum", "batch_size": 64, "seeds": 1}
WITHIN = 0.005  # "within 0.5 points" of the best validation accuracy any method found
METHODS = ("tpe", "gp", "random", "grid")
PRUNING = ("tpe", "tpe+halving", "tpe+hyperband")


@dataclass
class Run:
    """One search: its objective per trial (NaN when pruned or failed), the epochs each trial
    trained, and its wall time."""

    method: str
    seed: int
    values: list[float]
    epochs: list[int]
    seconds: float
    sampler_seconds: float

    def best_so_far(self) -> list[float]:
        curve, best = [], -math.inf
        for value in self.values:
            best = max(best, value) if not math.isnan(value) else best
            curve.append(best)
        return curve

    def first_within(self, target: float) -> int | None:
        """How many trials, in the order asked, until one came within reach of ``target``."""
        return next((i for i, v in enumerate(self.best_so_far(), 1) if v >= target), None)

    def epochs_until(self, target: float) -> int | None:
        trials = self.first_within(target)
        return sum(self.epochs[:trials]) if trials is not None else None


def _search(method: str, seed: int, trials: int, args: argparse.Namespace, data: Any) -> Run:
    sampler, _, pruner = method.partition("+")
    space = {**(GRID if sampler == "grid" else SPACE), **RECIPE, "epochs": args.epochs}
    started = time.perf_counter()
    result = search(lambda hp: MLP(data.features, data.classes, 64, dropout=hp.dropout),
                    data.train, data.val, space=space, sampler=sampler, trials=trials,
                    batch=args.batch, seed=seed, pruner=pruner or None)
    seconds = time.perf_counter() - started
    return Run(method, seed, list(result.values),
               [sum(r.epochs for r in t.runs) for t in result], seconds, result.sampler_seconds)


def _spread(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v) and v > -math.inf]
    if not values:
        return "-"
    low, high = np.percentile(values, [25, 75])
    return f"{statistics.median(values):.3f} [{low:.3f}-{high:.3f}]"


def _median_count(counts: list[int | None], total: int) -> str:
    reached = sorted(c for c in counts if c is not None)
    if not reached:
        return f"never (0/{total})"
    # Seeds that never came within reach count as more than any budget: the median is taken
    # over all of them.
    padded = reached + [math.inf] * (total - len(reached))
    middle = statistics.median(padded)
    shown = "never" if math.isinf(middle) else f"{middle:g}"
    return f"{shown} ({len(reached)}/{total})"


def _report_samplers(runs: list[Run], trials: int, args: argparse.Namespace) -> None:
    methods = list(dict.fromkeys(r.method for r in runs))
    best = max(max(r.best_so_far()) for r in runs)
    checkpoints = sorted({n for n in (args.batch, 2 * args.batch, trials // 2, trials)
                          if 0 < n <= trials})
    print(f"\nsamplers: {trials} trials per search, batches of {args.batch}, {args.epochs} "
          f"epochs per trial, {args.seeds} search seeds")
    print("best validation accuracy after n trials: median [25th-75th percentile]; trials "
          "needed to come within 0.5 (1.0) points of the best any search found, median "
          "(searches that did)")
    print(f"{'method':<10}" + "".join(f"{'n=' + str(n):<22}" for n in checkpoints)
          + f"{'within 0.5 pt':<16}within 1 pt")
    for method in methods:
        mine = [r for r in runs if r.method == method]
        cells = "".join(f"{_spread([r.best_so_far()[n - 1] for r in mine]):<22}"
                        for n in checkpoints)
        near, close = (_median_count([r.first_within(best - within) for r in mine], len(mine))
                       for within in (WITHIN, 2 * WITHIN))
        print(f"{method:<10}{cells}{near:<16}{close}")
    print(f"the best any search found: {best:.4f}")
    print(f"\n{'method':<10}{'trials below 90 %':<20}{'wall s':<10}sampler ms per trial")
    for method in methods:
        mine = [r for r in runs if r.method == method]
        poor = statistics.median(sum(not v >= 0.9 for v in r.values) for r in mine)
        print(f"{method:<10}{poor:<20g}{statistics.median(r.seconds for r in mine):<10.1f}"
              f"{1000 * statistics.median(r.sampler_seconds for r in mine) / trials:.1f}")


def _report_pruning(runs: list[Run], trials: int, args: argparse.Namespace) -> None:
    """Each pruned search against full training with the same sampler seed: the epochs until
    it first matched what full training had found after ``--trials`` trials."""
    full = {r.seed: r for r in runs if r.method == "tpe"}
    print(f"\npruning: {trials} trials per search, batches of {args.batch}, {args.epochs} "
          f"epochs per trial, {args.seeds} search seeds; the reference of each seed: the best "
          f"TPE with full training found in {args.trials} trials")
    print(f"{'method':<15}{'epochs in all':<15}{'best found':<22}epochs to match the "
          f"reference, median (searches that did)")
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        reach = [r.epochs_until(full[r.seed].best_so_far()[args.trials - 1])
                 if r.seed in full else None for r in mine]
        print(f"{method:<15}{statistics.median(sum(r.epochs) for r in mine):<15g}"
              f"{_spread([max(r.best_so_far()) for r in mine]):<22}"
              f"{_median_count(reach, len(mine))}")


def _median_curve(runs: list[Run], x: np.ndarray, by_epochs: bool) -> tuple[np.ndarray, ...]:
    """The median and quartiles over ``runs`` of the best so far, after x trials or epochs."""
    curves = []
    for run in runs:
        best = np.array([v if v > -math.inf else np.nan for v in run.best_so_far()])
        spent = np.cumsum(run.epochs) if by_epochs else np.arange(1, len(best) + 1)
        index = np.searchsorted(spent, x, side="right") - 1
        # NaN before the first trial finished and after the search's last one
        inside = (index >= 0) & (x <= spent[-1])
        curves.append(np.where(inside, best[np.clip(index, 0, None)], np.nan))
    stacked = np.array(curves)
    # Drawn only while most searches are still going: the survivors alone would be a biased
    # few (the searches that spent the most epochs).
    going = np.sum(~np.isnan(stacked), axis=0) * 2 > len(runs)
    with warnings.catch_warnings():  # before any search has a result, the median is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        lines = (np.nanmedian(stacked, axis=0), *np.nanpercentile(stacked, [25, 75], axis=0))
    return tuple(np.where(going, line, np.nan) for line in lines)


def _plot(samplers: list[Run], pruning: list[Run], path: str, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = 2 if pruning else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.4), dpi=120, squeeze=False)
    for axis, runs, by_epochs in ((axes[0][0], samplers, False),
                                  *(((axes[0][1], pruning, True),) if pruning else ())):
        top = max(sum(r.epochs) if by_epochs else len(r.values) for r in runs)
        x = np.arange(1, top + 1)
        for method in dict.fromkeys(r.method for r in runs):
            median, low, high = _median_curve([r for r in runs if r.method == method], x,
                                              by_epochs)
            line, = axis.plot(x, median, label=method, linewidth=2)
            axis.fill_between(x, low, high, color=line.get_color(), alpha=0.12)
        axis.set_ylim(0.93, 0.99)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
        axis.set_ylabel("best validation accuracy so far")
        if by_epochs:
            axis.set_xlabel("epochs trained, all trials together")
            axis.set_title(f"TPE with and without pruning ({args.pruning_trials} trials)",
                           fontsize=10)
        else:
            axis.set_xlabel(f"trials (asked {args.batch} at a time, each batch one stack)")
            axis.set_title("Samplers on the same budget", fontsize=10)
    figure.suptitle(f"Digits MLP: lr, momentum, weight decay, dropout; median and quartiles "
                    f"over {args.seeds} search seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="search seeds per method")
    parser.add_argument("--trials", type=int, default=32, help="trials per search")
    parser.add_argument("--batch", type=int, default=8, help="trials asked (and stacked) at once")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated samplers compared on --trials trials")
    parser.add_argument("--pruning", default=",".join(PRUNING),
                        help="comma-separated sampler+pruner searches compared on "
                             "--pruning-trials trials ('' skips them)")
    parser.add_argument("--pruning-trials", type=int, default=96,
                        help="trials per search of the pruning comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--png", default=None, help="draw the best-so-far curves here")
    parser.add_argument("--save", default=None, help="write every search's trials as JSON")
    parser.add_argument("--load", default=None,
                        help="report and draw the searches a --save wrote, without searching")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = digits()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({args.threads} thread), optuna {optuna.__version__}; load "
          f"average {os.getloadavg()[0]:.1f} at the start", flush=True)
    started = time.perf_counter()
    grid_size = math.prod(len(v) for v in GRID.values())

    def study(methods: str, trials: int) -> list[Run]:
        runs = []
        for method in filter(None, methods.split(",")):
            if method.startswith("grid") and trials > grid_size:
                print(f"{method}: skipped, the grid has {grid_size} points")
                continue
            runs += [_search(method, seed, trials, args, data) for seed in range(args.seeds)]
            print(f"{method}: done at {time.perf_counter() - started:.0f} s", flush=True)
        return runs

    if args.load:
        saved = json.loads(Path(args.load).read_text())
        samplers, pruning = ([Run(**run) for run in saved[part]] for part in ("samplers",
                                                                                "pruning"))
    else:
        samplers = study(args.methods, args.trials)
        pruning = study(args.pruning, args.pruning_trials)
    if args.save:
        Path(args.save).write_text(json.dumps({"samplers": [asdict(r) for r in samplers],
                                               "pruning": [asdict(r) for r in pruning]}))
    if samplers:
        _report_samplers(samplers, args.trials, args)
    if pruning:
        _report_pruning(pruning, args.pruning_trials, args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; "
          f"{time.perf_counter() - started:.0f} s in all")
    if args.png and samplers:
        _plot(samplers, pruning, args.png, args)


if __name__ == "__main__":
    main()
