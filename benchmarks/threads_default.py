"""When torch's default thread count hurts: ``pytest examples`` with one torch thread against
torch's default, on a quiet machine and with other processes keeping cores busy.

    python benchmarks/threads_default.py                 # quiet, then 1 busy core, then 2
    python benchmarks/threads_default.py --hogs 0,1 --repeats 5

Each cell runs the quick start (``pytest examples``) as a whole process with
``--hparams-threads=1`` and ``--hparams-threads=off`` (torch's own default: one thread per
physical core), interleaved, and prints the median wall seconds and their ratio. The busy cores
are plain Python loops in other processes, as other developers' jobs or CI neighbours would be.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _spin() -> None:
    while True:
        pass


def _run(threads: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "examples", "-q", "-p", "no:cacheprovider",
                    "--hparams-no-table", f"--hparams-threads={threads}"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", default="0,1,2", help="busy processes per cell, e.g. 0,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'busy cores':>10}  {'1 thread':>9}  {'default':>9}  default ÷ 1 thread")
    for hogs in [int(h) for h in args.hogs.split(",")]:
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(hogs)]
        for spinner in spinners:
            spinner.start()
        try:
            times: dict[str, list[float]] = {"1": [], "off": []}
            for _ in range(args.repeats):
                for threads in times:
                    times[threads].append(_run(threads))
        finally:
            for spinner in spinners:
                spinner.terminate()
        one, default = statistics.median(times["1"]), statistics.median(times["off"])
        print(f"{hogs:>10}  {one:>8.1f}s  {default:>8.1f}s  {default / one:.2f}x", flush=True)


if __name__ == "__main__":
    main()
