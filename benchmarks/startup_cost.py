"""What the plugin costs a suite that has no hyperparameter tests: whole pytest processes on a
one-file suite of plain unit tests, with the plugin and with ``-p no:hparams``, interleaved.

    python benchmarks/startup_cost.py               # 7 pairs of each command, medians, ratios

It times ``pytest`` (a run), ``pytest --co`` and ``pytest --help`` in a temporary folder, and
prints each median and the ratio with the plugin to without. Loading the plugin imports none of
torch, numpy, pandas, scipy, matplotlib or hypothesis (``tests/test_architecture.py`` checks
it), so the ratio should stay near 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = "\n".join(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n" for i in range(50))


def _time(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / "test_plain.py").write_text(SUITE)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
              f"{args.pairs} interleaved pairs, python {sys.version.split()[0]}")
        print(f"{'command':<16} {'with plugin':>12} {'-p no:hparams':>14} {'ratio':>7}")
        for name, extra in (("pytest", ["-q"]), ("pytest --co", ["--co", "-q"]),
                            ("pytest --help", ["--help"])):
            base = ["-p", "no:cacheprovider", *extra]
            with_plugin, without = [], []
            _time(base, cwd)  # warm the file-system caches
            for _ in range(args.pairs):
                with_plugin.append(_time(base, cwd))
                without.append(_time([*base, "-p", "no:hparams"], cwd))
            ratios = [a / b for a, b in zip(with_plugin, without, strict=True)]
            print(f"{name:<16} {statistics.median(with_plugin):>11.2f}s "
                  f"{statistics.median(without):>13.2f}s {statistics.median(ratios):>6.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
