"""Sharing vectorised training between the items of a test: same results however it is run."""

import pytest
import torch

from pytest_hparams import HParams, TrialRecorder, fit
from pytest_hparams.recording import recording_into
from tests.conftest import run_with_json as _run

# pytester's in-process runs drop the modules they import, and some cannot be imported twice
# (scikit-learn's compiled parts; torch's optimiser and vmap machinery): import them out here.
pytest.importorskip("sklearn.datasets").load_digits()
with recording_into(TrialRecorder()):
    for _vectorize in (False, True):
        fit(torch.nn.Linear(2, 2), (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)),
            hparams=HParams({"lr": 0.1, "augment": "noise"}), epochs=1, vectorize=_vectorize)

GRID = """
import pytest
from pytest_hparams import MLP, digits, fit

DATA = digits()


def model(hparams):
    return MLP(DATA.features, DATA.classes, 16, dropout=hparams.get("dropout", 0.0))


@pytest.mark.hparams(lr=[1e-3, 1e-2, 5e-2], dropout=[0.1, 0.3], seeds=2, epochs=2{options})
def test_grid(hparams):
{body}
"""
FIT = "    result = fit(model, DATA.train, DATA.val, hparams, test=DATA.test)\n"


def _grid(pytester, body=FIT + "    assert result.runs\n", options=""):
    pytester.makepyfile(test_grid=GRID.format(body=body, options=options))


def _runs(trial):
    return [(run.seed, run.status, run.final,
             [{k: v for k, v in row.items() if k != "seconds"} for row in run.history])
            for run in trial.runs]


def _notes(trials):
    return {nodeid: " | ".join(trial.notes) for nodeid, trial in trials.items()}


def test_the_first_item_trains_its_group_and_the_others_take_their_runs(pytester):
    _grid(pytester)
    outcome, trials = _run(pytester, "-v")
    outcome.assert_outcomes(passed=6)
    outcome.stdout.fnmatch_lines([
        "*hparams vectorised training*",
        "*test_grid?lr=0.001-dropout=0.1?: vectorised: 12 runs (6 configurations × 2 seeds) "
        "trained together in 1 chunk, led by lr=0.001-dropout=0.1*",
    ])
    assert all(len(trial.runs) == 2 for trial in trials.values())
    assert len({str(_runs(t)) for t in trials.values()}) == 6


def test_items_with_the_same_other_parameters_share_a_stack(pytester):
    body = FIT.replace("hparams, test", "hparams, epochs=width, test")
    pytester.makepyfile(test_grid=GRID.format(body=body, options="").replace(
        "@pytest.mark.hparams", '@pytest.mark.parametrize("width", [1, 2])\n@pytest.mark.hparams'
    ).replace("def test_grid(hparams):", "def test_grid(hparams, width):").replace(
        ", epochs=2", ""))
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=12)
    for nodeid, notes in _notes(trials).items():
        assert "12 runs (6 configurations × 2 seeds) trained together" in notes, nodeid
    assert {len(t.runs[0].history) for t in trials.values()} == {1, 2}


def test_results_do_not_depend_on_the_group(pytester):
    """-k one configuration, --hparams-vectorize-memory forcing a chunk per run, and
    sequential training all give each configuration the same runs (the sequential loop's
    train_loss aside, which differs in the last digits)."""
    _grid(pytester)
    _, plain = _run(pytester)
    _, one = _run(pytester, "-k", "0.01 and 0.3")
    assert list(one) == ["test_grid.py::test_grid[lr=0.01-dropout=0.3]"]
    assert "2 runs (1 configuration × 2 seeds)" in _notes(one)[
        "test_grid.py::test_grid[lr=0.01-dropout=0.3]"]  # only what -k selected
    assert _runs(one["test_grid.py::test_grid[lr=0.01-dropout=0.3]"]) == _runs(
        plain["test_grid.py::test_grid[lr=0.01-dropout=0.3]"])
    _, chunked = _run(pytester, "--hparams-vectorize-memory=1", "-v")
    assert {nodeid: _runs(t) for nodeid, t in chunked.items()} == {
        nodeid: _runs(t) for nodeid, t in plain.items()}
    assert "trained together in 12 chunks" in _notes(chunked)[
        "test_grid.py::test_grid[lr=0.001-dropout=0.1]"]
    _, sequential = _run(pytester, "--hparams-no-vectorize")
    for nodeid, trial in sequential.items():
        assert trial.notes[0].startswith("one by one: vectorised training is off")
        for left, right in zip(trial.runs, plain[nodeid].runs, strict=True):
            assert left.final["accuracy"] == right.final["accuracy"]
            assert left.final["test_loss"] == pytest.approx(right.final["test_loss"], abs=1e-6)


def test_last_failed_reruns_the_failed_configuration_with_the_same_results(pytester):
    _grid(pytester, FIT + "    assert hparams.lr != 0.01 or hparams.dropout != 0.3\n")
    outcome, first = _run(pytester)
    outcome.assert_outcomes(passed=5, failed=1)
    outcome, again = _run(pytester, "--lf")
    outcome.assert_outcomes(failed=1)
    nodeid = "test_grid.py::test_grid[lr=0.01-dropout=0.3]"
    assert list(again) == [nodeid]
    assert "2 runs (1 configuration × 2 seeds)" in _notes(again)[nodeid]
    assert _runs(again[nodeid]) == _runs(first[nodeid])


def test_xdist_gives_the_same_results(pytester):
    pytest.importorskip("xdist")
    _grid(pytester)
    _, plain = _run(pytester)
    for mode in ("load", "loadscope"):
        outcome, spread = _run(pytester, "-n", "2", "--dist", mode, subprocess=True)
        outcome.assert_outcomes(passed=6)
        assert {k: _runs(t) for k, t in spread.items()} == {k: _runs(t) for k, t in plain.items()}
        # 12 runs are too few to split across two workers (8 each at least): one xdist chunk.
        notes = " ".join(_notes(spread).values())
        assert "12 runs (6 configurations × 2 seeds) trained together" in notes


def test_an_item_whose_call_differs_trains_by_itself(pytester):
    """The leader assumes every item calls fit as it does; an item that passes other
    settings is caught and trains itself, with the sequential loop's results."""
    body = ("    epochs = 3 if hparams.lr == 0.05 else 2\n"
            "    fit(model, DATA.train, DATA.val, hparams, test=DATA.test, epochs=epochs)\n")
    pytester.makepyfile(test_grid=GRID.replace(", epochs=2{options}", "").format(
        body=body, options=""))
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=6)
    notes = _notes(trials)
    assert "trained again by itself: its fit() keyword epochs= differs" in notes[
        "test_grid.py::test_grid[lr=0.05-dropout=0.1]"]
    assert all(len(run.history) == 3 for run in trials[
        "test_grid.py::test_grid[lr=0.05-dropout=0.3]"].runs)
    _, sequential = _run(pytester, "--hparams-no-vectorize")
    for nodeid, trial in trials.items():
        assert [r.final["accuracy"] for r in trial.runs] == [
            r.final["accuracy"] for r in sequential[nodeid].runs]


def test_after_an_item_called_fit_differently_later_items_lead_no_groups(pytester):
    pytester.makepyfile(test_epochs="""
        import pytest
        from pytest_hparams import MLP, digits, fit

        DATA = digits()

        @pytest.mark.hparams(batch_size=[32, 64], lr=[0.05, 0.001])
        def test_epochs(hparams):
            fit(lambda hp: MLP(64, 10, 16), DATA.train, DATA.val, hparams,
                epochs=2 if hparams.lr == 0.05 else 1)
    """)
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=4)
    notes = _notes(trials)
    assert "trained again by itself" in notes["test_epochs.py::test_epochs[batch_size=32-lr=0.001]"]
    later = notes["test_epochs.py::test_epochs[batch_size=64-lr=0.05]"]
    assert "1 configuration × 1 seed" in later
    assert "an earlier item of this test did not call fit as its leader did" in later


def test_keys_the_leader_cannot_see_used_split_the_group(pytester):
    pytester.makepyfile(test_noise="""
        import pytest, torch
        from pytest_hparams import MLP, digits, fit

        DATA = digits()

        @pytest.mark.hparams(lr=[1e-3, 1e-2], noise=[0.0, 0.5], epochs=1)
        def test_noise(hparams):
            inputs, labels = DATA.train
            noisy = inputs + hparams.noise * torch.randn(inputs.shape,
                                                         generator=torch.Generator().manual_seed(0))
            fit(lambda hp: MLP(64, 10, 16), (noisy, labels), DATA.val, hparams)
    """)
    outcome, trials = _run(pytester, "-v")
    outcome.assert_outcomes(passed=4)
    notes = _notes(trials)
    assert "it differs in 'noise', which fit does not batch and the model factory does not read" \
        in notes["test_noise.py::test_noise[lr=0.001-noise=0.5]"]
    assert "2 configurations × 1 seed" in notes["test_noise.py::test_noise[lr=0.01-noise=0.5]"]


def test_a_factory_reading_hparams_from_its_closure_trains_alone(pytester):
    _grid(pytester, "    fit(lambda: model(hparams), DATA.train, DATA.val, hparams)\n")
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=6)
    for note in _notes(trials).values():
        assert "1 configuration × 2 seeds" in note
        assert "the model reads hparams from its closure" in note


def test_vectorize_false_in_the_marker_trains_one_by_one(pytester):
    _grid(pytester, options=", vectorize=False")
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=6)
    assert all(t.notes == ["one by one: vectorised training is off (vectorize=False, or "
                           "--hparams-no-vectorize)"] for t in trials.values())


def test_a_vectorize_option_that_is_not_a_bool_is_a_collection_error(pytester):
    _grid(pytester, options=", vectorize='no'")
    outcome = pytester.runpytest()
    outcome.assert_outcomes(errors=1)
    outcome.stdout.fnmatch_lines(["*test_grid.py::test_grid: hparams key 'vectorize': must be "
                                  "True or False*got 'no'*"])
    assert "INTERNALERROR" not in outcome.stdout.str()


def test_a_bad_memory_budget_is_a_usage_error(pytester):
    _grid(pytester)
    outcome = pytester.runpytest("--hparams-vectorize-memory=lots")
    outcome.stderr.fnmatch_lines(["*hparams_vectorize_memory: 'lots' is not a size*"])
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR


def test_skipped_items_are_not_trained_by_the_leader(pytester):
    _grid(pytester, options=", marks=lambda hp: pytest.mark.skip('no') if hp.lr == 0.05 else []")
    outcome, trials = _run(pytester)
    outcome.assert_outcomes(passed=4, skipped=2)
    assert "8 runs (4 configurations × 2 seeds)" in _notes(trials)[
        "test_grid.py::test_grid[lr=0.001-dropout=0.1]"]


def test_a_sweep_inside_a_test_is_vectorised(pytester):
    pytester.makepyfile(test_sweep="""
        from pytest_hparams import MLP, digits, sweep

        DATA = digits()

        def test_sweep():
            rows = sweep(lambda hp: MLP(64, 10, 16), DATA.train, DATA.val, epochs=1,
                         space={"lr": [1e-3, 1e-2, 1e-1], "seeds": 2})
            assert all("6 runs (3 configurations × 2 seeds)" in r.notes[0] for r in rows)
    """)
    outcome = pytester.runpytest()
    outcome.assert_outcomes(passed=1)
