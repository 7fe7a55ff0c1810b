"""pytest hooks and options; the work is done by the modules they call."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import interrupts
from .devices import parse_threads
from .errors import HParamsError, HParamsWarning, SpaceError
from .gate.hooks import add_options as add_baseline_options
from .gate.hooks import configure as configure_baseline
from .hparams import HParams, observe
from .items import (
    PARAM,
    ItemSpec,
    item_device,
    item_reads,
    item_recorder,
    item_recorders,
    item_spec,
    misspelt_marker,
    records_trials,
    registered_markers,
    shadowing,
    uses_plugin,
)
from .marker import merge_markers, parse_marker
from .outputs import FINAL_NOTICE
from .placement import check_options, describe, device_chosen
from .recording import (
    TrialRecorder,
    crashed_trial,
    free_accelerator_memory,
    is_out_of_memory,
    recording_into,
    settle_sweep_rows,
)
from .session import SESSION_KEY, HParamsSession
from .sharing import add_options as add_sharing_options
from .sharing import configure as configure_sharing
from .sharing import sharing_for
from .space import DEFAULT_MAX_TRIALS
from .trial import TrialResult
from .xdist import ControllerHooks, is_worker, planned_workers, to_wire, worker_id

if TYPE_CHECKING:
    import torch

_REPORTED = pytest.StashKey[bool]()
_OUT_OF_MEMORY = pytest.StashKey[bool]()


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hparams", "hyperparameter tests (pytest-hparams)")
    group.addoption("--hparams-device", dest="hparams_device", metavar="DEVICE", default=None,
                    help="device to train on: auto (default; cuda, else mps, else cpu), cpu, "
                         "cuda, cuda:N or mps; ini: hparams_device")
    group.addoption("--hparams-devices", dest="hparams_devices", metavar="DEVICES", default=None,
                    help="deal devices to xdist workers round-robin by worker index: a list "
                         "such as cuda:0,cuda:1, or auto (every visible GPU)")
    group.addoption("--hparams-threads", dest="hparams_threads", metavar="N", default="auto",
                    type=_threads_option,
                    help="torch threads per process: auto (default; cores ÷ xdist workers on "
                         "the host, torch's default without xdist), N, or off (torch's default)")
    group.addoption("--hparams-json", dest="hparams_json", metavar="PATH", default=None,
                    help="write every trial (hyperparameters, seeds, metrics, history, status, "
                         "machine and commit) to PATH as versioned JSON, updated as trials finish")
    group.addoption("--hparams-csv", dest="hparams_csv", metavar="PATH", default=None,
                    help="write one row per configuration to PATH as CSV")
    group.addoption("--hparams-markdown", dest="hparams_markdown", metavar="PATH", default=None,
                    help="write the comparison tables to PATH as Markdown")
    group.addoption("--hparams-plot", dest="hparams_plot", metavar="DIR", default=None,
                    help="write each test's learning curves (accuracy and loss per epoch, a line "
                         "per configuration, mean over seeds) to DIR as PNG; needs matplotlib")
    group.addoption("--hparams-progress", dest="hparams_progress", default="auto",
                    choices=("auto", "on", "off"),
                    help="live epoch progress: auto (interactive terminals, not CI), on, off")
    group.addoption("--hparams-no-table", dest="hparams_no_table", action="store_true",
                    help="do not print the comparison tables")
    parser.addini("hparams_device", "default device for hparams tests (auto, cpu, cuda, cuda:N, "
                  "mps)", default="auto")
    parser.addini("hparams_max_trials", "the most configurations one test may expand to",
                  default=str(DEFAULT_MAX_TRIALS))
    add_sharing_options(group, parser)
    add_baseline_options(parser)


def _threads_option(text: str) -> int | str:
    try:
        return parse_threads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "hparams(**space): run the test once per configuration of a hyperparameter space "
        "(lists are grid axes, distributions are sampled; seeds=, samples=, expect=, where=)",
    )
    interrupts.install()  # SIGTERM stops a run as Ctrl-C does; results writes are shielded
    check_options(config)
    _max_trials(config)
    if config.getoption("hparams_plot") and not is_worker(config):
        try:
            from .plots import check_matplotlib

            check_matplotlib()
        except HParamsError as exc:
            raise pytest.UsageError(f"--hparams-plot: {exc}") from None
    session = HParamsSession(config)
    config.stash[SESSION_KEY] = session
    if device_chosen(config) or "torch" in sys.modules:
        session.place()  # a named device is checked at start-up; torch is loaded anyway
    config.pluginmanager.register(_SessionHooks(session), "hparams-session")
    configure_baseline(config, session)
    specs = planned_workers(config)
    if specs:
        config.pluginmanager.register(
            ControllerHooks(config, specs, session.set_collection_order),
            "hparams-xdist-controller")
    configure_sharing(config)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """From here on a Ctrl-C or SIGTERM cannot cut the results files or the report short."""
    interrupts.ending(FINAL_NOTICE)


def pytest_unconfigure(config: pytest.Config) -> None:
    interrupts.uninstall()


def _max_trials(config: pytest.Config) -> int:
    text = config.getini("hparams_max_trials")
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise pytest.UsageError(f"hparams_max_trials must be a positive integer, got {text!r}")
    return value


def pytest_report_header(config: pytest.Config) -> str:
    session = config.stash[SESSION_KEY]
    session.described_early = session.placement is not None
    return f"hparams: {describe(config, session.placement)}"


# --------------------------------------------------------------------------- collection


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    markers = list(metafunc.definition.iter_markers("hparams"))
    test = metafunc.definition.nodeid
    if not markers:
        misspelt = misspelt_marker((mark.name for mark in metafunc.definition.iter_markers()),
                                   registered_markers(metafunc.config))
        if misspelt:
            pytest.fail(f"{test}: unknown marker @pytest.mark.{misspelt}: did you mean "
                        f"@pytest.mark.hparams?", pytrace=False)
        return
    try:
        args, kwargs = merge_markers(reversed(markers))
        marker = parse_marker(test, args, kwargs, max_trials=_max_trials(metafunc.config))
        params = [pytest.param(ItemSpec(config, marker), id=config.id,
                               marks=marker.marks_for(config))
                  for config in marker.space.expand()]
    except SpaceError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:  # failed outside the except block, so the message is shown once
        pytest.fail(problem, pytrace=False)
    if PARAM not in metafunc.fixturenames:
        metafunc.fixturenames.append(PARAM)
    metafunc.parametrize(PARAM, params)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def hparams(request: pytest.FixtureRequest) -> HParams:
    """This configuration's hyperparameters: ``hparams.lr``, ``hparams["lr"]``, ``.seeds``."""
    spec = item_spec(request.node)
    if spec is None:
        pytest.fail(f"{request.node.nodeid} requests the fixture 'hparams' but no "
                    f"@pytest.mark.hparams marker applies to it (on the test, its class or its "
                    f"module): add one, e.g. @pytest.mark.hparams(lr=[0.01, 0.1])",
                    pytrace=False)
    return observe(HParams(spec.config.values, seeds=spec.marker.space.seeds,
                           id=spec.config.id, axes=spec.config.axes), item_reads(request.node))


@pytest.fixture
def hparams_device(request: pytest.FixtureRequest) -> torch.device:
    """The ``torch.device`` this test trains on."""
    return item_device(request.node)


@pytest.fixture
def hparams_trial(request: pytest.FixtureRequest) -> TrialRecorder:
    """Record your own training loop: ``for run in hparams_trial.runs(): run.log_epoch(...)``."""
    return item_recorder(request.node)


# --------------------------------------------------------------------------- running


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse a user's fixture that hides one of the plugin's from an hparams test (its rows
    would be labelled with configurations they did not train with); choose the device and torch
    threads before the first test that may train: one that uses the plugin, or any test once
    torch is loaded (its threads then follow the budget too)."""
    problem = shadowing(item, sys.modules[__name__])
    if not problem and (uses_plugin(item) or "torch" in sys.modules):
        problem = item.config.stash[SESSION_KEY].place().problem
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    if not (uses_plugin(item) or "torch" in sys.modules):
        return (yield)  # a test that cannot train (torch is not even loaded) costs nothing
    recorder = item_recorder(item)
    progress = item.config.stash[SESSION_KEY].progress
    with recording_into(recorder), sharing_for(item):
        try:
            outcome = yield
        finally:
            progress.clear()
    spec = item_spec(item)
    if spec is not None and spec.marker.space.expect:
        _check_expectations(item, spec, recorder)
    if spec is not None and "hparams" in getattr(item, "fixturenames", ()):
        _check_every_key_read(item, spec)
    return outcome


def _check_every_key_read(item: pytest.Item, spec: ItemSpec) -> None:
    """A key of the item's configuration that nothing read (not the test, its model factory,
    nor ``fit``) changed nothing in its row. One that looks like a misspelt ``fit`` setting
    (``optimiser``, ``epoch``) fails the test; any other (a ``dropout`` the model does not take,
    a ``momentum`` an own loop reads only for SGD) is a warning for this configuration."""
    __tracebackhide__ = True
    reads = item_reads(item)
    unread = [key for key in spec.config.values if key not in reads]
    if not unread:
        return
    from .settings import TrainSettings  # only now: a misspelling is looked for among them

    settings = TrainSettings.keys()
    misspelt = {}
    for key in unread:
        close = difflib.get_close_matches(key, settings, n=1) if key not in settings else []
        if close:
            misspelt[key] = close[0]
    if misspelt:
        given = ", ".join(f"{key}={spec.config.values[key]!r} (did you mean {close!r}?)"
                          for key, close in misspelt.items())
        pytest.fail(
            f"{item.nodeid}: the marker gives {given}, but nothing read "
            f"{'it' if len(misspelt) == 1 else 'them'}: not the test, not its model factory, not "
            f"fit, whose settings are {', '.join(settings)}. The row would show a value that "
            f"changed nothing: correct the name, or read it where it matters.", pytrace=False)
    given = ", ".join(f"{key}={spec.config.values[key]!r}" for key in unread)
    item.warn(HParamsWarning(
        f"{item.nodeid}: the marker gives {given}, but nothing read "
        f"{'it' if len(unread) == 1 else 'them'} in this configuration (not the test, not its "
        f"model factory, not fit), so its row shows a value that changed nothing here. Read "
        f"{'it' if len(unread) == 1 else 'them'} where it matters (hparams.{unread[0]} in the "
        f"test, or in a model factory that takes hparams) or leave it out of the marker."))


def _check_expectations(item: pytest.Item, spec: ItemSpec, recorder: TrialRecorder) -> None:
    __tracebackhide__ = True
    recorder.close_active()
    trial = recorder.result
    if not trial.runs:
        pytest.fail(f"{item.nodeid}: expect= needs metrics, but the test recorded no run "
                    f"(call fit() or use the hparams_trial fixture)", pytrace=False)
    problems = []
    for name, threshold in spec.marker.space.expect.items():
        if name not in trial.metric_names:
            problems.append(f"expect names {name!r}, which no run recorded (recorded: "
                            f"{', '.join(trial.metric_names) or 'nothing'})")
            continue
        summary = trial.metric(name)
        if threshold.holds(summary.mean):
            continue
        text = f"expected {threshold}, got {summary.mean:.4g}"
        if summary.n > 1:
            values = ", ".join(f"{v:.4g}" for v in summary.values)
            text += f" ± {summary.std:.2g} (mean of {summary.n} seeds: {values})"
        problems.append(text)
    if problems:
        why = f" [{trial.reason}]" if trial.status != "ok" else ""
        pytest.fail(f"{item.nodeid}: " + "; ".join(problems) + why, pytrace=False)


def _failure_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return str(crash.message).strip().splitlines()[0].removeprefix("Failed: ")
    text = str(report.longrepr or "").strip()
    return text.splitlines()[-1] if text else "failed"


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when == "setup" and report.failed:
        return "error"
    return report.outcome


def _reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return _failure_message(report) if report.failed else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    finished = call.when == "call" or (call.when == "setup" and not report.passed)
    if not finished or item.stash.get(_REPORTED, False):
        return report
    if not records_trials(item):
        return report
    error = _failure_message(report) if report.failed else None
    status = "error"
    if call.excinfo is not None and is_out_of_memory(call.excinfo.value):
        status = "oom"
        item.stash[_OUT_OF_MEMORY] = True
    recorders = item_recorders(item)
    for each in recorders:
        each.close_active(error, status)
        trial = each.result
        trial.outcome = _outcome(report)
        trial.message = _reason(report).removeprefix(f"{item.nodeid}: ")
        trial.duration = report.duration
        trial.worker = worker_id(item.config) or ""
        if report.failed and trial.status != "ok":
            report.sections.append((f"hparams {trial.config_id}", trial.reason))
    # Plain data, so that it travels with the report from xdist workers to the controller.
    report.hparams_trials = to_wire(each.result for each in recorders)
    item.stash[_REPORTED] = True
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Any:
    try:
        return (yield)
    finally:
        if item.stash.get(_OUT_OF_MEMORY, False):
            _release_failed_test()


def _release_failed_test() -> None:
    # pytest keeps the last failure (sys.last_value and friends) for post-mortem debugging;
    # after an out-of-memory error its traceback holds the tensors that ran out of memory.
    for name in ("last_exc", "last_type", "last_value", "last_traceback"):
        if hasattr(sys, name):
            delattr(sys, name)
    free_accelerator_memory()


class _SessionHooks:
    """The hooks that need the run's session: collecting records, tables, files."""

    def __init__(self, session: HParamsSession) -> None:
        self.session = session
        self.written: list[Path] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        trials = [TrialResult.from_dict(dict(data))
                  for data in getattr(report, "hparams_trials", ()) if isinstance(data, Mapping)]
        settle_sweep_rows(trials, report.nodeid)
        if not trials and report.failed and report.when not in ("setup", "call", "teardown"):
            # pytest-xdist's report for the item a worker was running when it died
            worker = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", "")
            tests = {trial.test for trial in self.session.trials.values()}
            trials = [t for t in [crashed_trial(report.nodeid, str(report.longrepr),
                                                worker=str(worker), hparams_tests=tests)] if t]
        for trial in trials:
            self.session.add(trial)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.session.set_collection_order([item.nodeid for item in session.items])

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.session.is_worker:
            self.session.start()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.session.is_worker:
            return
        self.written = self.session.finish()
        if self.session.errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a CI step must not pass

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        hparams = self.session
        if hparams.is_worker:
            return
        with interrupts.shielded(final=True):  # a second Ctrl-C cannot cut the table short
            if hparams.trials and not hparams.config.getoption("hparams_no_table"):
                from .report import TABLE_WIDTH, render_tables  # here: only runs with trials

                width = TABLE_WIDTH
                if terminalreporter.isatty:
                    width = max(60, min(width, terminalreporter._tw.fullwidth))
                terminalreporter.write_sep("=", "hyperparameter comparison")
                if hparams.placement is not None and not hparams.described_early:
                    # torch loaded after the header: say here what was chosen
                    terminalreporter.write_line(
                        f"hparams: {describe(hparams.config, hparams.placement)}")
                terminalreporter.write_line(render_tables(hparams.ordered_trials(), width))
            for path in self.written:
                terminalreporter.write_line(f"hparams: wrote {path}")
            for error in hparams.errors:
                terminalreporter.write_line(f"hparams: {error}", red=True)

