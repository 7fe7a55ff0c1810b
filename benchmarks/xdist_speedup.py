"""Benchmark: a CPU-bound hyperparameter grid on pytest-xdist workers against one process.

Runs the same grid with ``-n 0`` (torch's own thread count), with ``-n N`` (each worker's
torch threads budgeted to cores ÷ workers, the default), with ``-n N --hparams-threads off``
(every worker keeps torch's own thread count, so together they oversubscribe the cores) and,
for reference, with ``-n 0 --hparams-threads 1``, interleaved ``--repeats`` times. It prints
each mode's median wall time and its speed-up over the first mode (``-n 0`` by default). Wall
time is the whole pytest command: start-up, collection, training and reporting.

    python benchmarks/xdist_speedup.py                 # -n 2, small models, 3 repeats
    python benchmarks/xdist_speedup.py --size large    # larger matrix products
    python benchmarks/xdist_speedup.py --workers 4 --repeats 5
    python benchmarks/xdist_speedup.py --modes n0-1,budget   # processes, threads held at 1

Every mode trains the configurations one by one (``--hparams-no-vectorize``): this measures
how processes share the cores. ``--vectorize`` leaves fit's stacked training on; then ``-n 0``
trains the grid as stacks while ``-n N`` (xdist's ``--dist load``) spreads single items, so the
modes no longer train the same way (``benchmarks/vectorized_speed.py`` measures stacking).

Each pytest start costs seconds (torch's import; with xdist, every worker's): on the 2-core
machine the grid at one epoch took 4.5 s with ``-n 0`` and 6.8 s with ``-n 2``. The grid must
train for a minute or so before the start-up stops hiding the speed-up: the default 80 epochs
train for about 65 s one by one; ``--epochs 40`` shows the speed-up of a half-minute grid.

On a machine shared with other work the figures move: read the ratios, not the seconds, and
compare runs made at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = """
import pytest
import torch
from pytest_hparams import fit

torch.manual_seed(0)
X = torch.randn(4096, 64)
Y = (X[:, :8].sum(dim=1) > 0).long()
DATA, VAL = (X[:3072], Y[:3072]), (X[3072:], Y[3072:])


def model(width):
    return lambda: torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
        torch.nn.ReLU(), torch.nn.Linear(width, 2))


@pytest.mark.hparams(lr=[0.01, 0.03, 0.1, 0.3], width={widths}, seeds=2,
                     epochs={epochs}, batch_size={batch}, optimizer="adam")
def test_grid(hparams):
    fit(model(hparams.width), DATA, VAL, hparams)
"""

TRIALS = 8
#: small: many small operations, where the time goes to the framework's per-operation work (the
#: usual case for the small models of hyperparameter tests); large: fewer, larger matrix
#: products, where torch's own threads already use the cores.
SIZES = {"small": {"widths": "[32, 64]", "batch": "32"},
         "large": {"widths": "[256, 512]", "batch": "128"}}
_BURN = "import time\nt = time.perf_counter()\nfor i in range(10_000_000): pass\n" \
        "print(time.perf_counter() - t)"


def free_cores(workers: int) -> float:
    """How many cores' worth of work ``workers`` busy processes get here now: ``workers`` on an
    idle machine, fewer when other work shares the cores."""
    def burn(count: int) -> float:
        processes = [subprocess.Popen([sys.executable, "-c", _BURN], stdout=subprocess.PIPE,
                                      text=True) for _ in range(count)]
        return statistics.mean(float(p.communicate()[0]) for p in processes)

    alone = burn(1)
    together = burn(workers)
    return workers * alone / together


def _run(folder: Path, args: list[str], vectorize: bool) -> float:
    results = folder / "run.json"
    args = args if vectorize else [*args, "--hparams-no-vectorize"]
    results.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--hparams-no-table", "--hparams-json", str(results), *args, str(folder)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args) or '-n 0'} failed:\n{done.stdout}\n{done.stderr}")
    trials = json.loads(results.read_text())["trials"]
    if len(trials) != TRIALS:
        raise SystemExit(f"{' '.join(args)}: {len(trials)} trials in the results, not {TRIALS}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default: 80 small, 8 large)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--modes", default="n0,budget,off,n0-1",
                        help="which of n0, budget, off, n0-1 to run (the speed-ups are over the "
                             "first)")
    parser.add_argument("--vectorize", action="store_true",
                        help="keep fit's stacked training on (default: one by one)")
    options = parser.parse_args()
    if options.epochs is None:
        options.epochs = 80 if options.size == "small" else 8

    import torch

    from pytest_hparams.devices import cpu_cores, thread_budget

    n = str(options.workers)
    known = {
        "n0": ("-n 0", ["-n", "0"]),
        "budget": (f"-n {n}, thread budget", ["-n", n]),
        "off": (f"-n {n}, torch's threads", ["-n", n, "--hparams-threads", "off"]),
        "n0-1": ("-n 0, 1 thread", ["-n", "0", "--hparams-threads", "1"]),
    }
    chosen = [key.strip() for key in options.modes.split(",")]
    unknown = [key for key in chosen if key not in known]
    if unknown:
        parser.error(f"unknown modes {unknown}: choose from {', '.join(known)}")
    modes = dict(known[key] for key in chosen)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    load_before = os.getloadavg()
    capacity_before = free_cores(options.workers)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        grid = GRID.replace("{epochs}", str(options.epochs))
        for key, value in SIZES[options.size].items():
            grid = grid.replace(f"{{{key}}}", value)
        (folder / "test_xdist_grid.py").write_text(grid)
        for repeat in range(options.repeats):
            order = list(modes)
            order = order[repeat % len(order):] + order[:repeat % len(order)]  # spread drift
            for mode in order:
                times[mode].append(_run(folder, modes[mode], options.vectorize))
                print(f"  repeat {repeat + 1}: {mode:<24} {times[mode][-1]:6.1f} s", flush=True)
    load_after = os.getloadavg()
    capacity_after = free_cores(options.workers)

    baseline = statistics.median(next(iter(times.values())))
    print()
    size = SIZES[options.size]
    print(f"{TRIALS} configurations × 2 seeds × {options.epochs} epochs ({options.size}: MLP "
          f"widths {size['widths']}, batches of {size['batch']}, 3072 samples), "
          f"{cpu_cores()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads "
          f"by default; budget {thread_budget(options.workers)} per worker)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(above {cpu_cores()} means other work shared the cores); {options.workers} busy "
          f"processes got {capacity_before:.1f} cores' worth before, {capacity_after:.1f} after "
          f"(a speed-up cannot exceed that)")
    print(f"{'mode':<26}{'median s':>10}{'speed-up':>10}   all runs (s)   "
          f"(speed-up: over {next(iter(times))})")
    for mode, seconds in times.items():
        median = statistics.median(seconds)
        runs = ", ".join(f"{s:.1f}" for s in seconds)
        print(f"{mode:<26}{median:>10.1f}{baseline / median:>9.2f}x   {runs}")


if __name__ == "__main__":
    main()
