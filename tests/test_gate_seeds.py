"""Seeds on demand, the run-level correction and worse statuses, end to end with pytester.

The example records per-seed accuracies without training: each seed's value is fixed (as a
deterministic model on one machine gives), DELTA (a JSON list, one entry per seed) moves them,
and NUMERICS adds noise that differs between runs, as another batch order would.
"""

import json

import pytest
from scipy import stats

EXAMPLE = """
import json
import os
import pytest
import torch

DELTA = json.loads(os.environ.get("DELTA", "[]"))
NUMERICS = os.environ.get("NUMERICS", "")
SEEDS = int(os.environ.get("SEEDS", "3"))
DIVERGE = os.environ.get("DIVERGE", "")

@pytest.mark.hparams(lr=[0.1, 0.2], seeds=SEEDS)
def test_fit(hparams, hparams_trial):
    print("trains seeds", list(hparams.seeds), "at lr", hparams.lr)
    for run in hparams_trial.runs():
        accuracy = 0.9 + 0.01 * torch.randn(()).item()
        if run.seed < len(DELTA):
            accuracy += DELTA[run.seed]
        if NUMERICS:
            other = torch.Generator().manual_seed(run.seed + 1000 * len(NUMERICS))
            accuracy += 0.004 * torch.randn((), generator=other).item()
        loss = float("inf") if DIVERGE else 1 - accuracy
        run.log_epoch(loss=loss, accuracy=accuracy)
"""


@pytest.fixture
def example(pytester, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makepyfile(test_example=EXAMPLE)

    def run(*args, delta=(), numerics="", seeds=3, diverge=""):
        monkeypatch.setenv("DELTA", json.dumps(list(delta)))
        monkeypatch.setenv("NUMERICS", numerics)
        monkeypatch.setenv("SEEDS", str(seeds))
        monkeypatch.setenv("DIVERGE", diverge)
        return pytester.runpytest("-p", "no:cacheprovider", "-s", *args)

    return run


def trained(result, nodeid="test_example.py::test_fit[lr=0.1]"):
    """The seed lists each run of the item's test body was given, from its prints."""
    lines = result.stdout.str().splitlines()
    return [json.loads(line.split("trains seeds ", 1)[1].split("]")[0] + "]")
            for line in lines if "trains seeds" in line]


def test_a_baseline_saved_with_seeds_on_demand_holds_every_seed_a_comparison_may_need(
        pytester, example):
    result = example("--hparams-save=main", "--hparams-compare-seeds=3:8")
    result.assert_outcomes(passed=2)
    assert trained(result) == [list(range(8))] * 2
    [path] = (pytester.path / ".hparams").glob("*/*.json")
    trials = json.loads(path.read_text())["trials"]
    assert [[run["seed"] for run in t["runs"]] for t in trials] == [list(range(8))] * 2


def test_an_unchanged_model_stops_at_the_first_look(pytester, example):
    example("--hparams-save=main", "--hparams-compare-seeds=3:8")
    result = example("--hparams-compare=main", "--hparams-compare-seeds=3:8")
    result.assert_outcomes(passed=2)
    assert trained(result) == [[0, 1, 2]] * 2
    result.stdout.fnmatch_lines([
        "seeds on demand: looks at 3, 5, 8 seeds; a configuration stops at the first look that "
        "decides*",
        "0.1 * 3 paired *+0 (+0.0%)*unchanged †",
        "passed (2 unchanged)",
    ])


def test_an_unsure_verdict_trains_more_seeds_into_the_same_trial(pytester, example):
    example("--hparams-save=main", "--hparams-compare-seeds=3:8")
    result = example("--hparams-compare=main", "--hparams-compare-seeds=3:8",
                     numerics="another batch order")
    result.assert_outcomes(passed=2)
    rounds = trained(result)
    assert rounds[:3] == [[0, 1, 2], [3, 4], [5, 6, 7]]
    result.stdout.fnmatch_lines(["0.1 * 8 paired *unchanged", "passed (2 unchanged)"])


def test_a_regression_stops_training_where_it_is_shown(pytester, example):
    example("--hparams-save=main", "--hparams-compare-seeds=3:8")
    result = example("--hparams-compare=main", "--hparams-compare-seeds=3:8",
                     delta=[-0.03] * 8, numerics="x")
    result.assert_outcomes(failed=2)
    assert trained(result)[:2] == [[0, 1, 2], [3, 4]]
    result.stdout.fnmatch_lines([
        "  seeds    on demand, looks at 3, 5, 8 seeds (α spent O'Brien-Fleming-like on a "
        "regression, Pocock-like on clearly within): stopped at 5 of 8: regressed",
    ])


def test_a_baseline_without_the_seeds_stops_the_design_where_its_seeds_end(pytester, example):
    example("--hparams-save=main", seeds=5)
    result = example("--hparams-compare=main", "--hparams-compare-seeds=3:8", numerics="x")
    result.assert_outcomes(passed=2)
    assert max(len(seeds) for seeds in trained(result)) <= 3
    assert sum(len(seeds) for seeds in trained(result)[:2]) <= 5
    result.stdout.fnmatch_lines([
        "*lr=0.1: seeds on demand 3:8: the baseline holds 5 of the 8 seeds this configuration "
        "may train, so it stops at 5; save the baseline with --hparams-compare-seeds=3:8 so that "
        "it trains all 8",
    ])


def test_a_test_that_chooses_its_own_seeds_gets_none_added_and_is_told(pytester, example):
    own = EXAMPLE.replace("    for run in hparams_trial.runs():\n",
                          "    for seed in (10, 11, 12):\n"
                          "        run = hparams_trial.start(seed)\n")
    own = own.replace("run.log_epoch(loss=loss, accuracy=accuracy)",
                      "run.log_epoch(loss=loss, accuracy=accuracy)\n        run.finish()")
    pytester.makepyfile(test_example=own)
    example("--hparams-save=main", "--hparams-compare-seeds=3:8")
    result = example("--hparams-compare=main", "--hparams-compare-seeds=3:8", numerics="x")
    result.assert_outcomes(passed=2)
    assert len(trained(result)) == 2  # one run of each test body: no seeds added
    result.stdout.fnmatch_lines([
        "lr=0.1: seeds on demand: test_example.py::test_fit[[]lr=0.1[]] trained seeds "
        "[[]10, 11, 12[]] rather than the 3 it was given ([[]0, 1, 2[]]): it chooses its own "
        "seeds (not hparams.seeds or hparams_trial.runs()), so none were added",
    ])


def test_seeds_on_demand_options_are_checked_before_anything_runs(pytester, example):
    result = example("--hparams-compare-seeds=1:5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "write MIN:MAX with 2 <= MIN <= MAX" in result.stderr.str()
    result = example("--hparams-compare-correction=sidak")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "the correction must be one of bh, holm, none" in result.stderr.str()


def test_regressions_only_the_whole_run_can_show_fail_the_run(pytester, example):
    # Each configuration's paired p-value lies between alpha / 2 (the level an item is judged
    # at, before the other has run) and alpha: Benjamini-Hochberg over both rejects both.
    noise = [0.002, -0.002, 0.001, -0.001, 0.0]
    drop = 0.005 + 2.4 * stats.tstd(noise) / 5 ** 0.5
    delta = [d - drop for d in noise]
    p = stats.ttest_1samp(delta, -0.005, alternative="less").pvalue
    assert 0.025 < p < 0.05
    example("--hparams-save=main", seeds=5)
    result = example("--hparams-compare=main", delta=delta, seeds=5)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "0.1 * REGRESSED",
        "0.2 * REGRESSED",
        "FAILED: regressions beyond tolerance (2 regressed)",
        "hparams: 2 configuration(s) regressed under Benjamini-Hochberg over 2 tests although "
        "their items passed *; the run fails",
    ])
    holm = example("--hparams-compare=main", "--hparams-compare-correction=holm", delta=delta,
                   seeds=5)
    assert holm.ret == pytest.ExitCode.OK


def test_a_model_that_now_diverges_regresses_whatever_its_metrics_say(pytester, example):
    example("--hparams-save=main")
    result = example("--hparams-compare=main", "--hparams-compare-fail=accuracy:-0.005",
                     "--hparams-compare-fail=loss:+5%", diverge="inf")
    result.assert_outcomes(failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "status regressed: diverged on 3 of 3 seeds now, where the baseline ran ok",
        "loss regressed: no finite value now, *",
    ])
    result.stdout.fnmatch_lines(["0.1 * status * ok * 3 of 3 stopped * REGRESSED †"])
