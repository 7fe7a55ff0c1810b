"""Time the benchmark suite: run ``pytest benchmarks`` several times, print each run's wall time,
the median and the machine it ran on.

    python benchmarks/timing.py                                   # 3 runs, timings only
    python benchmarks/timing.py --results benchmarks/RESULTS.md   # and regenerate RESULTS.md

With ``--results``, the last run's comparison tables (written by the plugin's
``--hparams-markdown``) go to that file under a header with the machine and the timings.
Extra arguments after ``--`` are passed to pytest, e.g. ``-- --hparams-device cuda``.

``--against`` times a second variant side by side, the two interleaved run by run, and prints
both medians and their ratio; the suite before and after vectorised training, for example:

    python benchmarks/timing.py --against=--hparams-no-vectorize

Wall times on a shared machine say as much about the other processes as about the suite, so
the script also times a reference epoch before and after the runs (the CPU milliseconds of one
epoch of the benchmarks' 64-unit MLP): compare that figure between machines and moments.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    """One run of the suite: its wall and CPU seconds and pytest's summary line."""

    wall: float
    cpu: float
    summary: str
    markdown: str


def machine() -> str:
    """Cores, CPU model, memory, torch build and device, Python: one line."""
    import torch
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    info = pytest_benchmark_generate_machine_info()
    cpu = info.get("cpu", {})
    model = cpu.get("brand_raw") or info.get("processor") or info.get("machine", "unknown CPU")
    speed = cpu.get("hz_advertised_friendly", "")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    return (f"{os.cpu_count()} cores ({model}{', ' + speed if speed else ''}), "
            f"{memory:.0f} GiB{gpu}; torch {torch.__version__}, Python "
            f"{info.get('python_version', sys.version.split()[0])}, {info.get('system', '')}")


def reference_epoch_ms() -> float:
    """CPU milliseconds per epoch of the 64-unit MLP on the digits (batch 32, Adam, 1 thread)."""
    import torch

    from pytest_hparams import MLP, digits, fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = digits()
    fit(MLP, data.train, data.val, epochs=1)  # the first fit pays for lazy imports
    start = time.process_time()
    fit(MLP, data.train, data.val, seeds=[0, 1, 2], epochs=10, optimizer="adam", lr=0.01,
        batch_size=32)
    elapsed = time.process_time() - start
    torch.set_num_threads(threads)
    return elapsed / 30 * 1000


def commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{head} (with uncommitted changes)" if git("status", "--porcelain") else head


def run_suite(pytest_args: list[str]) -> Run:
    """Run ``pytest benchmarks`` once in a fresh process; exit with its output if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "tables.md"
        command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
                   "--hparams-progress=off", f"--hparams-markdown={tables}", *pytest_args]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            sys.stdout.write(done.stdout + done.stderr)
            sys.exit(f"pytest benchmarks failed (exit status {done.returncode})")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        summary = lines[-1].strip("= ") if lines else ""
        return Run(wall, cpu, summary, tables.read_text(encoding="utf-8"))


def results_header(runs: list[Run], description: str, load: str, reference: str) -> str:
    walls = ", ".join(f"{run.wall:.1f}" for run in runs)
    median = statistics.median(run.wall for run in runs)
    return (
        "# Benchmark results\n\n"
        "The comparison tables of one real run of `pytest benchmarks` (the last of the runs "
        "timed below), regenerated with `python benchmarks/timing.py --results "
        "benchmarks/RESULTS.md`. Every figure is measured in that run; each module's docstring "
        "says what it claims.\n\n"
        f"- Machine: {description}\n"
        f"- Commit: {commit()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- Wall time of `pytest benchmarks`, {len(runs)} run{'s' * (len(runs) > 1)}: {walls} s; "
        f"**median {median:.1f} s** (CPU {', '.join(f'{run.cpu:.1f}' for run in runs)} s; "
        f"load average before the first run {load}; reference epoch {reference})\n"
        f"- Outcome: {runs[-1].summary}\n\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="how many runs (default 3)")
    parser.add_argument("--results", type=Path, metavar="PATH",
                        help="write the last run's tables as Markdown to PATH")
    parser.add_argument("--against", metavar="ARGS", default=None,
                        help="also time the suite with these pytest arguments, interleaved, "
                             "and print the ratio (e.g. --against=--hparams-no-vectorize)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    description = machine()
    load = "/".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {description}")
    print(f"load average (1/5/15 min): {load}")
    before = reference_epoch_ms()
    print(f"reference epoch: {before:.1f} ms CPU")
    runs: list[Run] = []
    other: list[Run] = []
    other_args = [*args.pytest_args, *shlex.split(args.against)] if args.against else None
    for index in range(1, args.runs + 1):
        variants = [(runs, args.pytest_args, "")]
        if other_args is not None:
            variants.append((other, other_args, f" ({args.against})"))
            if index % 2 == 0:  # alternate which goes first, so drift does not favour one
                variants.reverse()
        for into, pytest_args, label in variants:
            run = run_suite(pytest_args)
            into.append(run)
            print(f"run {index}{label}: {run.wall:6.1f} s wall, {run.cpu:6.1f} s CPU   "
                  f"{run.summary}", flush=True)
    median = statistics.median(r.wall for r in runs)
    print(f"median wall time of {len(runs)} runs: {median:.1f} s")
    if other:
        median_other = statistics.median(r.wall for r in other)
        print(f"median wall time of {len(other)} runs with {args.against}: {median_other:.1f} s"
              f" ({median_other / median:.2f}x the default's)")
    after = reference_epoch_ms()
    print(f"reference epoch: {after:.1f} ms CPU")
    if args.results:
        reference = f"{before:.1f} ms CPU before the runs, {after:.1f} ms after"
        args.results.write_text(
            results_header(runs, description, load, reference) + runs[-1].markdown,
            encoding="utf-8")
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
