"""Vectorised against one-by-one training of the same K configurations, side by side.

Trains K MLPs on scikit-learn's digits (K learning rates, one seed each, a fixed number of
epochs, no early stop, so both paths do the same work) with ``fit(vectorize=False)`` and with
the vectorised default, alternating the two ``--repeats`` times in one process, and prints each
repeat's wall and CPU seconds, the median speed-ups, and the largest difference between the two
paths' final metrics (they should agree to float rounding).

    python benchmarks/vectorized_speed.py                        # K=16 on the CPU
    python benchmarks/vectorized_speed.py --device cuda --k 64   # on a GPU

On a shared machine, the CPU-time ratio is the steadier figure; the wall-time ratio is the one
a user sees on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from pytest_hparams import MLP, digits, resolve_device, sweep


def _configurations(k: int) -> dict[str, object]:
    rates = [float(f"{lr:.3g}") for lr in np.geomspace(1e-3, 3e-2, k)]
    return {"lr": rates, "seeds": 1}


def _train(args: argparse.Namespace, vectorize: bool) -> tuple[float, float, list[dict]]:
    data = digits()
    device = resolve_device(args.device)
    hidden, layers = args.hidden, args.layers

    def model(hparams: object) -> MLP:
        return MLP(data.features, data.classes, hidden, layers=layers)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    results = sweep(model, data.train, data.val, space=_configurations(args.k), device=device,
                    epochs=args.epochs, batch_size=args.batch_size, vectorize=vectorize)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, [run.final for trial in results for run in trial.runs]


def _largest_difference(a: list[dict], b: list[dict]) -> tuple[float, float]:
    """The largest difference in accuracy, and in loss, between the two paths' runs."""
    accuracy = max(abs(x["accuracy"] - y["accuracy"]) for x, y in zip(a, b, strict=True))
    loss = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=True))
    return accuracy, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16, help="configurations (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps (default cpu)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"K={args.k} MLPs (hidden {args.hidden}, layers {args.layers}) on digits, "
          f"{args.epochs} epochs, batch {args.batch_size}, device {device} ({name or 'cpu'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    warm = argparse.Namespace(**{**vars(args), "k": 2, "epochs": 1})
    _train(warm, False)
    _train(warm, True)
    wall_ratios, cpu_ratios = [], []
    for repeat in range(1, args.repeats + 1):
        seq_wall, seq_cpu, seq_final = _train(args, vectorize=False)
        vec_wall, vec_cpu, vec_final = _train(args, vectorize=True)
        wall_ratios.append(seq_wall / vec_wall)
        cpu_ratios.append(seq_cpu / vec_cpu)
        accuracy, loss = _largest_difference(seq_final, vec_final)
        print(f"repeat {repeat}: one by one {seq_wall:6.2f} s wall {seq_cpu:6.2f} s CPU | "
              f"vectorised {vec_wall:6.2f} s wall {vec_cpu:6.2f} s CPU | "
              f"speed-up {wall_ratios[-1]:5.2f}x wall {cpu_ratios[-1]:5.2f}x CPU | "
              f"largest difference: accuracy {accuracy:.2g}, loss {loss:.2g}")
    print(f"median speed-up over {args.repeats} repeats: {statistics.median(wall_ratios):.2f}x "
          f"wall, {statistics.median(cpu_ratios):.2f}x CPU time "
          f"(load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
