"""The plugin end to end, the way pytest plugins test themselves: pytester runs example files."""

import json

import pytest

from tests.conftest import written_trials

HEADER = """
import pytest
import torch
from pytest_hparams import fit, log_uniform, choice

torch.manual_seed(0)
X = torch.randn(96, 4)
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
DATA = (X[:64], Y[:64])
VAL = (X[64:], Y[64:])

def model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
"""


@pytest.fixture
def example(pytester):
    def make(body: str, name: str = "test_example"):
        return pytester.makepyfile(**{name: HEADER + body})

    return make


# --------------------------------------------------------------------------- collection


def test_grid_ids_and_counts_with_collect_only(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.001, 0.01, 0.1], optimizer=["sgd", "adam"], seeds=3)
def test_optimizer(hparams):
    pass
"""
    )
    result = pytester.runpytest("--co", "-q")
    result.stdout.fnmatch_lines([
        "test_example.py::test_optimizer[[]lr=0.001-optimizer=sgd[]]",
        "test_example.py::test_optimizer[[]lr=0.001-optimizer=adam[]]",
        "test_example.py::test_optimizer[[]lr=0.1-optimizer=adam[]]",
        "6 tests collected*",
    ])


def test_parametrize_arguments_are_columns_so_that_rows_never_look_alike(pytester, example):
    example(
        """
@pytest.mark.parametrize("width", [4, 8])
@pytest.mark.hparams(lr=[0.05, 0.1], epochs=2, seeds=2)
def test_width(hparams, width):
    net = lambda: torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(),
                                      torch.nn.Linear(width, 2))
    fit(net, DATA, VAL, hparams)
"""
    )
    result = pytester.runpytest("--hparams-csv", "out.csv", "--hparams-json", "run.json")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*lr*width*accuracy*", "*0.05*4*passed", "*0.05*8*passed",
                                 "*0.1*4*passed", "*0.1*8*passed"])
    header, *rows = (pytester.path / "out.csv").read_text().splitlines()
    assert "width" in header.split(",") and len(rows) == 4
    trial = written_trials(pytester.path / "run.json")[0]
    assert trial["axes"] == ["lr", "width"] and trial["labels"] == {"width": "4"}
    assert trial["hparams"] == {"lr": 0.05, "epochs": 2}  # the marker's, as before


def test_k_selects_by_value_and_a_node_id_selects_one_configuration(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.001, 0.01], optimizer=["sgd", "adam"])
def test_optimizer(hparams):
    assert hparams.lr and hparams.optimizer
"""
    )
    pytester.runpytest("-k", "adam and 0.01").assert_outcomes(passed=1)
    one = "test_example.py::test_optimizer[lr=0.001-optimizer=sgd]"
    pytester.runpytest(one).assert_outcomes(passed=1)


def test_last_failed_reruns_only_the_failing_configuration(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.001, 0.01, 0.1])
def test_lr(hparams):
    assert hparams.lr != 0.01
"""
    )
    pytester.runpytest().assert_outcomes(passed=2, failed=1)
    result = pytester.runpytest("--lf", "-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_lr?lr=0.01? FAILED*"])


def test_coexists_with_parametrize_and_class_markers(pytester, example):
    example(
        """
@pytest.mark.hparams(width=[8, 16], seeds=2)
class TestModel:
    @pytest.mark.parametrize("n", [1, 2])
    def test_a(self, hparams, n):
        assert hparams.width in (8, 16) and hparams.seeds == (0, 1)

    @pytest.mark.hparams(width=[32], depth=[1, 2])
    def test_b(self, hparams):
        assert hparams.width == 32 and hparams.depth  # the closest marker wins
"""
    )
    result = pytester.runpytest("--co", "-q")
    result.stdout.fnmatch_lines([
        "*TestModel::test_a[[]width=8-1[]]",
        "*TestModel::test_b[[]width=32-depth=2[]]",
        "6 tests collected*",
    ])
    pytester.runpytest().assert_outcomes(passed=6)


def test_fixture_gives_read_only_hyperparameters(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.1], epochs=3, seeds=[5, 6])
def test_read(hparams):
    assert hparams.lr == hparams["lr"] == hparams.get("lr") == 0.1
    assert hparams.get("missing", 7) == 7
    assert dict(hparams) == {"lr": 0.1, "epochs": 3}
    assert hparams.seeds == (5, 6) and hparams.id == "lr=0.1"
    with pytest.raises(AttributeError, match="read-only"):
        hparams.lr = 1
    with pytest.raises(AttributeError, match="has no 'width'"):
        hparams.width
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("lr=[]", "hparams key 'lr': the list is empty"),
        ("sample=8, lr=log_uniform(1e-4, 1e-1)", "hparams key 'sample': * did you mean samples=8?"),
        ("lr=log_uniform(0, 1), samples=3", "hparams key 'lr': log_uniform needs bounds > 0*"),
        ("seeds=2.5", "hparams key 'seeds': *got 2.5"),
        ("a=[1, 2], where=lambda hp: hp.a > 5", "hparams key 'where': the constraint removes*"),
        ("device='cuda:7'", "hparams key 'device': device 'cuda:7' is not available*"),
    ],
)
def test_bad_spaces_are_collection_errors_naming_test_and_key(pytester, example, marker, message):
    example(
        f"""
@pytest.mark.hparams({marker})
def test_bad(hparams):
    pass

def test_other():
    pass
"""
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines([f"*test_example.py::test_bad: {message}*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*During handling of the above exception*")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest's convention for collection errors


def test_marker_device_can_skip_when_unavailable(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.1], device="cuda:7", skip_unavailable=True)
def test_gpu(hparams_device):
    pass
"""
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*device 'cuda:7' is not available*"])


def test_unavailable_command_line_device_is_a_usage_error(pytester, example):
    example("def test_x():\n    pass\n")
    result = pytester.runpytest("--hparams-device", "cuda:3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hparams-device: device 'cuda:3' is not available*"])
    result = pytester.runpytest("--hparams-device", "tpu")
    result.stderr.fnmatch_lines(["*unknown device 'tpu': use auto, cpu, cuda, cuda:N or mps*"])


def test_device_fixture_and_report_header(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.1])
def test_device(hparams_device):
    assert hparams_device == torch.device("cpu")
"""
    )
    result = pytester.runpytest("--hparams-device", "cpu")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["hparams: device cpu, torch *, * torch thread* (*)"])


# --------------------------------------------------------------------------- running and reporting


def test_table_shows_varied_hyperparameters_metrics_and_best_row(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[1e-4, 0.05], optimizer=["sgd", "adam"], seeds=2, epochs=8)
def test_fit(hparams):
    fit(model, DATA, VAL, hparams, target={"accuracy": 0.8})
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=4)
    lines = result.stdout.lines
    start = lines.index(next(line for line in lines if "hyperparameter comparison" in line))
    table = lines[start + 1:]
    assert table[0] == "test_example.py::test_fit"
    assert table[1] == "4 configurations × 2 seeds, target accuracy >= 0.8, on cpu"
    table = table[1:]
    header = table[1]
    for column in ("lr", "optimizer", "accuracy", "loss", "epochs", "wall s", "status"):
        assert column in header
    assert "epochs" not in header.split("optimizer")[0]  # epochs is fixed, not a column
    rows = [line for line in table[4:8]]
    assert sum(row.startswith("*") for row in rows) == 1
    assert all(" ± " in row and "passed" in row for row in rows)
    assert all(len(line) <= 100 for line in table[:9])
    result.stdout.fnmatch_lines(["* best accuracy (mean over seeds)"])


def test_a_dict_axis_shows_its_names_in_ids_tables_files_and_comparisons(pytester, example):
    example(
        """
SETUPS = {"fast": ("adam", 0.05), "slow": ("sgd", 0.01)}

@pytest.mark.hparams(setup=SETUPS, seeds=2, epochs=3)
def test_fit(hparams):
    optimizer, lr = hparams.setup
    fit(model, DATA, VAL, hparams, optimizer=optimizer, lr=lr)
"""
    )
    result = pytester.runpytest("--hparams-json=run.json", "--hparams-csv=run.csv",
                                "--hparams-save=main")
    result.assert_outcomes(passed=2)
    rows = [line for line in result.stdout.lines if "passed" in line and "±" in line]
    assert [row.split()[1 if row.startswith("*") else 0] for row in rows] == ["fast", "slow"]
    trials = written_trials(pytester.path / "run.json")
    assert [t["labels"] for t in trials] == [{"setup": "fast"}, {"setup": "slow"}]
    assert trials[0]["hparams"]["setup"] == ["adam", 0.05]  # the value itself stays data
    assert "\nfast," not in (pytester.path / "run.csv").read_text()
    assert [line.split(",")[3] for line in
            (pytester.path / "run.csv").read_text().splitlines()[1:]] == ["fast", "slow"]
    compared = pytester.runpytest("--hparams-compare=main", "--hparams-no-table")
    compared.assert_outcomes(passed=2)
    compared.stdout.fnmatch_lines(["fast *unchanged*", "slow *unchanged*"])


def test_json_csv_and_markdown_files(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.01, 0.1], seeds=2, epochs=3)
def test_fit(hparams):
    fit(model, DATA, VAL, hparams)
"""
    )
    result = pytester.runpytest("--hparams-json", "out/run.json", "--hparams-csv", "run.csv",
                                "--hparams-markdown", "run.md")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["hparams: wrote out/run.json"])
    document = json.loads((pytester.path / "out" / "run.json").read_text())
    assert document["schema"] == "pytest-hparams/run" and document["version"] == 1
    assert {"machine_info", "commit_info", "torch"} <= set(document["environment"])
    trial = document["trials"][0]
    assert trial["nodeid"] == "test_example.py::test_fit[lr=0.01]"
    assert trial["test"] == "test_example.py::test_fit"
    assert trial["hparams"] == {"lr": 0.01, "epochs": 3}
    assert trial["seeds"] == [0, 1] and trial["status"] == "ok" and trial["outcome"] == "passed"
    assert set(trial["metrics"]["accuracy"]) == {"mean", "std", "min", "max", "ci95", "n",
                                                 "values"}
    run = trial["runs"][0]
    assert run["seed"] == 0 and run["epochs"] == 3 and len(run["history"]) == 3
    assert set(run["history"][0]) == {"epoch", "seconds", "train_loss", "loss", "accuracy", "lr"}
    assert set(run["final"]) == {"train_loss", "loss", "accuracy"}
    csv = (pytester.path / "run.csv").read_text().splitlines()
    assert csv[0].startswith("test,nodeid,id,lr,epochs,")
    assert len(csv) == 3
    markdown = (pytester.path / "run.md").read_text()
    assert "### test_example.py::test_fit\n\n2 configurations × 2 seeds" in markdown
    assert "| lr " in markdown


def test_results_frame_reads_the_json(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.01, 0.1], seeds=2, epochs=2)
def test_fit(hparams):
    fit(model, DATA, VAL, hparams)
"""
    )
    pytester.runpytest("--hparams-json", "run.json").assert_outcomes(passed=2)
    from pytest_hparams import results_frame

    frame = results_frame(pytester.path / "run.json")
    assert list(frame["lr"]) == [0.01, 0.1]
    assert {"accuracy", "accuracy_std", "loss", "wall_seconds", "status"} <= set(frame.columns)
    assert frame["accuracy"].between(0, 1).all()


def test_expectation_failure_names_configuration_metric_value_and_requirement(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[1e-5, 0.05], seeds=2, epochs=5, expect={"accuracy": ">=0.75"})
def test_fit(hparams):
    fit(model, DATA, VAL, hparams, optimizer="adam")
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_example.py::test_fit[[]lr=1e-05[]]: expected accuracy >= 0.75, got 0.* ± *"
        "(mean of 2 seeds: 0.*, 0.*)",
    ])


def test_expectation_on_a_metric_never_recorded(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.05], epochs=1, expect={"f1": 0.5})
def test_fit(hparams):
    fit(model, DATA, VAL, hparams)
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expect names 'f1', which no run recorded (recorded: *accuracy*"])


def test_a_diverged_trial_is_recorded_and_shown_and_others_still_run(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.05, 1e6], optimizer="sgd", seeds=2, epochs=5)
def test_fit(hparams):
    result = fit(model, DATA, VAL, hparams)
    assert result.status == "ok"
"""
    )
    result = pytester.runpytest("--hparams-json", "run.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*- hparams lr=1e+06 -*",
        "seed 0: diverged: *loss became * at epoch *; seed 1: diverged*",
        "*1e+06 * failed, diverged [[]1[]]*",
        "[[]1[]] seed 0: diverged: *loss became * at epoch *; seed 1: diverged*",
    ])
    trial = written_trials(pytester.path / "run.json")[1]
    assert trial["status"] == "diverged"
    assert trial["runs"][0]["final"]["loss"] is None  # NaN/inf is written as null
    assert trial["runs"][0]["epochs"] < 5  # stopped at once


def test_an_exception_in_one_configuration_fails_only_that_item(pytester, example):
    example(
        """
@pytest.mark.hparams(width=[8, 0])
def test_fit(hparams):
    def build():
        if hparams.width == 0:
            raise ValueError("width must be positive")
        return model()
    fit(build, DATA, VAL, hparams, epochs=1)
"""
    )
    result = pytester.runpytest("--hparams-json", "run.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*- hparams width=0 -*",
        "seed 0: error: ValueError: width must be positive",
        "*0 * failed, error [[]1[]]",
    ])
    trials = written_trials(pytester.path / "run.json")
    assert [t["status"] for t in trials] == ["ok", "error"]


def test_a_configuration_declared_xfail_still_shows_in_the_table(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.05, 1e6], optimizer="sgd", epochs=3,
                     xfail=lambda hp: hp.lr > 1 and "this learning rate diverges")
def test_fit(hparams):
    assert fit(model, DATA, VAL, hparams).status == "ok"
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*1e+06 * xfailed, diverged [[]1[]]*"])


def test_own_training_loop_records_through_the_trial_fixture(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.1, 0.2], seeds=3, expect={"accuracy": ">=0.5"})
def test_loop(hparams, hparams_trial):
    assert hparams.lr > 0  # a real loop would train with it
    for run in hparams_trial.runs(target={"accuracy": 0.6}):
        for epoch in range(5):
            acc = 0.45 + 0.1 * epoch + 0.04 * run.seed
            if run.log_epoch(loss=1 - acc, accuracy=acc):
                break
    result = hparams_trial.result
    assert [r.seed for r in result.runs] == [0, 1, 2]
    assert [r.epochs_to_target for r in result.runs] == [3, 3, 2]
"""
    )
    result = pytester.runpytest("--hparams-json", "run.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2.7 (3/3)*"])
    trial = written_trials(pytester.path / "run.json")[0]
    final = trial["runs"][0]["final"]
    assert final == {"loss": pytest.approx(0.35), "accuracy": pytest.approx(0.65)}


def test_own_loop_that_raises_midway_is_recorded_as_an_error(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.1], seeds=2)
def test_loop(hparams, hparams_trial):
    for run in hparams_trial.runs():
        run.log_epoch(loss=0.5, accuracy=0.5)
        if run.seed == 1:
            raise RuntimeError("data loader broke")
"""
    )
    result = pytester.runpytest("--hparams-json", "run.json")
    result.assert_outcomes(failed=1)
    trial = written_trials(pytester.path / "run.json")[0]
    assert [r["status"] for r in trial["runs"]] == ["ok", "error"]
    assert "RuntimeError: data loader broke" in trial["runs"][1]["reason"]


def test_sweep_inside_a_claim_test_gets_its_own_table(pytester, example):
    example(
        """
from pytest_hparams import sweep

def test_claim():
    results = sweep(model, DATA, VAL, space=dict(lr=[1e-5, 0.05], seeds=2, epochs=4))
    assert results[1].accuracy > results[0].accuracy
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "test_example.py::test_claim",
        "2 configurations × 2 seeds, on cpu",
        "*1e-05*passed*",
    ])


def test_tests_without_training_do_not_get_a_table(pytester, example):
    example("def test_plain():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*hyperparameter comparison*")


def test_same_seed_same_metrics_bit_for_bit_on_cpu(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.01, 0.1], optimizer=["sgd", "adam"], seeds=2, epochs=4,
                     batch_size=16)
def test_fit(hparams):
    fit(model, DATA, VAL, hparams, device="cpu")
"""
    )
    pytester.runpytest("--hparams-json", "a.json").assert_outcomes(passed=4)
    pytester.runpytest("--hparams-json", "b.json").assert_outcomes(passed=4)

    def metrics(name):
        trials = written_trials(pytester.path / name)
        return [[(r["final"], [h["loss"] for h in r["history"]]) for r in t["runs"]]
                for t in trials]

    assert metrics("a.json") == metrics("b.json")


def test_live_progress_is_drawn_when_asked_and_absent_in_logs(pytester, example):
    example(
        """
@pytest.mark.hparams(lr=[0.05], seeds=2, epochs=3)
def test_fit(hparams):
    fit(model, DATA, VAL, hparams)
"""
    )
    shown = pytester.runpytest("--hparams-progress", "on", "--strict-markers")
    shown.assert_outcomes(passed=1)
    assert "[lr=0.05 · seed 0 · epoch 1/3 · loss " in shown.stdout.str()
    quiet = pytester.runpytest()  # pytester's output is not a terminal
    assert "epoch 1/3" not in quiet.stdout.str()
