"""Saved runs are found by their exact name; names that are numbers, that end in another name,
or that hold control characters resolve as the storage module's docstring says."""

from __future__ import annotations

import pytest

from pytest_hparams import ResultsFileError, RunFile
from pytest_hparams.saved_runs import SavedRun, check_save_name, resolve_baseline, save_run
from tests.conftest import lr_trial, seed_runs


def _save(storage, name=None, dirty=False):
    run = RunFile([lr_trial(seed_runs([{"accuracy": 0.9}]))],
                  environment={"commit_info": {"id": "0123456789abcdef", "dirty": dirty}})
    return save_run(storage, run, name, machine="box")


def test_a_name_is_matched_exactly_not_as_the_end_of_another(tmp_path):
    main = _save(tmp_path, "main")
    not_main = _save(tmp_path, "not_main")
    _save(tmp_path, "main-2")
    assert resolve_baseline("main", tmp_path, machine="box") == main
    assert resolve_baseline("not_main", tmp_path, machine="box") == not_main
    with pytest.raises(ResultsFileError, match="no saved run 'ain'"):
        resolve_baseline("ain", tmp_path, machine="box")


def test_the_latest_run_of_a_name_wins_and_a_dirty_mark_is_not_part_of_the_name(tmp_path):
    _save(tmp_path, "main")
    latest = _save(tmp_path, "main", dirty=True)
    assert latest.name.endswith("_dirty_main.json")
    assert SavedRun(2, "box", latest).name == "main"
    assert resolve_baseline("main", tmp_path, machine="box") == latest


def test_a_run_named_with_digits_is_found_by_its_name(tmp_path):
    seven = _save(tmp_path, "7")  # run number 1, named 7
    _save(tmp_path)
    assert resolve_baseline("7", tmp_path, machine="box") == seven
    assert resolve_baseline("2", tmp_path, machine="box").name.startswith("0002_")


def test_digits_that_are_one_runs_name_and_anothers_number_are_ambiguous(tmp_path):
    named = _save(tmp_path, "3")
    _save(tmp_path)
    third = _save(tmp_path)
    with pytest.raises(ResultsFileError) as info:
        resolve_baseline("3", tmp_path, machine="box")
    message = str(info.value)
    assert f"'3' is both the name of {named.name} and the number of {third.name}" in message
    assert "give the path of the one you mean" in message
    assert resolve_baseline(str(third), tmp_path, machine="box") == third
    assert resolve_baseline("0003", tmp_path, machine="box") == third  # no run is named 0003


@pytest.mark.parametrize("name", ["main\n", "main\r", "ma\x1b[31min", "\tmain", "ma\x00in",
                                  "dirty", "dirty_main", "x" * 101])
def test_names_with_control_characters_or_that_cannot_be_told_apart_are_refused(name):
    with pytest.raises(ValueError, match="the run name"):
        check_save_name(name)


@pytest.mark.parametrize("spec", ["main\n", "ma\x1b[31min", "ma\x00in", "7\n"])
def test_a_baseline_spec_with_control_characters_is_refused(tmp_path, spec):
    _save(tmp_path, "main")
    with pytest.raises(ResultsFileError, match="has no control characters"):
        resolve_baseline(spec, tmp_path, machine="box")


def test_a_save_name_with_a_newline_is_a_usage_error_on_the_command_line(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--hparams-save=main\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --hparams-save: the run name 'main\\n' must be "
                                 "letters, digits*"])
