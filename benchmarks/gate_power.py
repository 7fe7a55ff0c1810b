"""False alarms, detection and seeds trained by the baseline gate, on real seed noise.

1. Seeds, trained for real: 8 digits MLP configurations (the settings the seed article's tables
   vary) over ``--seeds`` seeds each, five times: the baseline; a reordered sum (the loss over
   the batch in reverse order: a refactor that only changes float rounding); another batch
   order (the training rows permuted: each seed draws other batches); and two planted
   regressions (5 % and 10 % of the training labels replaced at random). Printed per
   configuration: the spread over seeds, and for each change the mean change, the spread of the
   per-seed differences, the seed-level correlation and the share of exactly-zero differences.
2. Calibration at 3-5 seeds of the paired t-test, the exact sign-flip permutation test and the
   percentile bootstrap, when the change is exactly the tolerance (a calibrated test fails
   there at the rate alpha), on normal differences and on the real differences resampled.
3. The gate at its defaults over runs of 60 configurations, through ``GateMirror``: the gate's
   own ``paired_p``, ``SequentialDesign`` and ``adjust`` on arrays, checked against
   ``compare_runs`` on sample runs. With no change (exactly zero differences; the reordered
   sum; another batch order), the share of runs with any false alarm and the mean seeds
   trained; with a one-point drop, the share detected, for one regressed configuration among
   60 and for all 60.
4. What the defaults were chosen against: the correction (BH, Holm, none), the tolerance
   (0.0025, 0.005, 0.0075), seeds on demand (3:8, 3:12, 3:20) and fixed seeds (5, 8), the
   spending functions and look schedules, and the spread of the differences at which each
   target stops holding; and why the looks are combined by Bonferroni's inequality rather
   than by exact group-sequential boundaries for normal scores (``normal_theory_scores``).

    python benchmarks/gate_power.py                          # 8 to 15 minutes on 2 shared cores
    python benchmarks/gate_power.py --save-seeds seeds.json  # keep the trained seeds
    python benchmarks/gate_power.py --seeds-file seeds.json  # reuse them: simulations only
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytest_hparams import RunFile, SeedRun, TrialResult, compare_runs
from pytest_hparams.gate.options import DEFAULT_CORRECTION, SeedsOnDemand
from pytest_hparams.gate.statistics import SequentialDesign, adjust, paired_p, spent
from pytest_hparams.gate.tolerance import DEFAULT_ALPHA, DEFAULT_FAIL, parse_tolerance

DROP = 0.01
RUN_SIZE = 60
RECOMMENDED_SEEDS = SeedsOnDemand(3, 8)
VALIDATION = 359  # digits validation examples: accuracies are multiples of 1/359

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
CHANGES = ("reordered sum", "batch order", "labels 5%", "labels 10%")
NUMERICS = ("reordered sum", "batch order")


# --------------------------------------------------------------------------- 1. real seeds


def measure(seeds: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per configuration and variant, the validation accuracy and loss of each seed."""
    import torch
    from torch.nn import functional

    from pytest_hparams import MLP, digits, fit

    torch.set_num_threads(1)
    data = digits()
    inputs, labels = data.train
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))

    def replaced(fraction: float) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        index = torch.randperm(len(labels), generator=generator)[: round(len(labels) * fraction)]
        noisy = labels.clone()
        noisy[index] = torch.randint(0, 10, (len(index),), generator=generator)
        return noisy

    def reversed_sum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.cross_entropy(output.flip(0), target.flip(0))

    variants: dict[str, tuple[tuple[torch.Tensor, torch.Tensor], Callable | None]] = {
        "baseline": ((inputs, labels), None),
        "reordered sum": ((inputs, labels), reversed_sum),
        "batch order": ((inputs[order], labels[order]), None),
        "labels 5%": ((inputs, replaced(0.05)), None),
        "labels 10%": ((inputs, replaced(0.10)), None),
    }
    measured: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, config in CONFIGS.items():
        model_args = {k: v for k, v in config.items() if k in _MODEL_KEYS}
        settings = {k: v for k, v in config.items() if k not in _MODEL_KEYS}
        start = time.perf_counter()
        measured[name] = {}
        for variant, (train, loss_fn) in variants.items():
            result = fit(lambda args=model_args: MLP(64, 10, **args), train, data.val,
                         seeds=range(seeds), loss_fn=loss_fn, **settings)
            measured[name][variant] = {
                "accuracy": [run.final["accuracy"] for run in result.runs],
                "loss": [run.final["loss"] for run in result.runs]}
        print(f"  trained {name} ({time.perf_counter() - start:.0f} s)", flush=True)
    return measured


@dataclass(frozen=True)
class Change:
    """One change of one configuration: per-seed accuracy differences and what they show."""

    differences: np.ndarray
    correlation: float

    @property
    def spread(self) -> float:
        return float(np.std(self.differences, ddof=1))


def changes(measured: dict) -> dict[str, dict[str, Change]]:
    found: dict[str, dict[str, Change]] = {}
    for name, variants in measured.items():
        base = np.array(variants["baseline"]["accuracy"])
        found[name] = {}
        for change in CHANGES:
            now = np.array(variants[change]["accuracy"])
            moved = np.std(now) > 0 and np.std(base) > 0
            rho = float(np.corrcoef(base, now)[0, 1]) if moved else float("nan")
            found[name][change] = Change(now - base, rho)
    return found


def print_correlations(measured: dict, found: dict) -> None:
    print("\nper-seed accuracy differences, candidate minus baseline (the same seeds); ρ is the "
          "seed-level correlation, '0s' the share of seeds with exactly the same accuracy")
    header = f"{'configuration':22s} {'σ over seeds':>12s}"
    for change in CHANGES:
        header += f" | {change + ': Δ, sd, ρ, 0s':>32s}"
    print(header)
    for name, variants in measured.items():
        base = np.array(variants["baseline"]["accuracy"])
        line = f"{name:22s} {np.std(base, ddof=1):12.4f}"
        for change in CHANGES:
            c = found[name][change]
            line += (f" | {c.differences.mean():+8.4f} {c.spread:.4f} {c.correlation:+5.2f} "
                     f"{np.mean(c.differences == 0):4.0%}")
        print(line)
    loss_moves = [np.max(np.abs(np.array(v["reordered sum"]["loss"]) -
                                np.array(v["baseline"]["loss"]))) for v in measured.values()]
    print(f"the reordered sum moved the validation loss by at most {max(loss_moves):.1e}")
    for change in CHANGES:
        rhos = [found[n][change].correlation for n in found]
        spreads = [found[n][change].spread for n in found]
        finite = [r for r in rhos if np.isfinite(r)]
        shown = f"median ρ {statistics.median(finite):+.2f}" if finite else "ρ undefined"
        print(f"  {change:14s}: {shown}, median spread of the differences "
              f"{statistics.median(spreads):.4f}")


# --------------------------------------------------------------------------- 2. calibration


def sign_flip_p(gains: np.ndarray, margin: float) -> np.ndarray:
    """Exact one-sided sign-flip permutation p-values of H0 "mean gain >= -margin"."""
    shifted = gains + margin
    n = gains.shape[-1]
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    flipped = (shifted[:, None, :] * signs[None, :, :]).mean(axis=-1)
    observed = shifted.mean(axis=-1)[:, None]
    return (flipped <= observed + 1e-15).mean(axis=-1)


def bootstrap_rejects(rng: np.random.Generator, gains: np.ndarray, margin: float,
                      alpha: float, resamples: int = 1000) -> np.ndarray:
    """Percentile bootstrap: the upper ``1 - alpha`` bound of the mean gain below -margin."""
    n = gains.shape[-1]
    index = rng.integers(0, n, (resamples, n))
    means = gains[:, index].mean(axis=-1)
    return np.quantile(means, 1 - alpha, axis=-1) < -margin


def print_calibration(rng: np.random.Generator, found: dict, margin: float, alpha: float,
                      rows: int) -> None:
    print(f"\ncalibration at the tolerance (true change exactly -{margin:g}: a calibrated "
          f"one-sided test at α = {alpha:g} fails {alpha:.0%} of the time there; {rows} "
          f"configurations per cell) and detection of a {DROP:g} drop")
    pool = np.concatenate([c.differences - c.differences.mean()
                           for name in found for key, c in found[name].items()
                           if key == "batch order"])
    sd = float(np.std(pool, ddof=1))
    print(f"{'differences':34s} {'seeds':>5s} {'paired t':>22s} {'sign-flip':>22s} "
          f"{'bootstrap':>22s}")
    for source in ("normal", "resampled"):
        for n in (3, 4, 5):
            cells = []
            for truth in (-margin, -DROP):
                if source == "normal":
                    gains = rng.normal(truth, sd, (rows, n))
                else:
                    gains = rng.choice(pool, (rows, n)) + truth
                paired = (paired_p(gains, margin).worse[:, 0] <= alpha).mean()
                flip = (sign_flip_p(gains, margin) <= alpha).mean()
                boot = bootstrap_rejects(rng, gains[: rows // 20], margin, alpha).mean()
                cells.append((paired, flip, boot))
            label = (f"normal, sd {sd:.4f}" if source == "normal"
                     else "real batch-order differences")
            text = " ".join(f"{a:6.1%} / {b:6.1%}      " for a, b in zip(*cells, strict=True))
            print(f"{label:34s} {n:5d} {text}")
    print("  (each cell: fails at the tolerance / detects the drop; the sign-flip test cannot "
          "reach p ≤ 0.05 below 5 seeds (its smallest p-value is 1/2^n), and the bootstrap "
          "draws its interval from 3-5 values, far too narrow)")


# --------------------------------------------------------------------------- 3. the gate


@dataclass(frozen=True)
class GateSettings:
    """One setting of the gate: the tolerance, α, the correction and the seeds."""

    margin: float
    alpha: float = DEFAULT_ALPHA
    correction: str = DEFAULT_CORRECTION
    seeds: SeedsOnDemand | None = RECOMMENDED_SEEDS
    fixed: int = 5
    regression_spending: str = "obrien-fleming"
    within_spending: str = "pocock"
    looks: tuple[int, ...] | None = None

    @property
    def plan(self) -> tuple[int, ...]:
        if self.looks is not None:
            return self.looks
        return self.seeds.looks() if self.seeds is not None else (self.fixed,)

    def label(self) -> str:
        seeds = f"seeds {self.seeds}" if self.seeds else f"{self.fixed} seeds"
        return f"tolerance {self.margin:g}, {self.correction}, {seeds}"


@dataclass(frozen=True)
class RunOutcome:
    """Runs × configurations: which regressed, and how many seeds each trained."""

    regressed: np.ndarray
    seeds: np.ndarray


class GateMirror:
    """The gate's decisions on arrays of per-seed gains ``(runs, configurations, seeds)``.

    As the pytest hooks do: each configuration's sequential design has its regression boundary
    at alpha over the planned tests (the correction's family); exactly zero differences are
    unchanged by the tolerance alone and left out of the correction; the p-values of the rest
    are adjusted over the run.
    """

    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings

    def run(self, gains: np.ndarray) -> RunOutcome:
        s = self.settings
        planned = gains.shape[1]
        level = s.alpha / planned if s.correction != "none" else s.alpha
        looks = s.plan
        design = SequentialDesign(looks, level, s.alpha, s.regression_spending,
                                  s.within_spending)
        outcome = design.outcome(paired_p(gains, s.margin, looks))
        used = np.asarray(looks)[outcome.look]
        zero = np.zeros(outcome.p.shape, dtype=bool)
        for index, n in enumerate(looks):
            at = outcome.look == index
            zero[at] = (gains[..., :n] == 0).all(axis=-1)[at]
        # Exactly zero differences: unchanged by the tolerance alone, not a test.
        adjusted = adjust(np.where(zero, np.nan, outcome.p), s.correction)
        regressed = ~zero & (adjusted <= s.alpha)
        return RunOutcome(regressed, used)


def check_mirror(settings: GateSettings, gains: np.ndarray) -> None:
    """The mirror's verdicts equal ``compare_runs``'s on the same trials (a few runs)."""
    # Dyadic values: baseline plus gain minus baseline is exactly the gain again.
    gains = np.round(gains * 2**20) / 2**20
    mirror = GateMirror(settings).run(gains)
    rule = parse_tolerance(f"accuracy:-{settings.margin}")
    looks = list(settings.plan)
    level = settings.alpha / gains.shape[1] if settings.correction != "none" else \
        settings.alpha
    for r in range(gains.shape[0]):
        base, now = [], []
        for k in range(gains.shape[1]):
            n = int(mirror.seeds[r, k])
            values = 0.875 + np.round(0.01 * np.sin(np.arange(looks[-1]) + k) * 2**10) / 2**10
            config = {"nodeid": f"t.py::test[{k}]", "test": "t.py::test", "config_id": str(k),
                      "hparams": {"k": k}}
            base.append(TrialResult(**config, runs=[
                SeedRun(seed=s, final={"accuracy": float(values[s])}) for s in range(looks[-1])]))
            trial = TrialResult(**config, runs=[
                SeedRun(seed=s, final={"accuracy": float(values[s] + gains[r, k, s])})
                for s in range(n)])
            if settings.seeds is not None:
                trial.seed_design = {"looks": looks, "alpha": level}
            now.append(trial)
        comparison = compare_runs(RunFile(base), now, [rule], settings.alpha,
                                  correction=settings.correction)
        gate = np.array([c.failed for c in comparison.configs])
        assert (gate == mirror.regressed[r]).all(), (r, gate, mirror.regressed[r])
        assert not any(c.needs_seeds for c in comparison.configs)


@dataclass(frozen=True)
class Simulated:
    """What runs of 60 configurations gave: false alarms, detections, seeds."""

    false_alarm: float  # share of runs where an unchanged configuration regressed
    detected: float  # share of the regressed configurations that regressed
    failed: float  # share of runs that failed on a regressed configuration
    seeds: float  # mean seeds trained per unchanged configuration


def simulate(settings: GateSettings, draw: Callable[[tuple[int, ...]], np.ndarray],
             runs: int, regressed: int = 0) -> Simulated:
    """``draw(shape)`` gives gains with no change; the first ``regressed`` configurations of
    each run lose DROP."""
    n = max(settings.plan)
    gains = draw((runs, RUN_SIZE, n))
    gains[:, :regressed] -= DROP
    outcome = GateMirror(settings).run(gains)
    unchanged = outcome.regressed[:, regressed:]
    hits = outcome.regressed[:, :regressed]
    nothing = float("nan")
    return Simulated(
        false_alarm=float(unchanged.any(axis=1).mean()) if regressed < RUN_SIZE else nothing,
        detected=float(hits.mean()) if regressed else nothing,
        failed=float(hits.any(axis=1).mean()) if regressed else nothing,
        seeds=float(outcome.seeds[:, regressed:].mean()) if regressed < RUN_SIZE else nothing)


def row(label: str, settings: GateSettings, draw: Callable[[tuple[int, ...]], np.ndarray],
        runs: int, detect: bool = True) -> str:
    unchanged = simulate(settings, draw, runs)
    one = every = Simulated(*[float("nan")] * 4)
    if detect:
        one = simulate(settings, draw, runs, regressed=1)
        every = simulate(settings, draw, runs // 4, regressed=RUN_SIZE)
    return (f"{label:44s} {rate(unchanged.false_alarm):>11s} {unchanged.seeds:10.2f} "
            f"{rate(one.detected):>9s} {rate(every.detected):>9s} {rate(every.failed):>9s}")


def normal(rng: np.random.Generator, sd: float) -> Callable[[tuple[int, ...]], np.ndarray]:
    return lambda shape: rng.normal(0.0, sd, shape)


def resampled(rng: np.random.Generator, pools: list[np.ndarray], center: bool
              ) -> Callable[[tuple[int, ...]], np.ndarray]:
    """Each simulated configuration resamples the real differences of one measured one;
    ``center`` moves them by whole validation examples, so that their mean is as near zero as
    that allows and they stay counts of examples (ties and zeros as real ones)."""
    def draw(shape: tuple[int, ...]) -> np.ndarray:
        which = rng.integers(0, len(pools), shape[:2])
        out = np.empty(shape)
        for index, pool in enumerate(pools):
            values = pool - np.round(pool.mean() * VALIDATION) / VALIDATION if center else pool
            at = which == index
            out[at] = rng.choice(values, (int(at.sum()), shape[2]))
        return out
    return draw


def rate(x: float) -> str:
    return "   -  " if np.isnan(x) else f"{x:6.1%}"


def print_gate(rng: np.random.Generator, found: dict, runs: int, default: GateSettings) -> None:
    batch = [found[n]["batch order"] for n in found]
    planted = [found[n]["labels 10%"] for n in found]
    reordered = [found[n]["reordered sum"].differences for n in found]
    sd_batch = statistics.median(c.spread for c in batch)
    sd_planted = statistics.median(c.spread for c in planted)
    print(f"\nthe gate at its defaults ({default.label()}, α = {default.alpha:g}) over runs of "
          f"{RUN_SIZE} configurations, {runs} runs per row; median spread of the per-seed "
          f"differences: {sd_batch:.4f} under another batch order, {sd_planted:.4f} under the "
          f"10 % label bug")
    print(f"{'differences':44s} {'runs with a':>11s} {'mean seeds':>10s} "
          f"{'a 1-point drop detected':>29s}")
    print(f"{'':44s} {'false alarm':>11s} {'(unchanged)':>10s} {'1 of 60':>9s} {'all 60':>9s} "
          f"{'run fails':>9s}")
    # A regression moves each seed by its own amount: detection is measured where the
    # differences spread (a drop added to exactly zero differences would be no test at all).
    scenarios = [
        ("none: the same code on the same machine", lambda shape: np.zeros(shape), False),
        ("reordered sum, resampled (real)", resampled(rng, reordered, center=False), False),
        (f"batch order, normal sd {sd_batch:.4f}", normal(rng, sd_batch), True),
        ("batch order, resampled per configuration", resampled(
            rng, [c.differences for c in batch], center=True), True),
        (f"label bug's spread, normal sd {sd_planted:.4f}", normal(rng, sd_planted), True),
    ]
    for label, draw, detect in scenarios:
        check_mirror(default, draw((3, 8, max(default.plan))))
        print(row(label, default, draw, runs, detect))
    print("targets: ≤ 1 % of runs with a false alarm, ≥ 95 % detected, ≤ 4 seeds")

    print(f"\nthe choices, under another batch order (normal, sd {sd_batch:.4f}); each row "
          f"changes one setting of the default")
    alternatives = [
        ("default", default),
        ("correction holm", GateSettings(default.margin, correction="holm")),
        ("correction none", GateSettings(default.margin, correction="none")),
        ("tolerance 0.0025", GateSettings(0.0025)),
        ("tolerance 0.0075", GateSettings(0.0075)),
        ("seeds 3:12", GateSettings(default.margin, seeds=SeedsOnDemand(3, 12))),
        ("seeds 3:20", GateSettings(default.margin, seeds=SeedsOnDemand(3, 20))),
        ("fixed 5 seeds", GateSettings(default.margin, seeds=None, fixed=5)),
        ("fixed 8 seeds", GateSettings(default.margin, seeds=None, fixed=8)),
        ("looks at every seed 3..8", GateSettings(default.margin, looks=tuple(range(3, 9)))),
        ("regression spending pocock", GateSettings(default.margin,
                                                    regression_spending="pocock")),
        ("within spending o'brien-fleming", GateSettings(default.margin,
                                                         within_spending="obrien-fleming")),
    ]
    for label, settings in alternatives:
        print(row(label, settings, normal(rng, sd_batch), runs))

    print("\nthe default gate by spread of the per-seed differences (normal; a spread σ over "
          "seeds on each side with seed-level correlation ρ gives differences spread "
          "σ √(2 (1 - ρ)))")
    for sd in (0.0005, 0.001, 0.002, 0.003, 0.004, 0.006, 0.009, 0.012):
        print(row(f"spread {sd:.4f}", default, normal(rng, sd), runs))


def normal_theory_scores(looks: tuple[int, ...], level: float, spending: str) -> np.ndarray:
    """The exact group-sequential boundary for normal scores (Lan-DeMets): each look's score
    set, by recursive numerical integration of the paths not yet crossed, so that the chance
    of crossing first there is the spending function's increment."""
    from scipy import optimize, stats

    n = np.asarray(looks, dtype=float)
    spend = spent(spending, level, n / n[-1])
    scores = [float(stats.norm.isf(spend[0]))]

    def simpson(grid: np.ndarray) -> np.ndarray:
        weights = np.full(len(grid), 2.0)
        weights[1::2], weights[0], weights[-1] = 4.0, 1.0, 1.0
        return weights * (grid[1] - grid[0]) / 3

    def grid(top: float, k: int, step: float) -> np.ndarray:
        low = -10 * math.sqrt(n[k])
        return np.linspace(low, top, max(101, int((top - low) / (0.05 * step)) | 1))

    points = grid(scores[0] * math.sqrt(n[0]), 0, 1.0)
    weight = simpson(points) * stats.norm.pdf(points, scale=math.sqrt(n[0]))
    for k in range(1, len(looks)):
        step = math.sqrt(n[k] - n[k - 1])

        def crossing(score: float, k: int = k, step: float = step,
                     points: np.ndarray = points, weight: np.ndarray = weight) -> float:
            return float(weight @ stats.norm.sf((score * math.sqrt(n[k]) - points) / step))

        increment = spend[k] - spend[k - 1]
        score = optimize.brentq(lambda z, share=increment: crossing(z) - share, -10, 10)
        scores.append(score)
        new = grid(score * math.sqrt(n[k]), k, step)
        kernel = stats.norm.pdf((new[:, None] - points[None, :]) / step) / step
        points, weight = new, simpson(new) * (kernel @ weight)
    return np.asarray(scores)


def print_bonferroni(rng: np.random.Generator, margin: float, alpha: float, rows: int) -> None:
    from scipy import stats

    print(f"\nwhy the looks are combined by Bonferroni: the chance of a regressed verdict when "
          f"the change is exactly the tolerance, for a stated α = {alpha:g} ({rows} "
          f"configurations, O'Brien-Fleming-type spending)")
    for looks in ((3, 5, 8), (3, 4, 5, 6, 7, 8), (3, 5, 8, 12)):
        gains = rng.normal(-margin, 0.006, (rows, looks[-1]))
        test = paired_p(gains, margin, looks)
        union = SequentialDesign(looks, alpha, alpha).outcome(test).decision == 1
        exact = (stats.norm.isf(test.worse) >= normal_theory_scores(
            looks, alpha, "obrien-fleming")).any(axis=-1)
        print(f"  looks at {', '.join(map(str, looks)):18s} Bonferroni over the looks "
              f"{union.mean():5.2%}; exact normal-theory boundaries applied to t "
              f"{exact.mean():5.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds trained per configuration")
    parser.add_argument("--runs", type=int, default=2000, help="simulated runs of 60 per row")
    parser.add_argument("--calibration-rows", type=int, default=20000)
    parser.add_argument("--save-seeds", type=Path, default=None)
    parser.add_argument("--seeds-file", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    margin = parse_tolerance(DEFAULT_FAIL[0]).amount
    default = GateSettings(margin)
    if args.seeds_file is not None:
        measured = json.loads(args.seeds_file.read_text())
    else:
        print(f"training {len(CONFIGS)} configurations × {len(CHANGES) + 1} variants × "
              f"{args.seeds} seeds on digits:")
        measured = measure(args.seeds)
        if args.save_seeds is not None:
            args.save_seeds.write_text(json.dumps(measured))
    found = changes(measured)
    print_correlations(measured, found)
    print_calibration(rng, found, margin, DEFAULT_ALPHA, args.calibration_rows)
    print_gate(rng, found, args.runs, default)
    print_bonferroni(rng, margin, DEFAULT_ALPHA, args.calibration_rows * 10)


if __name__ == "__main__":
    main()
