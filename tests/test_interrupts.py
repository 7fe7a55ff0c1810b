"""Stopping a run in every way keeps every finished trial: Ctrl-C, a second Ctrl-C during the
final write, SIGTERM, kill -9, and a process-group Ctrl-C under xdist.

The runs below make the results file itself go stale on purpose (its mid-run rewrites are
throttled to never, as a results file of tens of megabytes would be): what keeps the trials is
the journal beside it, and the final write, which a second Ctrl-C cannot cut.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_hparams import read_run
from pytest_hparams.__main__ import main as command
from pytest_hparams.report import results_frame
from pytest_hparams.runfile import journal_path
from tests.conftest import written_trials

GRID = """
import pathlib
import time
import pytest
import torch
from pytest_hparams import fit

X = torch.randn(32, 4)
Y = (X[:, 0] > 0).long()


@pytest.mark.hparams(n=list(range(8)), epochs=1)
def test_grid(hparams):
    if hparams.n >= 6:  # the last two train "for long": the signal comes while they run
        pathlib.Path(f"running-{hparams.n}").touch()
        time.sleep(120)
    fit(lambda: torch.nn.Linear(4, 2), (X, Y), None, hparams)
"""

# The results file is rewritten after the first trial and then not until the end, and, once
# the file "slow-final" exists, the final write takes three seconds: room for a second Ctrl-C.
CONFTEST = """
import pathlib
import time

import pytest_hparams.outputs as outputs

outputs.SNAPSHOT_SHARE = 1e-9
_write = outputs.atomic_write_text


def write(path, text):
    if pathlib.Path("slow-final").exists() and pathlib.Path("interrupted").exists():
        pathlib.Path("final-write").touch()
        time.sleep(3)
    _write(path, text)


outputs.atomic_write_text = write
"""

FINISHED = [0, 1, 2, 3, 4, 5]


def _default_sigint() -> None:
    """A terminal's program reacts to Ctrl-C; one started in the background by a
    non-interactive shell (as CI may run this suite) inherits SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finished(path: Path) -> list[int]:
    return sorted(t.hparams["n"] for t in read_run(path).trials)


def _wait(condition: Callable[[], bool], within: float = 120) -> bool:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


class _Run:
    """pytest in a process group of its own, as a terminal runs it."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.path = folder / "run.json"
        self.output: str | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hparams-json",
             str(self.path), *args],
            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=_default_sigint,
        )

    def wait_for_the_six(self) -> None:
        """Until the seventh configuration trains and six trials are readable from disk."""
        assert _wait(lambda: (self.folder / "running-6").exists()
                     or self.process.poll() is not None), "the run never reached n=6"
        assert (self.folder / "running-6").exists(), self.stop()
        assert _wait(lambda: self.path.exists() and _finished(self.path) == FINISHED)

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def finish(self) -> str:
        """Its output, once it has ended by itself."""
        if self.output is None:
            self.output, _ = self.process.communicate(timeout=120)
        return self.output

    def stop(self) -> str:
        """Kill it if it still runs (a failed test); its output."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.finish()


@pytest.fixture
def grid(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(test_grid=GRID)
    pytester.makeconftest(CONFTEST)
    return pytester.path


def _check_complete(run: _Run, output: str) -> None:
    assert run.process.returncode == pytest.ExitCode.INTERRUPTED, output
    # The file alone, as any JSON reader sees it, holds every finished trial; no journal left.
    assert sorted(t["hparams"]["n"] for t in written_trials(run.path)) == FINISHED
    assert not journal_path(run.path).exists()
    assert "Traceback" not in output, output
    table = output[output.index("hyperparameter comparison"):]
    assert "6 configurations × 1 seed" in table
    assert f"hparams: wrote {run.path}" in output


def test_while_the_run_goes_the_journal_holds_what_the_stale_file_does_not(grid):
    run = _Run(grid)
    try:
        run.wait_for_the_six()
        # The file was rewritten after the first trial only; readers see all six.
        assert [t["hparams"]["n"] for t in written_trials(run.path)] == [0]
        assert len(results_frame(run.path)) == 6
        run.signal(signal.SIGINT)
        output = run.finish()
    finally:
        run.stop()
    _check_complete(run, output)


def test_sigterm_stops_the_run_as_ctrl_c_does(grid):
    run = _Run(grid)
    try:
        run.wait_for_the_six()
        run.signal(signal.SIGTERM)
        output = run.finish()
    finally:
        run.stop()
    _check_complete(run, output)
    assert "SIGTERM" in output


def test_a_second_ctrl_c_during_the_final_write_does_not_cut_it(grid):
    (grid / "slow-final").touch()
    run = _Run(grid)
    try:
        run.wait_for_the_six()
        (grid / "interrupted").touch()
        run.signal(signal.SIGINT)
        assert _wait(lambda: (grid / "final-write").exists(), 60)
        run.signal(signal.SIGINT)  # while the three-second final write runs
        output = run.finish()
    finally:
        run.stop()
    _check_complete(run, output)
    assert "hparams: Ctrl-C: the run is ending: finishing its results files and report " \
           "first" in output


def test_kill_9_leaves_every_finished_trial_readable_through_the_journal(grid, capsys):
    run = _Run(grid)
    try:
        run.wait_for_the_six()
        run.signal(signal.SIGKILL)
    finally:
        run.stop()
    assert [t["hparams"]["n"] for t in written_trials(run.path)] == [0]  # the stale file
    assert journal_path(run.path).exists()
    assert _finished(run.path) == FINISHED
    assert sorted(results_frame(run.path)["n"]) == FINISHED
    assert command(["compare", str(run.path), str(run.path)]) == 0
    assert "6 unchanged" in capsys.readouterr().out


def test_a_process_group_ctrl_c_under_xdist_keeps_what_the_workers_finished(grid):
    run = _Run(grid, "-n", "2")
    try:
        run.wait_for_the_six()  # the workers shared n=0..5; they now sleep in n=6 and n=7
        run.signal(signal.SIGINT)
        output = run.finish()
    finally:
        run.stop()
    _check_complete(run, output)


# --------------------------------------------------------------------------- the handlers

SHIELD = textwrap.dedent("""
    import os
    import signal

    from pytest_hparams import interrupts

    def custom(signum, frame):
        raise SystemExit("custom")

    interrupts.install()
    assert interrupts.active()

    # Unshielded, SIGTERM is a stop request like Ctrl-C.
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt as exc:
        assert "SIGTERM" in str(exc)
    else:
        raise AssertionError("SIGTERM did not stop")

    # Shielded, a Ctrl-C waits for the block to end, then stops.
    done = []
    try:
        with interrupts.shielded("wait"):
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the block ran to its end")
    except KeyboardInterrupt:
        done.append("then stopped")
    assert done == ["the block ran to its end", "then stopped"], done

    # A final block is never cut, and nothing is raised after it: the run ends anyway.
    with interrupts.shielded("final", final=True):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    # Once the run is ending, every request only says so, until the handlers go.
    interrupts.ending("ending")
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    with interrupts.shielded("inner"):
        os.kill(os.getpid(), signal.SIGINT)
    interrupts.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    # A run inside a run (pytester) that ends leaves the outer one stoppable.
    interrupts.install()
    interrupts.install()
    interrupts.ending("inner run ending")
    interrupts.uninstall()
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the outer run could no longer be stopped")
    interrupts.uninstall()

    # A handler someone else set is left alone.
    signal.signal(signal.SIGTERM, custom)
    interrupts.install()
    assert signal.getsignal(signal.SIGTERM) is custom
    interrupts.uninstall()
    print("ok")
""")


def test_stop_requests_wait_for_a_shielded_block_and_others_handlers_are_kept(tmp_path):
    script = tmp_path / "shield.py"
    script.write_text(SHIELD)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, preexec_fn=_default_sigint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert result.stderr.count("hparams: Ctrl-C: final") == 1  # said once, not twice
    assert result.stderr.count("hparams: Ctrl-C: ending") == 1
    assert "inner" not in result.stderr
