"""The storage folder: numbered run files per machine, finding baselines, concurrent saves."""

import json
import subprocess
import sys
import textwrap

import pytest

from pytest_hparams import ResultsFileError, RunFile, read_run
from pytest_hparams.saved_runs import (
    check_save_name,
    resolve_baseline,
    save_run,
    saved_runs,
)
from tests.conftest import lr_trial, seed_runs


def run_file(accuracy=0.9, commit="0123456789abcdef0123", dirty=False):
    trial = lr_trial(seed_runs([{"accuracy": accuracy}]))
    return RunFile([trial], environment={"commit_info": {"id": commit, "dirty": dirty}})


def test_saved_runs_are_numbered_per_machine_with_commit_and_time(tmp_path):
    first = save_run(tmp_path, run_file(), machine="box")
    second = save_run(tmp_path, run_file(dirty=True), "main", machine="box")
    other = save_run(tmp_path, run_file(), machine="other-box")
    assert first.parent == tmp_path / "box"
    name = first.name.split("_")
    assert name[0] == "0001" and name[1] == "0123456789ab" and len(name[2]) == 8
    assert second.name.startswith("0002_0123456789ab_") and second.name.endswith("_dirty_main.json")
    assert other.name.startswith("0001_")
    assert read_run(second).trials[0].runs[0].final == {"accuracy": 0.9}
    assert [r.counter for r in saved_runs(tmp_path, "box")] == [1, 2]


def test_a_baseline_is_found_by_latest_number_name_or_path(tmp_path):
    first = save_run(tmp_path, run_file(), "main", machine="box")
    second = save_run(tmp_path, run_file(), machine="box")
    assert resolve_baseline(None, tmp_path, machine="box") == second
    assert resolve_baseline("", tmp_path, machine="box") == second
    assert resolve_baseline("1", tmp_path, machine="box") == first
    assert resolve_baseline("0001", tmp_path, machine="box") == first
    assert resolve_baseline("main", tmp_path, machine="box") == first
    assert resolve_baseline(first.stem[:10], tmp_path, machine="box") == first
    assert resolve_baseline(str(first), "elsewhere", machine="box") == first
    committed = tmp_path / "baselines" / "main.json"
    committed.parent.mkdir()
    committed.write_text(run_file().to_json())
    assert resolve_baseline(str(committed), tmp_path, machine="box") == committed


@pytest.mark.parametrize("spec, message", [
    (None, "box: no saved run to compare against (saved runs of other machines: other; name "
           "one with its path); save one with --hparams-save"),
    ("7", "box: no saved run '7' (latest saved: none); give a number, a name"),
    ("nightly", "no saved run 'nightly'"),
    ("baselines/main.json", "baselines/main.json: no such baseline file"),
    ("missing.json", "missing.json: no such baseline file"),
])
def test_a_missing_baseline_says_what_was_looked_for(tmp_path, spec, message):
    save_run(tmp_path, run_file(), machine="other")
    with pytest.raises(ResultsFileError) as info:
        resolve_baseline(spec, tmp_path, machine="box")
    assert message in str(info.value)


def test_a_folder_is_not_a_baseline(tmp_path):
    with pytest.raises(ResultsFileError, match="is a folder; name a run file inside it"):
        resolve_baseline(str(tmp_path) + "/", tmp_path)


@pytest.mark.parametrize("name", ["main", "pr-12", "v1.2_rc"])
def test_save_names_that_fit_a_file_name(name):
    assert check_save_name(name) == name


@pytest.mark.parametrize("name", ["a/b", "", "-x", "x y", "main.json"])
def test_save_names_that_do_not(name):
    with pytest.raises(ValueError, match="must be letters, digits"):
        check_save_name(name)


SAVER = textwrap.dedent("""
    import sys
    import time
    from pathlib import Path

    from pytest_hparams import RunFile, SeedRun, TrialResult
    from pytest_hparams.saved_runs import save_run

    storage, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Start saving together: each process waits until both have imported everything.
    ready = Path(storage).parent / f"ready-{who}"
    ready.touch()
    while len(list(ready.parent.glob("ready-*"))) < 2:
        time.sleep(0.01)
    for i in range(count):
        trial = TrialResult(nodeid=f"t.py::test[{who}-{i}]", test="t.py::test",
                            runs=[SeedRun(seed=0, final={"accuracy": 0.5})])
        save_run(storage, RunFile([trial], extra={"who": who, "i": i}), who, machine="box")
""")


def test_two_processes_saving_at_once_never_share_a_number_or_lose_a_run(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    count = 40
    savers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "store"), who,
                                str(count)]) for who in ("first", "second")]
    assert [p.wait(timeout=120) for p in savers] == [0, 0]
    runs = saved_runs(tmp_path / "store", "box")
    assert sorted(r.counter for r in runs) == list(range(1, 2 * count + 1))
    saved = {(data["who"], data["i"]) for data in
             (json.loads(r.path.read_text()) for r in runs)}
    assert saved == {(who, i) for who in ("first", "second") for i in range(count)}
    assert not list((tmp_path / "store" / "box").glob("*.tmp"))
