"""Results files on hostile paths and failing disks: refused at start-up with the option named,
or said once mid-run while the run, its table and its save go on; a failed write or save never
exits 0 and never ends in INTERNALERROR; links, devices and baselines are never replaced."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pytest_hparams import RunFile, read_run
from pytest_hparams.runfile import atomic_write_text, journal_path
from pytest_hparams.saved_runs import save_run, saved_runs
from tests.conftest import lr_trial, seed_runs, write_run_file, written_trials

GRID = """
import pytest
from pytest_hparams import fit
import torch

X = torch.randn(32, 4)
Y = (X[:, 0] > 0).long()


@pytest.mark.hparams(n=list(range({count})), epochs=3)
def test_grid(hparams):
    assert hparams.n >= 0  # an axis that only numbers the rows
    fit(lambda: torch.nn.Linear(4, 2), (X, Y), None, hparams, vectorize=False)
"""

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
LINUX = sys.platform.startswith("linux")


@pytest.fixture
def grid(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_grid=GRID.format(count=3))
    return pytester


def _usage_error(result: pytest.RunResult, *lines: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(list(lines))
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


# --------------------------------------------------------------------------- start-up


def test_a_folder_given_as_the_results_file_is_a_usage_error(grid):
    (grid.path / "results").mkdir()
    _usage_error(grid.runpytest("--hparams-json", "results"),
                 "*--hparams-json: results is a folder; name a file inside it*")
    assert not list((grid.path / "results").iterdir())


def test_a_path_under_a_file_is_a_usage_error(grid):
    (grid.path / "notes.txt").write_text("not a folder")
    _usage_error(grid.runpytest("--hparams-csv", "notes.txt/out.csv"),
                 "*--hparams-csv: cannot create notes.txt/out.csv: *notes.txt is a file, not a "
                 "folder*")


@pytest.mark.skipif(not LINUX, reason="/sys refuses new files to everyone, root included")
def test_an_unwritable_folder_is_a_usage_error_even_for_root(grid):
    _usage_error(grid.runpytest("--hparams-markdown", "/sys/out.md"),
                 "*--hparams-markdown: cannot write /sys/out.md: /sys is not writable*")
    _usage_error(grid.runpytest("--hparams-save", "--hparams-storage", "/sys/runs"),
                 "*--hparams-storage: cannot write /sys/runs: cannot create folders in /sys*")


@pytest.mark.skipif(ROOT or not hasattr(os, "geteuid"), reason="root writes a 0555 folder")
def test_a_read_only_folder_is_a_usage_error(grid):
    folder = grid.path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        _usage_error(grid.runpytest("--hparams-json", "locked/run.json"),
                     "*--hparams-json: cannot write locked/run.json: *locked is not writable*")
    finally:
        folder.chmod(0o755)


def test_a_name_too_long_for_the_file_system_is_a_usage_error(grid):
    name = "r" * 300 + ".json"
    _usage_error(grid.runpytest("--hparams-json", name),
                 "*--hparams-json: the name 'rrrr*… is too long for the file system*")


def test_a_save_name_too_long_for_a_file_name_is_a_usage_error(grid):
    result = grid.runpytest(f"--hparams-save={'n' * 150}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the run name 'nnnn*' is 150 characters long; at most 100*"])


@pytest.mark.parametrize("first, second", [
    ("--hparams-json", "--hparams-csv"), ("--hparams-csv", "--hparams-markdown"),
])
def test_two_outputs_on_one_file_are_refused(grid, first, second):
    _usage_error(grid.runpytest(first, "out.txt", second, "./out.txt"),
                 f"*{first} and {second} both name out.txt: one file would overwrite the "
                 f"other*")


def test_the_results_and_the_baseline_on_one_file_are_refused_and_the_baseline_kept(grid):
    baseline = write_run_file(grid.path / "base.json",
                              [lr_trial(seed_runs([{"accuracy": 0.9}]))])
    before = baseline.read_bytes()
    for option in ("--hparams-json", "--hparams-markdown", "--hparams-csv"):
        _usage_error(grid.runpytest(option, "base.json", "--hparams-compare=base.json"),
                     f"*{option} names the baseline base.json (--hparams-compare=base.json): a "
                     f"compare never writes to its baseline*")
    assert baseline.read_bytes() == before


def test_a_saved_baseline_found_by_name_is_protected_too(grid):
    saved = save_run(grid.path / ".hparams", RunFile([lr_trial(seed_runs([{"accuracy": 0.9}]))]),
                     "main")
    before = saved.read_bytes()
    _usage_error(grid.runpytest("--hparams-json", str(saved), "--hparams-compare=main"),
                 "*--hparams-json names the baseline * (--hparams-compare=main)*")
    assert saved.read_bytes() == before


def test_an_empty_storage_folder_says_what_to_do_without_a_blank(grid):
    result = grid.runpytest("--hparams-compare")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    assert "no saved run to compare against" in text
    assert "put  first" not in text and "or put" not in text


# --------------------------------------------------------------------------- links, devices


def test_a_symlink_is_written_through_and_stays_a_link(grid):
    (grid.path / "real").mkdir()
    link = grid.path / "run.json"
    link.symlink_to(grid.path / "real" / "target.json")
    result = grid.runpytest("--hparams-json", "run.json")
    result.assert_outcomes(passed=3)
    assert link.is_symlink()
    assert len(written_trials(grid.path / "real" / "target.json")) == 3
    assert len(read_run(link).trials) == 3
    assert not journal_path(link).exists() and not (grid.path / "run.json.journal").exists()


def test_a_character_device_is_written_into_never_replaced(grid):
    device = grid.path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    except (PermissionError, AttributeError, OSError):
        pytest.skip("creating a device node needs root")
    result = grid.runpytest("--hparams-json", "null", "--hparams-csv", "null.csv")
    result.assert_outcomes(passed=3)
    assert stat.S_ISCHR(device.stat().st_mode)
    assert not (grid.path / "null.journal").exists()
    assert not list(grid.path.glob(".null.*"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_receives_the_results(grid):
    pipe = grid.path / "pipe"
    os.mkfifo(pipe)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()), daemon=True)
    reader.start()
    result = grid.runpytest_subprocess("--hparams-json", "pipe")
    reader.join(timeout=60)
    result.assert_outcomes(passed=3)
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert received and '"schema": "pytest-hparams/run"' in received[0]


def test_new_files_follow_the_umask_and_rewritten_ones_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "new.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o604)
    atomic_write_text(kept, "[]")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    assert kept.read_text() == "[]"


def test_results_files_of_a_run_get_the_umask_permissions(grid):
    result = grid.runpytest_subprocess("--hparams-json", "run.json", "--hparams-csv", "run.csv")
    result.assert_outcomes(passed=3)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("run.json", "run.csv"):
        assert stat.S_IMODE((grid.path / name).stat().st_mode) == 0o666 & ~mask


# --------------------------------------------------------------------------- failing disks

def _limited(limit: int) -> None:
    """The child's files may not grow past ``limit`` bytes: a write beyond fails with EFBIG, as
    a full disk fails with ENOSPC (and SIGXFSZ, which would kill it, is ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _run_limited(folder: Path, limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=folder, capture_output=True, text=True, timeout=600, env=env,
                          preexec_fn=lambda: _limited(limit))


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="file size limits")
def test_a_disk_that_fills_mid_run_is_said_once_and_the_run_and_table_go_on(pytester):
    pytester.makepyfile(test_grid=GRID.format(count=12))
    result = _run_limited(pytester.path, 12_000, "--hparams-json", "run.json")
    output = result.stdout + result.stderr
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "12 passed" in output
    assert "12 configurations × 1 seed" in output  # the table has every trial
    assert output.count("hparams: could not write run.json.journal: File too large; the run "
                        "goes on, the table will show every trial") == 1
    assert output.count("hparams: could not rewrite run.json: File too large") <= 1
    assert "hparams: could not write run.json: File too large; the finished trials are in " \
           "run.json.journal, which read_run reads" in output
    # What reached the disk reads back: the journal holds whole lines only.
    kept = read_run(pytester.path / "run.json").trials
    assert 0 < len(kept) < 12


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full: a disk that is full")
def test_a_full_disk_at_the_end_exits_non_zero_with_the_table_and_no_internal_error(grid):
    result = grid.runpytest_subprocess("--hparams-json", "/dev/full")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in output
    result.stdout.fnmatch_lines(["*3 passed*"])
    assert "3 configurations × 1 seed" in output
    assert "hparams: could not write /dev/full: No space left on device" in output


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full: a disk that is full")
def test_a_csv_that_cannot_be_written_still_lets_the_run_be_saved(grid):
    result = grid.runpytest_subprocess("--hparams-save=main", "--hparams-storage", "runs",
                                       "--hparams-csv", "/dev/full")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*hparams: could not write /dev/full: No space left on device*",
                                 "*hparams: saved run runs*_main.json"])
    (run,) = saved_runs(grid.path / "runs")
    assert len(read_run(run.path).trials) == 3


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="file size limits")
def test_a_save_onto_a_full_disk_exits_non_zero(pytester):
    pytester.makepyfile(test_grid=GRID.format(count=3))
    result = _run_limited(pytester.path, 2_000, "--hparams-save=main", "--hparams-storage",
                          "runs")
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "INTERNALERROR" not in output
    assert "hparams: could not save the run: runs: File too large" in output
    assert saved_runs(pytester.path / "runs") == []
