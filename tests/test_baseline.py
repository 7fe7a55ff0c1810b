"""Saving runs and gating them against a baseline, end to end with pytester.

The example records its own metrics: per-seed accuracy drawn around 0.9 with the seed's noise
(spread 0.01), shifted by the environment variable SHIFT, so that a test can plant a regression
or an improvement of a known size without training anything. Each seed gives the same value in
every run, as a deterministic model on one machine does, so the paired differences are exactly
SHIFT; NUMERICS adds noise that differs between runs (as another batch order would), so that
the paired t-test has a spread to test.
"""

import hashlib
import json
import subprocess
import sys

import pytest

EXAMPLE = """
import os
import pytest
import torch

SHIFT = float(os.environ.get("SHIFT", "0"))
NUMERICS = os.environ.get("NUMERICS", "")
SEEDS = int(os.environ.get("SEEDS", "5"))
LRS = [float(v) for v in os.environ.get("LRS", "0.1,0.2").split(",")]

@pytest.mark.hparams(lr=LRS, seeds=SEEDS)
def test_fit(hparams, hparams_trial):
    assert hparams.lr > 0  # a real loop would train with it
    for run in hparams_trial.runs(target={"accuracy": 0.85}):
        accuracy = 0.9 + 0.01 * torch.randn(()).item() + SHIFT
        if NUMERICS:
            other = torch.Generator().manual_seed(run.seed + 1000 * len(NUMERICS))
            accuracy += 0.004 * torch.randn((), generator=other).item()
        run.log_epoch(loss=1 - accuracy, accuracy=accuracy)
"""

NO_INTERNAL_ERROR = "INTERNALERROR"


@pytest.fixture
def example(pytester, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makepyfile(test_example=EXAMPLE)

    def run(*args, shift=0.0, seeds=5, lrs="0.1,0.2", numerics=""):
        monkeypatch.setenv("SHIFT", str(shift))
        monkeypatch.setenv("NUMERICS", numerics)
        monkeypatch.setenv("SEEDS", str(seeds))
        monkeypatch.setenv("LRS", lrs)
        return pytester.runpytest("-p", "no:cacheprovider", *args)

    return run


def saved(pytester):
    return sorted((pytester.path / ".hparams").glob("*/*.json"))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- save → compare


def test_save_then_compare_with_no_change_passes_and_leaves_the_baseline_alone(pytester,
                                                                                example):
    example("--hparams-save=main").assert_outcomes(passed=2)
    [baseline] = saved(pytester)
    assert baseline.name.startswith("0001_") and baseline.name.endswith("_main.json")
    before = digest(baseline)
    result = example("--hparams-compare=main", "--hparams-autosave")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*hyperparameter baseline comparison*",
        f"baseline: .hparams/*/{baseline.name} (run *",
        "gate: accuracy:-0.005, α = 0.05, no test to correct",
        "tests: a one-sided paired t-test on the per-seed differences where both runs trained "
        "the same seeds, else Welch's*",
        "test_example.py::test_fit: 2 configurations, accuracy (tolerance accuracy:-0.005)",
        "0.1 *0.9* ± 0.0* *5 paired *+0 (+0.0%)*unchanged †",
        "0.2 *unchanged †",
        "† no test decided: *",
        "passed (2 unchanged)",
        "hparams: saved run .hparams/*/0002_*.json",
    ])
    assert digest(baseline) == before
    assert len(saved(pytester)) == 2


def test_bare_compare_uses_the_latest_saved_run(pytester, example):
    example("--hparams-autosave", shift=-0.2)
    example("--hparams-autosave")
    result = example("--hparams-compare")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["baseline: .hparams/*/0002_*", "passed (2 unchanged)"])


def test_a_planted_regression_fails_its_items_with_the_verdict_and_exit_status(pytester,
                                                                                example):
    example("--hparams-save")
    result = example("--hparams-compare", shift=-0.03, numerics="another batch order")
    result.assert_outcomes(failed=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*_ test_fit?lr=0.1? _*",
        "accuracy regressed: 0.8* now, 0.9* in the baseline (Δ -0.0*, allowed "
        "accuracy:-0.005, paired p = *, adjusted *)",
        "test_example.py::test_fit[[]lr=0.1[]] against baseline .hparams/*/0001_*.json:",
        "accuracy:",
        "  now      0.8* ± 0.0* (5 seeds)",
        "  baseline 0.9* ± 0.0* (5 seeds)",
        "  change   -0.0* (-*%), 90% interval [[]-0.0*, -0.0*[]]",
        "  allowed  accuracy:-0.005 (a change of -0.005)",
        "  test     paired t-test on the differences of the 5 seeds both ran (0-4): p = * for "
        "H0: the change is within -0.005",
        "  run      Benjamini-Hochberg over 2 tests (this item judged alone, before the rest of "
        "the run: the run's table adjusts with every test's p): adjusted p = * ≤ α = 0.05",
    ])
    result.stdout.fnmatch_lines([
        "*hyperparameter baseline comparison*",
        "0.1 * 5 paired * -0.0* (-*%) *REGRESSED",
        "0.2 * -0.0* (-*%) *REGRESSED",
        "FAILED: regressions beyond tolerance (2 regressed)",
        "FAILED test_example.py::test_fit[[]lr=0.1[]] - Failed: accuracy regressed: *",
    ])
    assert "Traceback" not in result.stdout.str()


def test_a_drop_within_the_tolerance_passes(pytester, example):
    example("--hparams-save")
    result = example("--hparams-compare", "--hparams-compare-fail=accuracy:-0.02", shift=-0.01,
                     numerics="x")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["0.1 * -0.0* (-*%) *unchanged", "passed (2 unchanged)"])


def test_improvements_pass_and_are_shown(pytester, example):
    example("--hparams-save")
    result = example("--hparams-compare", shift=0.03, numerics="x")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["0.1 * +0.0* (+*%) *improved", "passed (2 improved)"])


def test_new_and_missing_configurations_are_reported_not_errors(pytester, example):
    example("--hparams-save")
    result = example("--hparams-compare", lrs="0.2,0.5")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "test_example.py::test_fit: 3 configurations*",
        "0.2 * unchanged †",
        "0.5 *-*new",
        "0.1 *-*missing",
        "passed (1 unchanged, 1 new, 1 missing)",
    ])


def test_a_deselected_test_is_listed_as_not_run(pytester, example):
    pytester.makepyfile(test_other=EXAMPLE.replace("test_fit", "test_other"))
    example("--hparams-save")
    result = example("test_example.py", "--hparams-compare")
    result.stdout.fnmatch_lines([
        "not run now (deselected or removed): test_other.py::test_other",
        "passed (2 unchanged; 1 test of the baseline did not run)",
    ])


def test_one_seed_falls_back_to_the_tolerance_and_says_so(pytester, example):
    example("--hparams-save", seeds=1)
    result = example("--hparams-compare", seeds=1, shift=-0.02)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "  test     tolerance only: 1 seed on one side, no spread to test against",
        "0.1 * 1→1 * -0.02 * - * REGRESSED †",
        "† no test decided: no seed changed, one seed on a side, no spread over seeds, a value "
        "that is no longer finite, or a run that now stops",
    ])


def test_time_and_relative_tolerances(pytester, example):
    example("--hparams-save")
    result = example("--hparams-compare", "--hparams-compare-fail=loss:+10%",
                     "--hparams-compare-fail=epochs_to_target:+1",
                     "--hparams-compare-fail=time:+1000%", shift=-0.05, numerics="x")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "loss regressed: 0.1* now, 0.09* in the baseline (Δ +0.0*, allowed loss:+10%, "
        "paired p = *, adjusted *)",
    ])
    result.stdout.fnmatch_lines(["0.1 * loss *REGRESSED",
                                 "* epochs_to_target *unchanged",
                                 "* time *unchanged"])


# --------------------------------------------------------------------------- the marker


def test_a_marker_tolerance_overrides_the_command_line_for_its_test(pytester, example):
    pytester.makepyfile(test_loose=EXAMPLE.replace(
        "seeds=SEEDS)", "seeds=SEEDS, tolerance={'accuracy': '-0.05'})"))
    example("--hparams-save")
    result = example("--hparams-compare", shift=-0.03, numerics="x")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "test_example.py::test_fit: 2 configurations, accuracy (tolerance accuracy:-0.005)",
        "*REGRESSED",
    ])
    result.stdout.fnmatch_lines([
        "test_loose.py::test_fit: 2 configurations, accuracy (tolerance accuracy:-0.05)",
        "0.1 * -0.0* (-*%) *unchanged",
    ])


def test_a_marker_can_switch_a_metric_gate_off(pytester, example):
    pytester.makepyfile(test_example=EXAMPLE.replace(
        "seeds=SEEDS)", "seeds=SEEDS, tolerance={'accuracy': None})"))
    example("--hparams-save")
    result = example("--hparams-compare", shift=-0.1)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["passed (2 not gated)"])


def test_a_bad_marker_tolerance_is_a_collection_error_naming_test_and_key(pytester, example):
    pytester.makepyfile(test_example=EXAMPLE.replace(
        "seeds=SEEDS)", "seeds=SEEDS, tolerance={'accuracy': '+2%'})"))
    result = example()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*test_example.py::test_fit: hparams key 'tolerance': tolerance 'accuracy:+2%': "
        "accuracy is higher-is-better, so it regresses when it drops; write accuracy:-2%*",
    ])
    assert NO_INTERNAL_ERROR not in result.stdout.str() + result.stderr.str()


def test_a_marker_tolerance_on_a_metric_never_recorded_fails_naming_test_and_key(pytester,
                                                                               example):
    pytester.makepyfile(test_example=EXAMPLE.replace(
        "seeds=SEEDS)", "seeds=SEEDS, tolerance={'acuracy': '-0.02'})"))
    result = example()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "test_example.py::test_fit[[]lr=0.1[]]: hparams key 'tolerance': names 'acuracy', which "
        "no run recorded (recorded: loss, accuracy, wall_seconds, time, epochs_to_target, "
        "seconds_to_target)",
    ])


# --------------------------------------------------------------------------- reports


def test_markdown_file_and_github_step_summary_get_the_comparison(pytester, example,
                                                                  monkeypatch):
    example("--hparams-save")
    summary = pytester.path / "step_summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    example("--hparams-compare", "--hparams-markdown=results.md", shift=-0.03, numerics="x")
    markdown = (pytester.path / "results.md").read_text()
    assert markdown.index("### test_example.py::test_fit") < markdown.index(
        "## ❌ Baseline comparison: FAILED: regressions beyond tolerance (2 regressed)")
    assert "| lr   | baseline" in markdown and "| REGRESSED |" in markdown
    step = summary.read_text()
    assert step.startswith("# earlier step\n")
    assert "## ❌ Baseline comparison" in step and "## Results" in step


def test_without_a_comparison_or_markdown_the_step_summary_is_left_alone(pytester, example,
                                                                          monkeypatch):
    summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    example("--hparams-save")
    assert not summary.exists()


def test_a_baseline_from_another_environment_is_warned_about(pytester, example):
    example("--hparams-save")
    [path] = saved(pytester)
    document = json.loads(path.read_text())
    document["environment"]["torch"] = "1.0.0"
    document["environment"]["machine_info"]["node"] = "some-ci-runner"
    document["device"] = "cuda:0"
    committed = pytester.path / "baselines" / "main.json"
    committed.parent.mkdir()
    committed.write_text(json.dumps(document))
    result = example("--hparams-compare=baselines/main.json")
    result.stdout.fnmatch_lines([
        "baseline: baselines/main.json (*",
        "warning: host differs: some-ci-runner in the baseline, * now",
        "warning: torch differs: 1.0.0 in the baseline, * now",
        "warning: device differs: cuda:0 in the baseline, cpu now",
    ])


# --------------------------------------------------------------------------- bad input


def bad_input(pytester, example, *args, message):
    result = example(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stdout.str() + result.stderr.str()
    assert message in text, text
    assert NO_INTERNAL_ERROR not in text and "Traceback" not in text
    assert "test_example.py::test_fit" not in result.stdout.str()  # before any test ran
    return text


def test_a_missing_baseline_is_a_usage_error_before_any_training(pytester, example):
    bad_input(pytester, example, "--hparams-compare",
              message="--hparams-compare: .hparams/")
    bad_input(pytester, example, "--hparams-compare",
              message="no saved run to compare against; save one with --hparams-save")
    bad_input(pytester, example, "--hparams-compare=baselines/main.json",
              message="--hparams-compare=baselines/main.json: baselines/main.json: no such "
                      "baseline file")
    example("--hparams-save")
    bad_input(pytester, example, "--hparams-compare=7", message="no saved run '7' (latest "
                                                                "saved: 0001_")


@pytest.mark.parametrize("content, message", [
    ('{"schema": "pytest-hparams/run", "version": 1, "trials": [', "base.json: is not valid "
     "JSON (Expecting value at line 1, column 59); it may be truncated"),
    ("", "base.json: is empty"),
    ('{"schema": "pytest-hparams/run", "version": 99, "trials": []}',
     "base.json: written by a newer pytest-hparams (schema version 99; this one reads up to 1)"),
    ('{"machine_info": {}, "benchmarks": []}',
     "base.json: not a pytest-hparams results file"),
    ('[1, 2]', "base.json: not a pytest-hparams results file"),
])
def test_an_unusable_baseline_file_is_a_usage_error_naming_it(pytester, example, content,
                                                               message):
    (pytester.path / "base.json").write_text(content)
    bad_input(pytester, example, "--hparams-compare=base.json", message=message)


def test_an_unreadable_baseline_is_named(pytester, example):
    path = pytester.path / "base.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    bad_input(pytester, example, "--hparams-compare=base.json",
              message="base.json: not a pytest-hparams results file (not text)")


@pytest.mark.parametrize("expression, message", [
    ("accuracy", "argument --hparams-compare-fail: cannot read the tolerance 'accuracy': write "
                 "METRIC:[+-]AMOUNT[%]"),
    ("accuracy:-1x", "cannot read the tolerance 'accuracy:-1x'"),
    ("time:-5%", "tolerance 'time:-5%': time is lower-is-better, so it regresses when it grows; "
                 "write time:+5%"),
])
def test_an_unparsable_fail_expression_is_a_usage_error_naming_it(pytester, example,
                                                                  expression, message):
    example("--hparams-save")
    bad_input(pytester, example, "--hparams-compare", f"--hparams-compare-fail={expression}",
              message=message)


def test_a_metric_no_trial_has_is_a_usage_error_naming_it(pytester, example):
    example("--hparams-save")
    bad_input(pytester, example, "--hparams-compare", "--hparams-compare-fail=acuracy:-0.01",
              message="--hparams-compare-fail: acuracy:-0.01: no trial in the baseline "
                      ".hparams/")
    bad_input(pytester, example, "--hparams-compare", "--hparams-compare-fail=acuracy:-0.01",
              message="recorded the metric 'acuracy' (recorded: loss, accuracy, wall_seconds, "
                      "time, epochs_to_target, seconds_to_target); did you mean accuracy?")


@pytest.mark.parametrize("args, message", [
    (["--hparams-compare", "test_example.py"], "--hparams-compare=test_example.py: "
     "test_example.py: is a Python file, not a run file (a test path right after a bare "
     "--hparams-compare is taken as its value: write --hparams-compare=ID|NAME|PATH, or put "
     "test_example.py first)"),
    (["--hparams-compare-fail=accuracy:-0.01"], "--hparams-compare-fail needs a baseline: add "
                                                "--hparams-compare"),
    (["--hparams-compare-alpha=0.7"], "the significance level must be a number between 0 and "
                                      "0.5 (e.g. 0.05), got '0.7'"),
    (["--hparams-save=a/b"], "the run name 'a/b' must be letters, digits"),
    (["--hparams-save", "--hparams-storage=test_example.py"], "--hparams-storage: "
     "test_example.py is a file; the runs are saved into a folder"),
])
def test_other_bad_options_are_usage_errors(pytester, example, args, message):
    bad_input(pytester, example, *args, message=message)


def test_sweep_rows_are_matched_and_gated_like_items(pytester, example):
    pytester.makepyfile(test_claim="""
        import torch
        from pytest_hparams import sweep

        X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        Y = (X[:, 0] > 0).long()

        def test_claim():
            sweep(lambda: torch.nn.Linear(4, 2), (X, Y), (X, Y),
                  space={"lr": [0.01, 0.1], "seeds": 3}, epochs=2)
    """)
    pytester.runpytest("-p", "no:cacheprovider", "test_claim.py", "--hparams-save")
    result = pytester.runpytest("-p", "no:cacheprovider", "test_claim.py", "--hparams-compare")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "test_claim.py::test_claim: 2 configurations, accuracy (tolerance accuracy:-0.005)",
        "0.01 * 3 paired *unchanged †",
        "0.1 * 3 paired *unchanged †",
        "passed (2 unchanged)",
    ])


def test_a_run_that_cannot_be_saved_says_so(pytester, example):
    pytester.makepyfile(test_example=EXAMPLE + """

def test_storage_becomes_a_file():
    with open("storage", "w") as handle:
        handle.write("not a folder any more")
""")
    result = example("--hparams-storage=storage", "--hparams-save")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["hparams: could not save the run: *storage*"])
    assert NO_INTERNAL_ERROR not in result.stdout.str()


# --------------------------------------------------------------------------- processes


def test_under_xdist_each_worker_reads_the_baseline_and_fails_its_items(pytester, example):
    example("--hparams-save")
    result = example("-n", "2", "--hparams-compare", shift=-0.03, numerics="x")
    result.assert_outcomes(failed=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*accuracy regressed: *", "FAILED: regressions beyond "
                                                           "tolerance (2 regressed)"])


def test_two_pytest_processes_saving_at_once_keep_both_runs(pytester, example):
    example("--hparams-save")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--hparams-autosave", "test_example.py"]
    processes = [subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    names = [p.name for p in saved(pytester)]
    assert [name[:4] for name in names] == ["0001", "0002", "0003"]
    assert sorted(name.split("_")[0] for out in outputs for name in
                  [out.split("hparams: saved run ")[1].split("/")[-1]]) == ["0002", "0003"]
