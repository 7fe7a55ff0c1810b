"""A 64-trial TPE search asked in batches of 16 (each trained as one vectorised stack) against
the same search asked one trial at a time, and the sampler's own time per trial.

Both searches use the same sampler and seed, the same space (learning rate, momentum, weight
decay, dropout of an MLP on scikit-learn's digits: settings one stack can hold) and the same
number of epochs per trial, with no pruning and no early stop, so they train the same amount;
they differ in which configurations TPE proposes, since a batch is asked before its results
are known. The modes alternate ``--repeats`` times in one process. It prints each run's wall
and CPU seconds, the median speed-up, and the time optuna took per trial (asking and telling)
against the training time per trial.

    python benchmarks/search_speed.py                         # batch 16 against 1, on the CPU
    python benchmarks/search_speed.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import optuna
import torch

from pytest_hparams import MLP, digits, log_uniform, resolve_device, search, uniform

SPACE = {"lr": log_uniform(1e-4, 1.0), "momentum": uniform(0.0, 0.99),
         "weight_decay": log_uniform(1e-6, 0.1), "dropout": uniform(0.0, 0.7),
         "optimizer": "momentum", "batch_size": 64, "seeds": 1}


def _run(args: argparse.Namespace, batch: int, vectorize: bool,
         trials: int | None = None) -> dict[str, float]:
    data = digits()
    device = resolve_device(args.device)
    wall, cpu = time.perf_counter(), time.process_time()
    space = {**SPACE, "epochs": args.epochs, **({"dropout": 0.0} if args.no_dropout else {})}
    result = search(lambda hp: MLP(data.features, data.classes, args.hidden, dropout=hp.dropout),
                    data.train, data.val, space=space,
                    sampler="tpe", trials=trials or args.trials, batch=batch, seed=args.seed,
                    device=device, vectorize=vectorize)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "sampler": result.sampler_seconds, "training": result.training_seconds,
            "best": result.best.accuracy, "epochs": result.epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="trials per batch (one stack)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own)")
    parser.add_argument("--no-dropout", action="store_true",
                        help="search lr, momentum and weight decay only, without dropout (a "
                             "stack then draws no dropout masks row by row)")
    parser.add_argument("--one-by-one", action="store_true",
                        help="also time batch 1 with vectorize=False (the sequential loop)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device "
          f"{args.device}, torch {torch.__version__} ({torch.get_num_threads()} threads), optuna "
          f"{optuna.__version__}; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"TPE, {args.trials} trials of {args.epochs} epochs (MLP {args.hidden} units, "
          f"batch_size 64), sampler seed {args.seed}")
    modes = {f"batch={args.batch}": (args.batch, True), "batch=1": (1, True)}
    if args.one_by_one:
        modes["batch=1, one by one"] = (1, False)
    _run(args, 2, True, trials=4)  # warm-up: imports, the optimiser machinery, allocator
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode, (batch, vectorize) in modes.items():
            run = _run(args, batch, vectorize)
            runs[mode].append(run)
            print(f"repeat {repeat + 1} {mode:<22} wall {run['wall']:7.2f} s  cpu "
                  f"{run['cpu']:7.2f} s  sampler {1000 * run['sampler'] / args.trials:6.1f} ms "
                  f"per trial  training {1000 * run['training'] / args.trials:7.1f} ms per trial"
                  f"  best {run['best']:.4f}  epochs {run['epochs']:.0f}", flush=True)
    fast = runs[f"batch={args.batch}"]
    for mode in list(modes)[1:]:
        slow = runs[mode]
        wall = statistics.median(s["wall"] for s in slow) / statistics.median(
            f["wall"] for f in fast)
        cpu = statistics.median(s["cpu"] for s in slow) / statistics.median(
            f["cpu"] for f in fast)
        print(f"batch={args.batch} against {mode}: {wall:.2f}x wall, {cpu:.2f}x CPU time")
    for mode in modes:
        sampler = statistics.median(r["sampler"] for r in runs[mode])
        training = statistics.median(r["training"] for r in runs[mode])
        print(f"{mode}: optuna {1000 * sampler / args.trials:.1f} ms per trial, "
              f"{100 * sampler / (sampler + training):.1f} % of the search; training "
              f"{1000 * training / args.trials:.0f} ms per trial")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
