"""pytest-xdist: one table and one results file from every worker, vectorised stacks dealt to
the workers in chunks under every --dist mode, devices dealt round-robin to the workers, and
torch thread budgets so that workers do not oversubscribe the CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from pytest_hparams.devices import cpu_cores, thread_budget


@pytest.fixture(autouse=True)
def _not_inside_a_worker(monkeypatch):
    """Under an outer ``pytest -n``, this process is an xdist worker: its variables would tell
    the runs made here (and their conftests) that they are workers too."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)

GRID = """
import pytest
import torch
from pytest_hparams import fit, sweep

torch.manual_seed(0)
X = torch.randn(48, 4)
Y = (X[:, 0] - X[:, 1] > 0).long()


def model(width):
    return lambda: torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(),
                                       torch.nn.Linear(width, 2))


@pytest.mark.hparams(lr=[0.01, 0.1, 0.3], width=[2, 4, 8, 16], seeds=2, epochs=2)
def test_grid(hparams):
    fit(model(hparams.width), (X, Y), None, hparams)


@pytest.mark.hparams(lr=[0.1, 1e6], optimizer="sgd", epochs=2, xfail=lambda h: h.lr > 1)
def test_xfail(hparams):
    assert fit(model(4), (X, Y), None, hparams).status == "ok"


@pytest.mark.hparams(lr=[0.1], device="cuda:7", skip_unavailable=True)
def test_skipped(hparams):
    pass


@pytest.mark.hparams(width=[4, 0], epochs=1)
def test_error(hparams):
    def build():
        if hparams.width == 0:
            raise ValueError("width must be positive")
        return model(hparams.width)()
    fit(build, (X, Y), None, hparams)


def test_sweep():
    sweep(model(4), (X, Y), None, space={"lr": [0.05, 0.5], "seeds": 2}, epochs=2)
"""

GRID_IDS = [f"lr={lr}-width={w}" for lr in ("0.01", "0.1", "0.3") for w in (2, 4, 8, 16)]


def _run(pytester: pytest.Pytester, *args: str, subprocess: bool = False
         ) -> tuple[pytest.RunResult, list[dict]]:
    run = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    result = run("--hparams-json", "run.json", *args)
    trials = json.loads((pytester.path / "run.json").read_text())["trials"]
    return result, trials


def _comparable(trial: dict) -> dict:
    """What must not depend on how many processes ran the trial."""
    runs = [{k: run[k] for k in ("seed", "status", "reason", "final", "epochs")}
            | {"history": [{k: v for k, v in row.items() if k != "seconds"}
                           for row in run["history"]]}
            for run in trial["runs"]]
    return {"nodeid": trial["nodeid"], "status": trial["status"], "outcome": trial["outcome"],
            "hparams": trial["hparams"], "device": trial["device"], "runs": runs}


def _table_ids(output: str, test: str) -> list[str]:
    """The rows of one test's table, as lr-width ids."""
    table = output.split(f"\n{test}\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.lstrip(" *").split() for line in table.splitlines()[4:]]
    return [f"lr={row[0]}-width={row[1]}" for row in rows if len(row) > 2 and row[0][0].isdigit()]


def test_every_trial_reaches_the_controller_once_exactly_as_without_xdist(pytester):
    pytester.makepyfile(test_grid=GRID)
    alone, alone_trials = _run(pytester, "--hparams-threads", "1")
    spread, spread_trials = _run(pytester, "-n", "2", "--hparams-threads", "1")
    spread.stdout.fnmatch_lines(["hparams: torch *, 2 xdist workers, device cpu, "
                                 "1 torch thread per worker"])
    for result in (alone, spread):
        result.assert_outcomes(passed=15, failed=1, skipped=1, xfailed=1)
        assert result.stdout.str().count("hyperparameter comparison") == 1
        assert _table_ids(result.stdout.str(), "test_grid.py::test_grid") == GRID_IDS
    nodeids = [t["nodeid"] for t in spread_trials]
    assert len(nodeids) == len(set(nodeids)) == 12 + 2 + 1 + 2 + 2
    assert nodeids[:12] == [f"test_grid.py::test_grid[{i}]" for i in GRID_IDS]
    assert {t["worker"] for t in spread_trials} == {"gw0", "gw1"}
    assert {t["worker"] for t in alone_trials} == {""}
    # The same trials, in the same order, with the same metrics to the last bit.
    assert [_comparable(t) for t in spread_trials] == [_comparable(t) for t in alone_trials]
    outcomes = {t["nodeid"].split("::", 1)[1]: (t["outcome"], t["status"]) for t in spread_trials}
    assert outcomes["test_xfail[lr=1e+06]"] == ("xfailed", "diverged")
    assert outcomes["test_skipped[lr=0.1]"] == ("skipped", "no runs")
    assert outcomes["test_error[width=0]"] == ("failed", "error")
    assert outcomes["test_sweep::lr=0.05"] == outcomes["test_sweep::lr=0.5"] == ("passed", "ok")


def test_the_remote_form_with_popen_gateways_reports_every_trial(pytester):
    # As on other hosts: an interpreter named in the spec, the tests rsynced to a directory
    # of the gateway's own; the results still come back to this process's files.
    pytester.makepyfile(test_grid=GRID)
    gateways = ["--dist", "load", "--tx", f"2*popen//python={sys.executable}",
                "--rsyncdir", str(pytester.path)]
    result, trials = _run(pytester, "-W", "ignore::DeprecationWarning", "-v", *gateways)
    result.assert_outcomes(passed=15, failed=1, skipped=1, xfailed=1)
    assert [t["nodeid"] for t in trials][:12] == [f"test_grid.py::test_grid[{i}]"
                                                  for i in GRID_IDS]
    assert len({t["nodeid"] for t in trials}) == len(trials) == 19
    assert {t["worker"] for t in trials} == {"gw0", "gw1"}
    # The chunks travelled through the gateways' channels too: 12 configurations × 2 seeds of
    # 28 runs in all, halved for two workers, each half on one of them.
    grid = [t for t in trials if t["test"] == "test_grid.py::test_grid"]
    chunks = _chunks(grid)
    assert sorted(chunks) == [f"xdist chunk {i}/2 of test_grid.py::test_grid: 6 configurations "
                              f"× 2 seeds" for i in (1, 2)]
    assert all(len({t["worker"] for t in chunk}) == 1 for chunk in chunks.values())
    result.stdout.fnmatch_lines(["scheduling tests via ChunkedLoadScheduling",
                                 "xdist chunk 1/2 of test_grid.py::test_grid: 6 configurations × "
                                 "2 seeds, on gw?: lr=0.01-width=2, lr=0.01-width=8, *"])


def _chunks(trials: list[dict]) -> dict[str, list[dict]]:
    """Trials by the xdist chunk their notes name."""
    found: dict[str, list[dict]] = {}
    for trial in trials:
        for note in trial["notes"]:
            if note.startswith("xdist chunk "):
                found.setdefault(note, []).append(trial)
    return found


# --------------------------------------------------------------------------- chunks per mode

CHUNKED = """
import pytest
import torch
from pytest_hparams import fit

torch.manual_seed(0)
X = torch.randn(48, 4)
Y = (X[:, 0] - X[:, 1] > 0).long()


def model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


@pytest.mark.hparams(lr=[round(0.01 * 1.5 ** i, 6) for i in range(16)], seeds=2, epochs=2)
def test_lrs(hparams):
    fit(model, (X, Y), None, hparams)
    assert hparams.lr < 1.0, "a rate this large is refused"


@pytest.mark.hparams(lr=[0.1, 0.3], epochs=2, vectorize=False)
def test_apart(hparams):
    fit(model, (X, Y), None, hparams)


def test_plain():
    pass
"""
LRS = [round(0.01 * 1.5 ** i, 6) for i in range(16)]


@pytest.fixture(scope="module")
def chunked_alone(tmp_path_factory) -> list[dict]:
    """The trials of CHUNKED from one process without xdist (run once for the module)."""
    folder = tmp_path_factory.mktemp("chunked")
    (folder / "test_chunked.py").write_text(CHUNKED)
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("PYTEST_XDIST_")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--hparams-json", "run.json", "--hparams-threads", "1"],
                          cwd=folder, capture_output=True, text=True, env=environment)
    assert done.returncode == 1, done.stdout + done.stderr  # the refused rates fail
    return json.loads((folder / "run.json").read_text())["trials"]


@pytest.mark.parametrize("mode", ["load", "loadscope", "loadfile", "loadgroup", "worksteal"])
def test_each_worker_vectorises_a_chunk_of_the_stack_whatever_the_dist_mode(
        pytester, chunked_alone, mode):
    pytester.makepyfile(test_chunked=CHUNKED)
    result, trials = _run(pytester, "-n", "2", "--dist", mode, "-v", "--hparams-threads", "1")
    result.assert_outcomes(passed=15, failed=4)
    scheduler = {"loadscope": "LoadScope", "loadfile": "LoadFile", "loadgroup": "LoadGroup",
                 "worksteal": "WorkStealing"}.get(mode, "Load")
    result.stdout.fnmatch_lines([f"scheduling tests via Chunked{scheduler}Scheduling"])
    # Node ids, order and every metric as in one process without xdist.
    assert [_comparable(t) for t in trials] == [_comparable(t) for t in chunked_alone]
    lrs = [t for t in trials if t["test"] == "test_chunked.py::test_lrs"]
    chunks = _chunks(lrs)
    assert sorted(chunks) == [f"xdist chunk {i}/2 of test_chunked.py::test_lrs: 8 "
                              f"configurations × 2 seeds" for i in (1, 2)]
    workers = [{t["worker"] for t in chunk} for chunk in chunks.values()]
    assert workers in ([{"gw0"}, {"gw1"}], [{"gw1"}, {"gw0"}])
    # Each worker trained its chunk as one stack: 8 configurations × 2 seeds, dealt
    # round-robin, so each chunk spans the rates.
    for chunk in chunks.values():
        assert {t["hparams"]["lr"] for t in chunk} in (set(LRS[0::2]), set(LRS[1::2]))
        for trial in chunk:
            assert any(note.startswith("vectorised: 16 runs (8 configurations × 2 seeds) "
                                       "trained together") for note in trial["notes"])
    # Everything else is scheduled as the mode says, each non-vectorising item by itself.
    apart = [t for t in trials if t["test"] == "test_chunked.py::test_apart"]
    assert len(apart) == 2 and not _chunks(apart)
    result.stdout.fnmatch_lines([
        "xdist chunk 1/2 of test_chunked.py::test_lrs: 8 configurations × 2 seeds, on gw?: "
        "lr=0.01, lr=0.0225, lr=0.050625, *"])


def test_lf_k_and_a_plain_run_give_each_configuration_the_numbers_of_a_full_xdist_run(pytester):
    pytester.makepyfile(test_chunked=CHUNKED)
    full, full_trials = _run(pytester, "-n", "2", "--hparams-threads", "1")
    full.assert_outcomes(passed=15, failed=4)
    by_id = {t["nodeid"]: _comparable(t) for t in full_trials}
    failed = [t["nodeid"] for t in full_trials if t["outcome"] == "failed"]
    assert len(failed) == 4
    # --lf reruns the four refused rates: one chunk now, numbers unchanged.
    again, again_trials = _run(pytester, "-n", "2", "--lf", "--hparams-threads", "1")
    again.assert_outcomes(failed=4)
    assert [t["nodeid"] for t in again_trials] == failed
    assert [_comparable(t) for t in again_trials] == [by_id[n] for n in failed]
    # -k picks three rates, and a plain run trains all of them in one stack: the same numbers.
    for args, count in ((["-n", "2", "-k", "0.0225 or 0.03375 or 0.170859"], 3),
                        (["-p", "no:xdist"], 18)):
        _, run_trials = _run(pytester, *args, "-p", "no:cacheprovider", "--hparams-threads", "1")
        assert len(run_trials) == count
        assert all(_comparable(t) == by_id[t["nodeid"]] for t in run_trials)


@pytest.mark.parametrize("how", ["off", "another-scheduler"])
def test_without_chunks_each_item_trains_its_own_seeds_under_dist_load(pytester, how):
    pytester.makepyfile(test_chunked=CHUNKED)
    if how == "another-scheduler":  # called before ours: workers are not told to name chunks
        pytester.makeconftest("import pytest\nfrom xdist.scheduler import LoadScheduling\n\n"
                              "@pytest.hookimpl(tryfirst=True)\n"
                              "def pytest_xdist_make_scheduler(config, log):\n"
                              "    return LoadScheduling(config, log)\n")
    args = ["--hparams-xdist-min-chunk", "off"] if how == "off" else []
    result, trials = _run(pytester, "-n", "2", "-v", "-k", "test_lrs", *args)
    result.assert_outcomes(passed=12, failed=4)
    result.stdout.fnmatch_lines(["scheduling tests via LoadScheduling"])
    assert not _chunks(trials)
    for trial in trials:
        assert ("vectorised: other configurations train apart: pytest-xdist --dist load without "
                "pytest-hparams' xdist chunks (--hparams-xdist-min-chunk off, or another "
                "plugin's scheduler) may send the items of one test to different workers"
                ) in trial["notes"]


@pytest.mark.parametrize("value", ["0", "many", "-3"])
def test_a_bad_minimum_chunk_is_a_usage_error(pytester, value):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(f"--hparams-xdist-min-chunk={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--hparams-xdist-min-chunk / hparams_xdist_min_chunk: "
                                 f"'{value}' is neither a number of runs (1 or more) nor off"])


# --------------------------------------------------------------------------- devices per worker

# Only ever in a process of its own (runpytest_subprocess): it patches torch for good.
FAKE_GPUS = """
import torch

# Two CUDA devices as far as device choice can tell; tests record metrics without using them.
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 2
torch.cuda.get_device_name = lambda device=None: "Fake GPU"
"""

OWN_LOOP = """
import os
import pytest
import torch

@pytest.mark.hparams(n=list(range(8)), seeds=2)
def test_loop(hparams, hparams_device, hparams_trial):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert str(hparams_device) == {"gw0": "cuda:0", "gw1": "cuda:1"}[worker]
    for run in hparams_trial.runs():
        run.log_epoch(loss=1.0 / (hparams.n + 1), accuracy=0.5)
"""


def test_each_worker_trains_on_its_own_device_and_the_results_say_which(pytester):
    pytester.makeconftest(FAKE_GPUS)
    pytester.makepyfile(test_loop=OWN_LOOP)
    result, trials = _run(pytester, "-n", "2", "--hparams-devices", "cuda:0,cuda:1",
                          subprocess=True)
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines([
        "hparams: torch *, 2 xdist workers, devices gw0 cuda:0, gw1 cuda:1, *",
        "*8 configurations × 2 seeds, on cuda:0, cuda:1*",
    ])
    dealt = {"gw0": "cuda:0", "gw1": "cuda:1"}
    assert {t["worker"] for t in trials} == set(dealt)
    table = result.stdout.str().split("hyperparameter comparison")[1].splitlines()
    for trial in trials:
        assert trial["device"] == dealt[trial["worker"]]
        assert [run["device"] for run in trial["runs"]] == [dealt[trial["worker"]]] * 2
        # The table's device column says which device ran each row.
        n = trial["hparams"]["n"]
        (row,) = [line for line in table if line.lstrip(" *").startswith(f"{n} ")]
        assert f" {trial['device']} " in row


def test_a_worker_whose_device_is_missing_fails_its_tests_with_the_reason(pytester):
    # The controller sees two GPUs, its workers none: as with workers on other hosts.
    pytester.makeconftest("import os\nif not os.environ.get('PYTEST_XDIST_WORKER'):\n"
                          + "\n".join("    " + line for line in FAKE_GPUS.splitlines()))
    pytester.makepyfile(test_loop=OWN_LOOP)
    result, trials = _run(pytester, "-n", "2", "--hparams-devices", "cuda:0,cuda:1",
                          subprocess=True)
    result.assert_outcomes(errors=8)
    result.stdout.fnmatch_lines([
        "--hparams-devices on xdist worker gw?: device 'cuda:?' is not available: *",
    ])
    assert "INTERNALERROR" not in result.stdout.str()
    assert "crashed" not in result.stdout.str()
    assert len(trials) == 8
    assert all(t["outcome"] == "error" and "is not available" in t["message"] for t in trials)


def test_devices_without_xdist_are_those_of_worker_zero(pytester):
    pytester.makeconftest(FAKE_GPUS)
    pytester.makepyfile("def test_device(hparams_device):\n"
                        "    assert str(hparams_device) == 'cuda:1'\n")
    result = pytester.runpytest_subprocess("--hparams-devices", "cuda:1,cuda:0")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(("args", "message"), [
    (["--hparams-devices", "cuda:0", "--hparams-device", "cpu"],
     "*--hparams-device and --hparams-devices both given*"),
    (["--hparams-devices", "cuda:0,cuda:1"],
     "*--hparams-devices: device 'cuda:0' is not available: *"),
    (["--hparams-devices", "cpu,,cpu"], "*--hparams-devices: 'cpu,,cpu' is not a list of devices*"),
    (["--hparams-devices", "tpu:0"], "*--hparams-devices: unknown device 'tpu:0'*"),
    (["--hparams-threads", "0"], "*--hparams-threads: '0' is not a thread count*"),
    (["--hparams-threads", "many"], "*--hparams-threads: 'many' is not a thread count*"),
])
def test_bad_device_and_thread_options_are_usage_errors(pytester, args, message):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


# --------------------------------------------------------------------------- thread budgets

THREADS = """
import torch
from pytest_hparams.devices import thread_budget

def test_threads(request):
    expected = request.config.getoption("expected")
    expected = thread_budget(2) if expected == "budget" else int(expected)
    assert torch.get_num_threads() == expected
"""

CONFTEST_THREADS = """
import torch

TORCH_DEFAULT = torch.get_num_threads()  # before the plugin configures anything

def pytest_addoption(parser):
    parser.addoption("--expected")

def pytest_configure(config):
    if config.getoption("expected") == "default":
        config.option.expected = str(TORCH_DEFAULT)


def pytest_report_header(config):
    import pytest_hparams.devices as devices

    if config.getoption("expected") == "auto":
        # what the plugin's auto policy chooses for this machine's load right now
        busy = devices.busy_cores()
        threads, _ = devices.torch_threads("auto", 1, TORCH_DEFAULT, busy)
        config.option.expected = str(threads or TORCH_DEFAULT)
"""


def test_xdist_workers_share_the_cores_and_the_header_says_how(pytester):
    pytester.makeconftest(CONFTEST_THREADS)
    pytester.makepyfile(test_threads=THREADS)
    result = pytester.runpytest("--expected", "budget", "-n", "2", "--hparams-device", "cpu")
    result.assert_outcomes(passed=1)
    budget = thread_budget(2)
    result.stdout.fnmatch_lines([
        f"hparams: torch *, 2 xdist workers, device cpu, {budget} torch thread"
        f"{'s' if budget != 1 else ''} per worker ({cpu_cores()} cores ÷ 2 local workers)"])


@pytest.mark.parametrize(("args", "expected"), [([], "auto"), (["--hparams-threads", "1"], "1"),
                                                (["--hparams-threads", "off"], "default")],
                         ids=["auto", "one", "off"])
def test_a_lone_process_sets_the_threads_its_header_names(pytester, args, expected):
    pytester.makeconftest(CONFTEST_THREADS)
    pytester.makepyfile(test_threads=THREADS)
    # In a process of its own: the thread count is process-wide.
    result = pytester.runpytest_subprocess("--expected", expected, *args)
    result.assert_outcomes(passed=1)
    said = {"1": "1 torch thread (--hparams-threads)",
            "default": "* torch thread* (torch's default, --hparams-threads off)",
            "auto": "* torch thread* (*load average * on * cores*)"}[expected]
    result.stdout.fnmatch_lines([f"hparams: device *, torch *, {said}"])


def test_header_without_xdist_is_unchanged(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--hparams-device", "cpu")
    result.stdout.fnmatch_lines(["hparams: device cpu, torch *, * torch thread* (*)"])
    assert not re.search(r"xdist workers", result.stdout.str())



def test_the_controller_writes_every_file_without_importing_torch(pytester):
    """It trains nothing: the files name the devices its workers trained on and the torch
    build read from torch's version file, and it never pays for importing torch."""
    pytester.makepyfile(test_grid=GRID)
    pytester.makeconftest("""
import sys

def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        with open("controller.txt", "w") as file:
            file.write(str("torch" in sys.modules))
""")
    result, trials = _run(pytester, "-n", "2", "--hparams-threads", "1", "--hparams-save=x",
                          subprocess=True)
    result.assert_outcomes(passed=15, failed=1, skipped=1, xfailed=1)
    assert (pytester.path / "controller.txt").read_text() == "False"
    import torch

    saved = json.loads(next((pytester.path / ".hparams").rglob("*_x.json")).read_text())
    assert saved["environment"]["torch"] == torch.__version__
    assert saved["environment"]["cuda"] == torch.version.cuda
    assert saved["device"] == "cpu"
    assert {t["device"] for t in trials} == {"cpu"}
