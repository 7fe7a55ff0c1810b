"""Tables and run files from trial records, without running pytest."""

import dataclasses
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_hparams import (
    ResultsFileError,
    RunFile,
    SeedRun,
    TrialResult,
    markdown_tables,
    read_run,
    render_tables,
    results_frame,
    write_run,
)
from pytest_hparams.runfile import atomic_write_text
from tests.conftest import lr_trial


def trial(lr, accuracies, *, test="t.py::test_lr", status="ok", reason="", outcome="passed",
          target=None, long_name=False):
    runs = [SeedRun(seed=i, final={"accuracy": a, "loss": 1 - a}, status=status, reason=reason,
                    epochs=5, epochs_to_target=3 if a > 0.5 else None,
                    seconds_to_target=0.2 if a > 0.5 else None, wall_seconds=0.3)
            for i, a in enumerate(accuracies)]
    hparams = {"lr": lr, "epochs": 5}
    if long_name:
        hparams["optimizer_with_a_long_name"] = "x" * 30
    return lr_trial(runs, lr=lr, test=test, hparams=hparams, seeds=list(range(len(runs))),
                    target=target or {}, outcome=outcome, device="cpu")


def test_table_marks_the_best_ok_row_and_explains_failures_below():
    trials = [trial(0.1, [0.9, 0.92]), trial(1.0, [0.95, 0.97], status="diverged",
                                             reason="loss became nan at epoch 2",
                                             outcome="failed"),
              trial(0.01, [0.8, 0.82], target={"accuracy": 0.5})]
    text = render_tables(trials)
    lines = text.splitlines()
    assert lines[:2] == ["t.py::test_lr",
                         "3 configurations × 2 seeds, target accuracy >= 0.5, on cpu"]
    best = [line for line in lines if line.startswith("* ") and "best" not in line]
    assert len(best) == 1 and "0.1" in best[0] and "0.910 ± 0.014" in best[0]
    assert "failed, diverged [1]" in text
    assert "[1] seed 0: diverged: loss became nan at epoch 2; seed 1: diverged:" in text
    assert "3.0 (2/2)" in text
    assert lines[-1] == "* best accuracy (mean over seeds)"


def test_loss_ranks_rows_when_there_is_no_accuracy():
    trials = [trial(lr, [0.5]) for lr in (0.1, 0.2)]
    for t, loss in zip(trials, (0.3, 0.2), strict=True):
        t.runs[0].final = {"loss": loss}
    text = render_tables(trials)
    assert text.splitlines()[-1] == "* best loss (mean over seeds)"
    assert next(line for line in text.splitlines() if line.startswith("* ")).split()[1] == "0.2"


@given(st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=4))
def test_tables_fit_a_100_column_terminal_whatever_the_failure_messages(reasons):
    trials = [trial(0.1 * (i + 1), [0.5, 0.6], status="error", reason=r, outcome="failed")
              for i, r in enumerate(reasons)]
    assert all(len(line) <= 100 for line in render_tables(trials, width=100).splitlines())


@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.text(max_size=60)),
                min_size=1, max_size=6, unique_by=lambda kv: kv[0]))
def test_tables_fit_whatever_the_hyperparameter_names_and_values(pairs):
    trials = []
    for i in range(2):
        t = trial(0.1 * (i + 1), [0.5, 0.6], test="tests/test_a_rather_long_module_name.py::"
                  "test_with_a_long_descriptive_name")
        t.hparams.update({k: f"{v}{i}" for k, v in pairs})
        t.axes = ["lr", *(k for k, _ in pairs)]
        trials.append(t)
    assert all(len(line) <= 100 for line in render_tables(trials, width=100).splitlines())


def test_one_table_per_test_function_and_markdown():
    trials = [trial(0.1, [0.9]), trial(0.2, [0.8]), trial(0.1, [0.7], test="t.py::test_other")]
    text = render_tables(trials)
    assert text.count(" configuration") == 2
    markdown = markdown_tables(trials)
    assert markdown.count("### ") == 2
    assert "| lr " in markdown and "|---" in markdown


def test_results_frame_has_hyperparameters_and_metrics_as_columns():
    frame = results_frame([trial(0.1, [0.9, 0.8]), trial(0.2, [0.7, 0.6])])
    assert list(frame["lr"]) == [0.1, 0.2]
    assert frame["accuracy"].tolist() == pytest.approx([0.85, 0.65])
    assert frame["accuracy_std"].tolist() == pytest.approx([0.0707107, 0.0707107], rel=1e-5)
    assert frame["seeds"].tolist() == [2, 2]


# --------------------------------------------------------------------------- run files


def test_run_files_round_trip_with_nan_as_null(tmp_path):
    t = trial(0.1, [0.9, math.nan])
    path = tmp_path / "run.json"
    write_run(path, RunFile([t], environment={"torch": "2.13"}))
    raw = json.loads(path.read_text())
    assert raw["trials"][0]["runs"][1]["final"]["accuracy"] is None
    back = read_run(path)
    assert back.environment == {"torch": "2.13"}
    assert math.isnan(back.trials[0].runs[1].final["accuracy"])
    assert back.trials[0].runs[0].final == t.runs[0].final
    assert back.trials[0].config_id == "lr=0.1"


def test_a_trial_as_data_is_a_copy_and_never_copies_a_hyperparameter_object():
    """``to_dict`` hands out containers of its own, and a value that cannot be copied (a lock,
    a generator, a module holding one) becomes its id text instead of failing the run."""
    import threading

    trial = lr_trial([SeedRun(0, final={"accuracy": 0.9}, history=[{"accuracy": 0.9}])],
                     hparams={"lr": 0.1, "lock": threading.Lock()})
    data = trial.to_dict()
    assert data["hparams"]["lr"] == 0.1 and isinstance(data["hparams"]["lock"], str)
    data["runs"][0]["history"][0]["accuracy"] = 0.0
    data["axes"].append("width")
    assert trial.runs[0].history[0]["accuracy"] == 0.9 and trial.axes == ["lr"]
    assert [f for f in data] == [f.name for f in dataclasses.fields(TrialResult)] + [
        "status", "metrics"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such results file"),
        ("", "is empty"),
        ('{"schema": "pytest-hparams/run", "version": 1, "tri', "not valid JSON*truncated"),
        ('{"benchmarks": []}', "not a pytest-hparams results file"),
        ('[1, 2]', "not a pytest-hparams results file"),
        ('{"schema": "pytest-hparams/run", "version": 99, "trials": []}',
         "newer pytest-hparams (schema version 99*upgrade"),
        ('{"schema": "pytest-hparams/run", "version": "1", "trials": []}', "not an integer"),
        ('{"schema": "pytest-hparams/run", "version": 1, "trials": {}}', "must be a list"),
        ('{"schema": "pytest-hparams/run", "version": 1, "trials": [5]}', "trial 0 is not"),
    ],
)
def test_bad_run_files_name_the_file_and_the_problem(tmp_path, content, message):
    import fnmatch

    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsFileError) as info:
        read_run(path)
    assert str(info.value).startswith(str(path))
    assert fnmatch.fnmatch(str(info.value), f"*{message}*"), str(info.value)


def test_binary_files_are_rejected(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04\x95\xff\xfe")
    with pytest.raises(ResultsFileError, match="not a pytest-hparams results file"):
        read_run(path)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "deep" / "out.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]
