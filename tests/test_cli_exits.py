"""``pytest-hparams compare`` exits 1 for a regression and for nothing else: bad input is 2
(with the file or option named), a bug is 3, and a compare never writes to the runs it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pytest_hparams.__main__ as cli
from pytest_hparams.__main__ import main
from tests.conftest import lr_trial, seed_runs, write_run_file


def _run(path: Path, shift: float = 0.0) -> str:
    finals = [{"accuracy": v + shift} for v in (0.90, 0.91, 0.905, 0.895, 0.9)]
    return str(write_run_file(path, [lr_trial(seed_runs(finals))]))


@pytest.fixture
def runs(tmp_path) -> tuple[str, str]:
    return _run(tmp_path / "a.json"), _run(tmp_path / "b.json", shift=-0.03)


def test_a_regression_is_the_only_exit_one(runs, capsys):
    assert main(["compare", *runs]) == 1
    assert main(["compare", runs[0], runs[0]]) == 0


@pytest.mark.parametrize("content, message", [
    ("{", "is not valid JSON"),
    ("[" * 100_000, "nested too deeply"),
    ('{"schema": "pytest-hparams/run", "version": 1, "trials": [{"nodeid": "t", "runs": '
     '[{"seed": 0, "final": "high"}]}]}', "trial 0 (t): run 0: \"final\" must be an object"),
    ('{"schema": "pytest-hparams/run", "version": 1, "trials": [{"nodeid": "t", '
     '"tolerance": "accuracy:-1"}]}', "trial 0 (t): \"tolerance\" must be an object"),
    ('{"schema": "pytest-hparams/run", "version": 1, "trials": [], "environment": '
     '{"machine_info": "x"}}', "\"environment\": \"machine_info\" must be an object"),
])
def test_bad_files_exit_two_naming_the_file_and_field(tmp_path, runs, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for pair in ([str(bad), runs[1]], [runs[0], str(bad)]):
        assert main(["compare", *pair]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: " in err and message in err


def test_markdown_onto_a_run_it_reads_exits_two_and_leaves_the_run(runs, capsys):
    before = Path(runs[0]).read_bytes()
    assert main(["compare", *runs, "--markdown", runs[0]]) == 2
    assert "a compare never writes to the runs it reads" in capsys.readouterr().err
    assert Path(runs[0]).read_bytes() == before


def test_markdown_that_cannot_be_written_exits_two(runs, tmp_path, capsys):
    (tmp_path / "folder.md").mkdir()
    assert main(["compare", *runs, "--markdown", str(tmp_path / "folder.md")]) == 2
    assert "--markdown: could not write" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--fail", "accuracy:-1e999"], ["--alpha", "nan"],
                                  ["--fail", "accuracy:+0.01"]])
def test_bad_options_exit_two(runs, capsys, args):
    with pytest.raises(SystemExit) as info:
        main(["compare", *runs, *args])
    assert info.value.code == 2


def test_a_bug_exits_three_not_one(runs, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "compare_runs", broken)
    assert main(["compare", *runs]) == 3
    err = capsys.readouterr().err
    assert "RuntimeError: a bug" in err and "internal error" in err


def test_a_spec_with_control_characters_exits_two(runs, capsys):
    assert main(["compare", "main\n", runs[1]]) == 2
    assert "control characters" in capsys.readouterr().err


def test_a_journal_left_by_another_run_is_ignored(tmp_path, capsys):
    path = Path(_run(tmp_path / "a.json"))
    document = json.loads(path.read_text())
    document["run_id"] = "this-run"
    path.write_text(json.dumps(document))
    (tmp_path / "a.json.journal").write_text(
        '{"schema": "pytest-hparams/journal", "version": 1, "run_id": "another-run"}\n'
        '{"trial": {"nodeid": "t.py::other", "runs": []}}\n')
    assert main(["compare", str(path), str(path)]) == 0
    assert "1 unchanged" in capsys.readouterr().out
