"""``pytest-hparams compare A B``: the same gate offline, with exit statuses CI can use."""

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_hparams import RunFile
from pytest_hparams.__main__ import main
from tests.conftest import lr_trial, seed_runs, write_run_file

ENVIRONMENT = {"environment": {"torch": "2.13.0"}, "extra": {"device": "cpu"}}


def trials(shift=0.0, lrs=(0.1, 0.2), tolerance=None):
    values = [0.90, 0.91, 0.905, 0.895, 0.9]
    finals = [{"accuracy": v + shift, "loss": 1 - v - shift} for v in values]
    return [lr_trial(seed_runs(finals), lr=lr, tolerance=tolerance or {}) for lr in lrs]


def run(**kwargs):
    return RunFile(trials(**kwargs), **ENVIRONMENT)


@pytest.fixture
def files(tmp_path):
    def write(name, **kwargs):
        return str(write_run_file(tmp_path / name, trials(**kwargs), **ENVIRONMENT))

    return write


def test_no_change_exits_zero(files, capsys):
    assert main(["compare", files("a.json"), files("b.json")]) == 0
    out = capsys.readouterr().out
    assert "candidate: " in out and "b.json" in out
    assert "gate: accuracy:-0.005, α = 0.05, no test to correct" in out
    assert out.rstrip().endswith("passed (2 unchanged)")


def test_a_regression_exits_one_with_the_table(files, capsys):
    assert main(["compare", files("a.json"), files("b.json", shift=-0.03)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "FAILED: regressions beyond tolerance (2 regressed)" in out


def test_fail_expressions_alpha_and_markdown(files, tmp_path, capsys):
    markdown = tmp_path / "compare.md"
    status = main(["compare", files("a.json"), files("b.json", shift=-0.03),
                   "--fail", "accuracy:-0.05", "--fail", "loss:+50%", "--alpha", "0.01",
                   "--markdown", str(markdown)])
    assert status == 0
    out = capsys.readouterr().out
    assert "gate: accuracy:-0.05, loss:+50%, α = 0.01" in out
    assert "## ✅ Baseline comparison: passed (2 unchanged)" in markdown.read_text()


def test_tolerances_saved_from_the_candidates_markers_apply(files, capsys):
    loose = files("b.json", shift=-0.03, tolerance={"accuracy": "accuracy:-0.05"})
    assert main(["compare", files("a.json"), loose]) == 0


@pytest.mark.parametrize("factor, status", [(1.0, 0), (1.5, 1)])
def test_losses_near_1e200_exit_zero_or_one_not_with_an_overflow(tmp_path, capsys, factor,
                                                                  status):
    def write(name, scale):
        finals = [{"loss": v * scale} for v in (1.0, 1.1, 0.9, 1.05, 0.95)]
        return str(write_run_file(tmp_path / name, [lr_trial(seed_runs(finals))]))

    a, b = write("a.json", 1e200), write("b.json", factor * 1e200)
    assert main(["compare", a, b, "--fail", "loss:+5%"]) == status
    out, err = capsys.readouterr()
    assert "1e+200 ± 7.9e+198" in out and err == ""


def test_runs_are_named_by_number_or_name_in_the_storage_folder(tmp_path, capsys):
    from pytest_hparams import save_run

    storage = tmp_path / "store"
    save_run(storage, run(), "main")
    save_run(storage, run(shift=-0.03))
    assert main(["compare", "main", "2", "--storage", str(storage)]) == 1
    assert main(["list", "--storage", str(storage)]) == 0
    listing = capsys.readouterr().out.splitlines()[-2:]
    assert listing[0].startswith("0001  ") and listing[0].endswith("_main.json")
    assert listing[1].startswith("0002  ")


@pytest.mark.parametrize("content, message", [
    (None, "baseline '{a}': {a}: no such baseline file"),
    ('{"schema": "pytest-hparams/run", "version": 1, "tri', "is not valid JSON"),
    ('{"schema": "pytest-hparams/run", "version": 2, "trials": []}', "written by a newer"),
    ('{"benchmarks": []}', "not a pytest-hparams results file"),
])
def test_bad_files_exit_two_naming_the_file(files, tmp_path, capsys, content, message):
    a = tmp_path / "a.json"
    if content is not None:
        a.write_text(content)
    assert main(["compare", str(a), files("b.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pytest-hparams: error: ")
    assert message.format(a=a) in err


def test_bad_expressions_and_unknown_metrics_exit_two(files, capsys):
    a, b = files("a.json"), files("b.json")
    with pytest.raises(SystemExit) as info:
        main(["compare", a, b, "--fail", "accuracy:+1"])
    assert info.value.code == 2
    assert "argument --fail: tolerance 'accuracy:+1': accuracy is higher-is-better" in \
        capsys.readouterr().err
    assert main(["compare", a, b, "--fail", "acuracy:-0.01"]) == 2
    assert "recorded the metric 'acuracy'" in capsys.readouterr().err


def test_module_and_console_script_entry_points(files):
    a, b = files("a.json"), files("b.json", shift=-0.03)
    for command in ([sys.executable, "-m", "pytest_hparams"],
                    [str(Path(sys.executable).parent / "pytest-hparams")]):
        done = subprocess.run([*command, "compare", a, b], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1, done.stderr
        assert "FAILED: regressions beyond tolerance" in done.stdout


def test_the_correction_over_the_compared_tests_is_an_option(tmp_path, capsys):
    # One configuration lost about a point (p near 0.005 alone), nineteen did not change.
    values = [0.90, 0.91, 0.905, 0.895, 0.9]
    noise = [0.0, 0.004, -0.004, 0.002, -0.002]

    def write(name, drop):
        made = [lr_trial(seed_runs({"accuracy": v - (drop if lr == 0 else 0.0) + (d if drop
                                                                                  else 0.0)}
                                   for v, d in zip(values, noise, strict=True)), lr=lr)
                for lr in range(20)]
        return str(write_run_file(tmp_path / name, made, **ENVIRONMENT))

    a, b = write("a.json", 0.0), write("b.json", 0.012)
    assert main(["compare", a, b, "--correction", "none"]) == 1
    assert "no correction: each test at α on its own" in capsys.readouterr().out
    assert main(["compare", a, b, "--correction", "holm"]) == 0
    assert "Holm over 20 tests" in capsys.readouterr().out
    assert main(["compare", a, b]) == 0
    assert "Benjamini-Hochberg over 20 tests" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["compare", a, b, "--correction", "bonferroni"])
    assert info.value.code == 2
    assert "argument --correction: the correction must be one of bh, holm, none" in \
        capsys.readouterr().err
