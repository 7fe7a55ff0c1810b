"""False alarms and power of the baseline gate, measured on seed noise like the benchmarks'.

1. Seed noise, measured: real ``fit`` runs on scikit-learn's digits (an MLP, the settings the
   seed article's tables vary) over ``--seeds-measured`` seeds per configuration; the spread of
   validation accuracy over seeds is printed per configuration.
2. Simulation: many baseline/candidate pairs of ``n`` seeds each, drawn (a) from a normal
   distribution with the measured spread and (b) by resampling a configuration's real per-seed
   accuracies (quantised, possibly skewed). With no change a failing verdict is a false alarm;
   with the candidate 3 accuracy points lower it is a detection. Every verdict comes from the
   gate itself, ``pytest_hparams.gate.verdicts.compare_metric``, at the default tolerance and alpha.
3. The default tolerance against 0.005 and 0.01, with the run-level false-alarm chance.
4. For contrast, on the same pairs: the tolerance alone (no test), "the mean dropped beyond
   the tolerance and the drop is significant" (a test against zero), and a bootstrap interval
   (``scipy.stats.bootstrap``) in place of Welch's t.
5. The default gate at spreads from 0.0025 to 0.04, to show where the targets stop holding.

    python benchmarks/gate_power.py                 # 4 to 8 minutes on 2 shared CPU cores
    python benchmarks/gate_power.py --sigma 0.01    # skip the measurement, use this spread
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy import stats

from pytest_hparams import MLP, digits, fit
from pytest_hparams.gate.tolerance import DEFAULT_ALPHA, DEFAULT_FAIL, parse_tolerance
from pytest_hparams.gate.verdicts import compare_metric

DROP = 0.03

#: Configurations like the benchmarks' rows: the article's hyperparameters on digits.
CONFIGS: dict[str, dict[str, object]] = {
    "adam lr=1e-3": {"optimizer": "adam", "lr": 1e-3, "epochs": 15},
    "sgd lr=0.1": {"optimizer": "sgd", "lr": 0.1, "epochs": 15},
    "sgd lr=0.01 (slow)": {"optimizer": "sgd", "lr": 0.01, "epochs": 15},
    "momentum bs=128": {"optimizer": "momentum", "lr": 0.05, "epochs": 15, "batch_size": 128},
    "adam 3 layers": {"optimizer": "adam", "lr": 1e-3, "epochs": 15, "layers": 3},
    "adam dropout=0.5": {"optimizer": "adam", "lr": 1e-3, "epochs": 15, "dropout": 0.5},
    "adam tanh hidden=16": {"optimizer": "adam", "lr": 1e-3, "epochs": 15, "hidden": 16,
                            "activation": "tanh"},
    "momentum step decay": {"optimizer": "momentum", "lr": 0.05, "epochs": 15,
                            "schedule": "step", "decay": 0.5, "step_size": 5},
}
_MODEL_KEYS = ("layers", "dropout", "hidden", "activation")


def measure_noise(seeds: int) -> dict[str, list[float]]:
    """Validation accuracy per seed of each configuration, trained for real."""
    data = digits()
    measured = {}
    for name, config in CONFIGS.items():
        model_args = {k: v for k, v in config.items() if k in _MODEL_KEYS}
        settings = {k: v for k, v in config.items() if k not in _MODEL_KEYS}
        start = time.perf_counter()
        result = fit(lambda args=model_args: MLP(64, 10, **args), data.train, data.val,
                     seeds=range(seeds), **settings)
        values = [run.final["accuracy"] for run in result.runs]
        measured[name] = values
        print(f"  {name:22s} accuracy {statistics.mean(values):.4f} ± "
              f"{statistics.stdev(values):.4f} over {seeds} seeds "
              f"({time.perf_counter() - start:.1f} s)")
    return measured


def wilson(hits: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate (scipy's binomtest)."""
    ci = stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def rate(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{hits / n:6.1%} [{low:5.1%}, {high:5.1%}]"


def draw(rng: np.random.Generator, model: str, sigma: float, pool: np.ndarray,
         pairs: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and candidate samples with no change: ``pairs`` × ``n`` seeds each."""
    if model == "normal":
        return rng.normal(0.95, sigma, (pairs, n)), rng.normal(0.95, sigma, (pairs, n))
    return rng.choice(pool, (pairs, n)), rng.choice(pool, (pairs, n))


def gate_verdicts(base: np.ndarray, new: np.ndarray, text: str, alpha: float) -> int:
    rule = parse_tolerance(text)
    return sum(compare_metric(b, c, rule, alpha).failed for b, c in zip(base, new, strict=True))


def alternative_verdicts(base: np.ndarray, new: np.ndarray, tolerance: float,
                         alpha: float) -> dict[str, int]:
    """Failing verdicts of the rules the gate did not choose, on the same pairs."""
    delta = new.mean(axis=1) - base.mean(axis=1)
    beyond = delta < -tolerance
    against_zero = stats.ttest_ind(new, base, axis=1, equal_var=False, alternative="less")
    return {
        "tolerance alone (no test)": int(beyond.sum()),
        "beyond tolerance & p(drop>0)<α": int((beyond & (against_zero.pvalue < alpha)).sum()),
    }


def bootstrap_verdicts(rng: np.random.Generator, base: np.ndarray, new: np.ndarray,
                       tolerance: float, alpha: float) -> int:
    """A percentile bootstrap of the mean difference: fail when its one-sided upper bound
    is below -tolerance (the same hypothesis as the gate's, tested by resampling)."""
    hits = 0
    for b, c in zip(base, new, strict=True):
        result = stats.bootstrap((c, b), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                                 confidence_level=1 - alpha, alternative="less",
                                 n_resamples=999, method="percentile", vectorized=True,
                                 random_state=rng)
        hits += result.confidence_interval.high < -tolerance
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=None,
                        help="use this spread of accuracy over seeds instead of measuring it")
    parser.add_argument("--seeds-measured", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--bootstrap-pairs", type=int, default=300)
    parser.add_argument("--sweep-pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    rule_text = DEFAULT_FAIL[0]
    rule = parse_tolerance(rule_text)
    alpha = DEFAULT_ALPHA
    print(f"gate: {rule_text}, α = {alpha}; {args.pairs} simulated pairs per cell; a real "
          f"drop of {DROP:.0%} points; rates with 95 % Wilson intervals")

    if args.sigma is None:
        print(f"\nseed noise of digits validation accuracy (real fit runs, "
              f"{args.seeds_measured} seeds each):")
        measured = measure_noise(args.seeds_measured)
        spreads = {name: statistics.stdev(values) for name, values in measured.items()}
        ordered = sorted(spreads.values())
        typical = statistics.median(ordered)
        upper = float(np.quantile(ordered, 0.75))
        noisiest = max(spreads, key=spreads.__getitem__)
        print(f"spread over seeds: median {typical:.4f}, upper quartile {upper:.4f}, largest "
              f"{spreads[noisiest]:.4f} ({noisiest})")
        sigmas = {"median": typical, "upper quartile": upper, "largest": spreads[noisiest]}
        # The empirical pools: real per-seed accuracies, quantised and perhaps skewed.
        pools = {name: np.array(measured[name]) for name in
                 (min(spreads, key=lambda k: abs(spreads[k] - typical)), noisiest)}
    else:
        sigmas = {"given": args.sigma}
        pools = {}

    print(f"\n{'noise':40s} {'seeds':>5s}  {'false alarms (no change)':>26s}  "
          f"{'detected (3-point drop)':>26s}")
    models = [("normal", name, sigma, np.array([])) for name, sigma in sigmas.items()]
    models += [("empirical", name, float(np.std(pool, ddof=1)), pool)
               for name, pool in pools.items()]
    results = []
    for model, name, sigma, pool in models:
        for n in (3, 5):
            base, same = draw(rng, model, sigma, pool, args.pairs, n)
            false_alarms = gate_verdicts(base, same, rule_text, alpha)
            detected = gate_verdicts(base, same - DROP, rule_text, alpha)
            label = f"{model} σ={sigma:.4f} ({name})"
            print(f"{label:40s} {n:5d}  {rate(false_alarms, args.pairs):>26s}  "
                  f"{rate(detected, args.pairs):>26s}")
            results.append((model, name, sigma, n, base, same, false_alarms))

    print(f"\nwhy {rule_text}: the gate at other tolerances (α = {alpha}, 5 seeds, normal "
          f"noise); 'K=30' is the chance of at least one false alarm among 30 unchanged "
          f"configurations")
    for text in ("accuracy:-0.005", rule_text, "accuracy:-0.01"):
        cells = []
        for name, sigma in sigmas.items():
            if name == "largest":
                continue
            base, same = draw(rng, "normal", sigma, np.array([]), args.pairs, 5)
            false_alarms = gate_verdicts(base, same, text, alpha) / args.pairs
            detected = gate_verdicts(base, same - DROP, text, alpha) / args.pairs
            cells.append(f"σ={sigma:.4f}: false alarms {false_alarms:5.1%} (K=30: "
                         f"{1 - (1 - false_alarms) ** 30:5.1%}), detected {detected:6.1%}")
        print(f"  {text:17s} " + "; ".join(cells))

    print(f"\nthe gate against rules it does not use, on the same pairs (tolerance "
          f"{rule.amount:g}); 'at the tolerance': alarms when the true drop is exactly the "
          f"tolerance, which a test of the tolerance at level α keeps at or under {alpha:.0%}")
    for model, name, sigma, n, base, same, _ in results:
        if model != "normal" or name == "largest":
            continue
        label = f"σ={sigma:.4f} ({name}), {n} seeds"
        edge = same - rule.amount
        rows = {f"the gate (Welch, {args.pairs} pairs)": [
            gate_verdicts(base, x, rule_text, alpha) / args.pairs
            for x in (same, same - DROP, edge)]}
        alternatives = [alternative_verdicts(base, x, rule.amount, alpha)
                        for x in (same, same - DROP, edge)]
        for rule_name in alternatives[0]:
            rows[rule_name] = [a[rule_name] / args.pairs for a in alternatives]
        k = args.bootstrap_pairs
        rows[f"bootstrap interval ({k} pairs)"] = [
            bootstrap_verdicts(rng, base[:k], x[:k], rule.amount, alpha) / k
            for x in (same, same - DROP, edge)]
        for rule_name, (fa, det, boundary) in rows.items():
            print(f"  {label:32s} {rule_name:34s} false alarms {fa:5.1%}, detected {det:6.1%}, "
                  f"at the tolerance {boundary:5.1%}")

    print(f"\nthe gate ({rule_text}, α = {alpha}) across spreads, normal noise, "
          f"{args.sweep_pairs} pairs per cell:")
    print(f"{'σ over seeds':>12s}  {'3 seeds: false alarms, detected':>32s}  "
          f"{'5 seeds: false alarms, detected':>32s}")
    for sigma in (0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.04):
        cells = []
        for n in (3, 5):
            base, same = draw(rng, "normal", sigma, np.array([]), args.sweep_pairs, n)
            false_alarms = gate_verdicts(base, same, rule_text, alpha) / args.sweep_pairs
            detected = gate_verdicts(base, same - DROP, rule_text, alpha) / args.sweep_pairs
            cells.append(f"{false_alarms:6.1%}, {detected:6.1%}")
        print(f"{sigma:12.4f}  {cells[0]:>32s}  {cells[1]:>32s}")

    print("\na run compares many configurations; the chance that at least one of K unchanged "
          "configurations raises a false alarm, from the 5-seed rates above:")
    for model, name, sigma, n, _, _, false_alarms in results:
        if n != 5:
            continue
        per_config = false_alarms / args.pairs
        by_k = ", ".join(f"K={k}: {1 - (1 - per_config) ** k:.1%}" for k in (10, 30, 100))
        print(f"  {model} σ={sigma:.4f} ({name}): {by_k}")


if __name__ == "__main__":
    main()
