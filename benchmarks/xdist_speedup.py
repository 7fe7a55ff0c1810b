"""Benchmark: hyperparameter grids on pytest-xdist workers against one process.

Runs one grid as whole pytest commands in several modes, interleaved ``--repeats`` times (the
order rotates each repeat, to spread drift), and prints each mode's median wall time, its
speed-up over the first mode, and the largest difference in any trial's final metrics from
the first mode's (0 when every mode trains the same numbers). Wall time is the whole command:
start-up, collection, training and reporting.

Grids (``--grid``):

- ``lr-batch``: 8 learning rates × 2 batch sizes (32, 64) of a 64-unit MLP on scikit-learn's
  digits, 2 seeds, 80 epochs, vectorised: two stacks of 8 configurations. Under xdist each
  worker gets one stack whole (an xdist chunk).
- ``lr16``: 16 learning rates of the same MLP, batch size 32, 2 seeds, 80 epochs: one stack,
  which xdist halves into two chunks of 8 configurations.
- ``widths`` (the default): 4 learning rates × 2 widths of an Adam MLP on random data, trained
  one by one (``--vectorize`` to stack): how processes share the cores.

Modes (``--modes``, the speed-ups are over the first): ``n0`` (``-n 0``, torch's own thread
count), ``load``, ``loadscope``, ``loadfile``, ``loadgroup``, ``worksteal`` (``-n N --dist``
that mode, each worker's torch threads budgeted to cores ÷ workers), ``budget`` (``-n N``, the
default ``--dist load``), ``off`` (``-n N --hparams-threads off``: every worker keeps torch's
threads and they oversubscribe the cores), ``n0-1`` (``-n 0 --hparams-threads 1``) and
``nochunk`` (``-n N --hparams-xdist-min-chunk off``: xdist deals single items, as before
chunks). ``--startup`` also times workers' start-up: the same commands on a file with one
hparams test of one epoch, ``-n N`` against ``-n 0``.

    python benchmarks/xdist_speedup.py --grid lr-batch --modes n0,load --repeats 5
    python benchmarks/xdist_speedup.py --grid lr16 --modes n0,load --repeats 5
    python benchmarks/xdist_speedup.py --grid lr-batch --repeats 3 --startup \\
        --modes n0,load,loadscope,loadfile,loadgroup,worksteal,nochunk
    python benchmarks/xdist_speedup.py --chunk-sizes   # why the smallest chunk is 8 runs
    python benchmarks/xdist_speedup.py --grid lr16 --epochs 5 --repeats 1   # a quick try

``--chunk-sizes`` trains, in this process with one torch thread (as each of two workers on 2
cores has), stacks of 1, 2, 4, 8 and 16 configurations × 2 seeds of the digits MLP and prints
the seconds per stack and per run: below some size a stack costs as much as a larger one, so
splitting it further across workers gains nothing. It then trains the 16 as one stack with
torch's own thread count, as ``-n 0`` does: that over one chunk of 8 is the most two workers
can gain on training.

On a machine shared with other work the figures move: the script prints the load average and
how many cores' worth of work two busy processes got before and after; read the ratios, not the
seconds, and compare runs made at the same time.
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

WIDTHS = """
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

DIGITS = """
import pytest
from pytest_hparams import MLP, digits, fit

DATA = digits()


@pytest.mark.hparams(lr={lrs}, batch_size={batches}, seeds={seeds}, epochs={epochs},
                     optimizer="sgd")
def test_grid(hparams):
    fit(lambda: MLP(DATA.features, DATA.classes, 64), DATA.train, DATA.val, hparams)
"""

STARTUP = """
import pytest
import torch
from pytest_hparams import fit


@pytest.mark.hparams(lr=[0.1], epochs=1)
def test_start(hparams):
    x = torch.randn(8, 4)
    fit(lambda: torch.nn.Linear(4, 2), (x, (x[:, 0] > 0).long()), None, hparams)
"""

#: small: many small operations, where the time goes to the framework's per-operation work (the
#: usual case for the small models of hyperparameter tests); large: fewer, larger matrix
#: products, where torch's own threads already use the cores.
SIZES = {"small": {"widths": "[32, 64]", "batch": "32"},
         "large": {"widths": "[256, 512]", "batch": "128"}}
RATES8 = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5]
RATES16 = [round(0.005 * 1.35 ** i, 5) for i in range(16)]
_BURN = "import time\nt = time.perf_counter()\nfor i in range(10_000_000): pass\n" \
        "print(time.perf_counter() - t)"


def grid_file(options: argparse.Namespace) -> tuple[str, int, str]:
    """The test file of ``--grid``, its number of trials, and a line describing it."""
    if options.grid == "widths":
        epochs = options.epochs or (80 if options.size == "small" else 8)
        text = WIDTHS.replace("{epochs}", str(epochs))
        for key, value in SIZES[options.size].items():
            text = text.replace(f"{{{key}}}", value)
        size = SIZES[options.size]
        return text, 8, (f"8 configurations × 2 seeds × {epochs} epochs ({options.size}: MLP "
                         f"widths {size['widths']}, batches of {size['batch']}, 3072 samples)")
    epochs = options.epochs or 80
    rates, batches = (RATES8, [32, 64]) if options.grid == "lr-batch" else (RATES16, [32])
    text = (DIGITS.replace("{lrs}", repr(rates)).replace("{batches}", repr(batches))
            .replace("{seeds}", str(options.seeds)).replace("{epochs}", str(epochs)))
    trials = len(rates) * len(batches)
    return text, trials, (f"{len(rates)} learning rates × batch sizes {batches} × {options.seeds} "
                          f"seeds × {epochs} epochs (SGD, 64-unit MLP on digits, vectorised)")


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


def _run(folder: Path, test_file: str, args: list[str], trials: int) -> tuple[float, list[dict]]:
    results = folder / "run.json"
    results.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--hparams-no-table", "--hparams-json", str(results), *args, test_file]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args) or '-n 0'} failed:\n{done.stdout}\n{done.stderr}")
    found = json.loads(results.read_text())["trials"]
    if len(found) != trials:
        raise SystemExit(f"{' '.join(args)}: {len(found)} trials in the results, not {trials}")
    return seconds, found


def _largest_difference(trials: list[dict], reference: list[dict]) -> float:
    """The largest difference between two runs' final metrics, trial by trial, seed by seed."""
    finals = {(t["nodeid"], r["seed"]): r["final"] for t in reference for r in t["runs"]}
    largest = 0.0
    for trial in trials:
        for run in trial["runs"]:
            other = finals[(trial["nodeid"], run["seed"])]
            for name, value in run["final"].items():
                if isinstance(value, (int, float)) and isinstance(other.get(name), (int, float)):
                    largest = max(largest, abs(value - other[name]))
    return largest


def chunk_sizes(epochs: int, repeats: int) -> None:
    """Seconds per stack of K configurations × 2 seeds, one torch thread, K = 1..16."""
    import torch

    from pytest_hparams import MLP, digits, sweep

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = digits()

    def run(k: int) -> float:
        start = time.perf_counter()
        sweep(lambda hparams: MLP(data.features, data.classes, 64), data.train, data.val,
              space={"lr": RATES16[:k], "seeds": 2}, epochs=epochs, batch_size=32,
              optimizer="sgd")
        return time.perf_counter() - start

    run(1)  # warm up
    sizes = (1, 2, 4, 8, 16)
    times: dict[int, list[float]] = {k: [] for k in sizes}
    load = os.getloadavg()[0]
    for _ in range(repeats):
        for k in sizes:
            times[k].append(run(k))
    largest = statistics.median(times[16]) / 16
    print(f"stacks of K configurations × 2 seeds, 64-unit MLP on digits, {epochs} epochs, batch "
          f"32, 1 torch thread, torch {torch.__version__}, {os.cpu_count()} cores, load average "
          f"{load:.2f} before, {os.getloadavg()[0]:.2f} after; medians of {repeats}")
    print(f"{'K':>3} {'runs':>5} {'s per stack':>12} {'s per run':>10} {'per run vs K=16':>16}")
    for k in sizes:
        median = statistics.median(times[k])
        print(f"{k:>3} {2 * k:>5} {median:>12.3f} {median / k / 2:>10.4f} "
              f"{median / k / largest:>15.2f}x")
    # What -n 0 does with the same 16: one stack, torch's own threads. Two workers' chunks of
    # 8 side by side cannot beat it by more than this ratio, whatever the scheduling.
    torch.set_num_threads(default_threads)
    together = statistics.median(run(16) for _ in range(repeats))
    print(f"K=16 with torch's {default_threads} threads (as -n 0 trains it): {together:.3f} s; "
          f"against one chunk of 8 with 1 thread ({statistics.median(times[8]):.3f} s), "
          f"{together / statistics.median(times[8]):.2f}x: the most two workers can gain on "
          f"training, before their start-up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=("widths", "lr-batch", "lr16"), default="widths")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default: 80; widths large: 8)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds (lr-batch, lr16; default 2)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="widths grid")
    parser.add_argument("--modes", default=None,
                        help="comma-separated: n0, load, loadscope, loadfile, loadgroup, "
                             "worksteal, budget, off, n0-1, nochunk (default: n0,load for "
                             "lr-batch and lr16; n0,budget,off,n0-1 for widths)")
    parser.add_argument("--vectorize", action="store_true",
                        help="widths grid: keep fit's stacked training on (default: one by one)")
    parser.add_argument("--startup", action="store_true",
                        help="also time the workers' start-up: -n N against -n 0 on one tiny test")
    parser.add_argument("--chunk-sizes", action="store_true",
                        help="time stacks of 1-16 configurations in this process instead")
    options = parser.parse_args()
    if options.chunk_sizes:
        chunk_sizes(options.epochs or 10, options.repeats)
        return

    import torch

    from pytest_hparams.devices import cpu_cores, thread_budget

    n = str(options.workers)
    known = {"n0": ("-n 0", ["-n", "0"]),
             "budget": (f"-n {n}, thread budget", ["-n", n]),
             "off": (f"-n {n}, torch's threads", ["-n", n, "--hparams-threads", "off"]),
             "n0-1": ("-n 0, 1 thread", ["-n", "0", "--hparams-threads", "1"]),
             "nochunk": (f"-n {n}, no chunks", ["-n", n, "--hparams-xdist-min-chunk", "off"])}
    for dist in ("load", "loadscope", "loadfile", "loadgroup", "worksteal"):
        known[dist] = (f"-n {n} --dist {dist}", ["-n", n, "--dist", dist])
    default = "n0,budget,off,n0-1" if options.grid == "widths" else "n0,load"
    chosen = [key.strip() for key in (options.modes or default).split(",")]
    unknown = [key for key in chosen if key not in known]
    if unknown:
        parser.error(f"unknown modes {unknown}: choose from {', '.join(known)}")
    modes = dict(known[key] for key in chosen)
    one_by_one = options.grid == "widths" and not options.vectorize
    extra = ["--hparams-no-vectorize"] if one_by_one else []
    text, trials, described = grid_file(options)

    times: dict[str, list[float]] = {mode: [] for mode in modes}
    differences: dict[str, float] = {mode: 0.0 for mode in modes}
    startup: dict[str, list[float]] = {"-n 0": [], f"-n {n}": []}
    load_before = os.getloadavg()
    capacity_before = free_cores(options.workers)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_xdist_grid.py").write_text(text)
        (folder / "test_xdist_start.py").write_text(STARTUP)
        reference: list[dict] | None = None
        for repeat in range(options.repeats):
            order = list(modes)
            order = order[repeat % len(order):] + order[:repeat % len(order)]  # spread drift
            for mode in order:
                seconds, found = _run(folder, "test_xdist_grid.py", [*modes[mode], *extra],
                                      trials)
                times[mode].append(seconds)
                if mode == next(iter(modes)) and reference is None:
                    reference = found
                if reference is not None:
                    differences[mode] = max(differences[mode],
                                            _largest_difference(found, reference))
                print(f"  repeat {repeat + 1}: {mode:<28} {seconds:6.1f} s", flush=True)
            if options.startup:
                for label, args in (("-n 0", ["-n", "0"]), (f"-n {n}", ["-n", n])):
                    startup[label].append(_run(folder, "test_xdist_start.py", args, 1)[0])
                print(f"  repeat {repeat + 1}: start-up -n 0 {startup['-n 0'][-1]:.1f} s, "
                      f"-n {n} {startup[f'-n {n}'][-1]:.1f} s", flush=True)
    load_after = os.getloadavg()
    capacity_after = free_cores(options.workers)

    first = next(iter(times))
    baseline = statistics.median(times[first])
    print()
    print(f"{described}; {cpu_cores()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads by default; budget "
          f"{thread_budget(options.workers)} per worker)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (above "
          f"{cpu_cores()} means other work shared the cores); {options.workers} busy processes "
          f"got {capacity_before:.1f} cores' worth before, {capacity_after:.1f} after (a "
          f"speed-up cannot exceed that)")
    print(f"{'mode':<30}{'median s':>10}{'speed-up':>10}{'max diff':>10}   all runs (s)   "
          f"(speed-up and differences: against {first})")
    for mode, seconds in times.items():
        median = statistics.median(seconds)
        runs = ", ".join(f"{s:.1f}" for s in seconds)
        print(f"{mode:<30}{median:>10.1f}{baseline / median:>9.2f}x{differences[mode]:>10.2g}"
              f"   {runs}")
    if options.startup:
        alone, spread = (statistics.median(v) for v in startup.values())
        print(f"start-up (one tiny hparams test): -n 0 {alone:.1f} s, -n {n} {spread:.1f} s: the "
              f"workers' start-up costs {spread - alone:.1f} s; a mode slower than {first} by "
              f"more than that loses time to scheduling")


if __name__ == "__main__":
    main()
