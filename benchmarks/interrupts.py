"""Benchmark: finished trials kept when a run with a results file of tens of MB is stopped at a
random moment, and what keeping that file current costs.

A grid of ``--configs`` configurations × ``--seeds`` seeds, each seed a user loop
(``hparams_trial``) logging ``--epochs`` epochs of five metrics, runs with ``--hparams-json``
(at the defaults, 400 × 2 × 150: a 23 MB results file, as in issue 15). Each try starts pytest
in a process group of its own, as a terminal does, and at a random moment sends:

- ``sigint``: Ctrl-C (SIGINT to the group);
- ``double``: Ctrl-C, then another 0 to 1.5 s later (usually while the final write runs);
- ``sigterm``: SIGTERM to the group (``timeout``, a CI runner cancelling a job);
- ``kill9``: SIGKILL to the group: nothing runs after it, the journal is all there is;
- ``xdist``: Ctrl-C to the group of ``pytest -n 2`` (controller and workers).

For each try it counts the trials pytest reported as finished (its ``N passed`` line; for
``kill9``, the test bodies that had ended, from a log they append to, less the one each
process may have had between its body's end and its report) and the trials read back with
``read_run`` (which reads the journal beside a file cut short), and the trials the file alone
holds, as any JSON reader sees it. ``stopped`` says when the signal landed: during the tests
(pytest reports the interrupt), or once they were over (``ending``: pytest was writing its
report or exiting; the report and the files are finished first, and a signal that lands after
pytest's own handlers are gone ends the process with the shell's 130, -2 here, nothing lost).

Cost: each run's own accounting of the time spent writing the results (journal appends, the
throttled rewrites of the whole file, the final write), against the run's wall time; and the
wall time of the same grid without ``--hparams-json``. The machine is shared: the script prints
``uptime`` before and after, and the figures are best read as ratios.

    python benchmarks/interrupts.py                      # 400 configurations, 3 tries a mode
    python benchmarks/interrupts.py --configs 100 --tries 2 --modes sigint,kill9
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_hparams.runfile import journal_path, read_run  # noqa: E402

GRID = """
import os
import time
import pytest


@pytest.mark.hparams(n=list(range({configs})), seeds={seeds})
def test_grid(hparams, hparams_trial):
    for run in hparams_trial.runs():
        loss = 2.0
        for epoch in range({epochs}):
            loss *= 0.99
            run.log_epoch(loss=loss, train_loss=loss * 1.01, accuracy=1 - loss / 3,
                          val_accuracy=1 - loss / 2.9, lr=0.1 * 0.99 ** epoch)
    time.sleep({sleep})  # the rest of a short training step
    with open("done.log", "a") as log:
        log.write(f"{{hparams.n}}\\n")
"""

# Accounting of the results writes, kept by the run itself: time in the journal appends (on
# the test's thread), in the rewrites of the whole file (a timer thread) and in the final write.
CONFTEST = """
import json
import math
import os
import time

import pytest_hparams.outputs as outputs

SPENT = {"add": 0.0, "snapshot": 0.0, "finish": 0.0, "snapshots": 0, "adds": []}


def timed(name, function, count=None):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            took = time.perf_counter() - start
            SPENT[name] += took
            if count:
                SPENT[count] += 1
            if name == "add":
                SPENT["adds"].append(took)
    return wrapper


outputs.ResultsFile.add = timed("add", outputs.ResultsFile.add)
outputs.ResultsFile._snapshot = timed("snapshot", outputs.ResultsFile._snapshot, "snapshots")
outputs.ResultsFile.finish = timed("finish", outputs.ResultsFile.finish)
START = time.perf_counter()


def pytest_unconfigure(config):
    if os.environ.get("HPARAMS_ACCOUNT"):
        with open(os.environ["HPARAMS_ACCOUNT"], "w") as handle:
            json.dump({**SPENT, "wall": time.perf_counter() - START}, handle)
"""

MODES = ("sigint", "double", "sigterm", "kill9", "xdist")


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime: not available"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pytest(folder: Path, *args: str, account: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    if account is not None:
        env["HPARAMS_ACCOUNT"] = str(account)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hparams-no-table",
         *args],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=_default_sigint, env=env)


def _passed(output: str) -> int:
    match = re.search(r"(\d+) passed", output)
    return int(match.group(1)) if match else 0


def _count(path: Path) -> tuple[int, int]:
    """Trials read back (file and journal), and in the file alone."""
    if not path.exists():
        return 0, 0
    try:
        raw = len(json.loads(path.read_text())["trials"])
    except (ValueError, KeyError):
        raw = -1  # a torn file: never expected
    return len(read_run(path).trials), raw


def measure_cost(folder: Path, xdist: bool) -> dict[str, float]:
    """One full run with the results file, one without (and one under ``-n 2``, to time the
    interrupts of xdist runs); the run's own accounting."""
    account = folder / "account.json"
    start = time.perf_counter()
    with_file = _pytest(folder, "--hparams-json", "run.json", account=account)
    output, _ = with_file.communicate()
    wall_with = time.perf_counter() - start
    spent = json.loads(account.read_text())
    size = (folder / "run.json").stat().st_size
    trials = _count(folder / "run.json")[0]
    start = time.perf_counter()
    without = _pytest(folder)
    without.communicate()
    wall_without = time.perf_counter() - start
    wall_xdist = math.nan
    if xdist:
        start = time.perf_counter()
        _pytest(folder, "--hparams-json", "run.json", "-n", "2").communicate()
        wall_xdist = time.perf_counter() - start
    return {"passed": _passed(output), "trials": trials, "megabytes": size / 1e6,
            "wall_with": wall_with, "wall_without": wall_without, "wall_xdist": wall_xdist,
            **spent}


def interrupt(folder: Path, mode: str, at: float, rng: random.Random) -> dict[str, object]:
    for name in ("run.json", "done.log"):
        (folder / name).unlink(missing_ok=True)
    journal_path(folder / "run.json").unlink(missing_ok=True)
    args = ["--hparams-json", "run.json", *(["-n", "2"] if mode == "xdist" else [])]
    process = _pytest(folder, *args)
    time.sleep(at)
    second = None
    if process.poll() is None:
        group = process.pid
        if mode in ("sigint", "double", "xdist"):
            os.killpg(group, signal.SIGINT)
        elif mode == "sigterm":
            os.killpg(group, signal.SIGTERM)
        else:
            os.killpg(group, signal.SIGKILL)
        if mode == "double":
            second = rng.uniform(0.0, 1.5)
            time.sleep(second)
            if process.poll() is None:
                os.killpg(group, signal.SIGINT)
    output, _ = process.communicate()
    done = len((folder / "done.log").read_text().split()) if (folder / "done.log").exists() \
        else 0
    kept, raw = _count(folder / "run.json")
    finished = _passed(output) if mode != "kill9" else done
    stopped = "tests" if re.search(r"KeyboardInterrupt|SIGTERM received", output) else \
        ("killed" if mode == "kill9" else "ending")
    return {"mode": mode, "at": round(at, 2), "second": second, "exit": process.returncode,
            "stopped": stopped,
            "finished": finished, "bodies_done": done, "kept": kept, "file_alone": raw,
            "journal_left": journal_path(folder / "run.json").exists(),
            "traceback": "Traceback" in output}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds per item")
    parser.add_argument("--tries", type=int, default=3, help="tries per mode")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=0, help="of the random moments")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print(f"before: {_uptime()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_grid.py").write_text(GRID.format(
            configs=args.configs, seeds=args.seeds, epochs=args.epochs, sleep=args.sleep))
        (folder / "conftest.py").write_text(CONFTEST)
        modes = args.modes.split(",")
        cost = measure_cost(folder, "xdist" in modes)
        print(f"\nfull run: {cost['passed']} passed, {cost['trials']} trials in a "
              f"{cost['megabytes']:.1f} MB file; wall {cost['wall_with']:.1f} s "
              f"(without --hparams-json {cost['wall_without']:.1f} s; with -n 2 "
              f"{cost['wall_xdist']:.1f} s)")
        run_wall = cost["wall"]
        adds = cost["adds"]
        print(f"  keeping the file current: {cost['add']:.2f} s in {len(adds)} journal appends "
              f"({cost['add'] / run_wall:.1%} of the run's {run_wall:.1f} s, on the tests' "
              f"thread; the first {adds[0] * 1000:.0f} ms, with the machine's description; then "
              f"median {statistics.median(adds[1:]) * 1000:.1f} ms, max "
              f"{max(adds[1:]) * 1000:.1f} ms), {int(cost['snapshots'])} rewrites of the whole "
              f"file {cost['snapshot']:.2f} s ({cost['snapshot'] / run_wall:.1%}, on a timer "
              f"thread), final write {cost['finish']:.2f} s ({cost['finish'] / run_wall:.1%})")
        results = []
        print(f"\n{'mode':8} {'at s':>5} {'2nd':>5} {'stopped':>7} {'exit':>4} {'finished':>8} "
              f"{'kept':>5} {'file':>5} {'lost':>4} journal traceback")
        for mode in modes:
            for _ in range(args.tries):
                wall = cost["wall_xdist"] if mode == "xdist" else cost["wall_with"]
                at = rng.uniform(0.3, 0.95) * wall  # the first seconds start pytest and torch
                result = interrupt(folder, mode, at, rng)
                results.append(result)
                lost = int(result["finished"]) - int(result["kept"])
                second = f"{result['second']:.2f}" if result["second"] is not None else "-"
                print(f"{mode:8} {result['at']:5.1f} {second:>5} {result['stopped']:>7} "
                      f"{result['exit']:4} "
                      f"{result['finished']:8} {result['kept']:5} {result['file_alone']:5} "
                      f"{lost:4} {'left' if result['journal_left'] else '-':7} "
                      f"{'yes' if result['traceback'] else 'no'}")
        for mode in modes:
            rows = [r for r in results if r["mode"] == mode]
            lost = [int(r["finished"]) - int(r["kept"]) for r in rows]
            kept = [int(r["kept"]) for r in rows]
            print(f"{mode}: kept {sum(kept)} of {sum(int(r['finished']) for r in rows)} "
                  f"finished over {len(rows)} tries (lost per try: {lost}; median kept "
                  f"{statistics.median(kept)})")
    print(f"\nafter: {_uptime()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cost": cost, "tries": results}, indent=1))


if __name__ == "__main__":
    main()
