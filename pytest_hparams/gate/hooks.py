"""pytest options and hooks that save runs and gate each test item against a baseline.

``--hparams-save``/``--hparams-autosave`` save the run into the storage folder when the session
ends. ``--hparams-compare`` reads the baseline once per process (the controller and each xdist
worker), compares each item's trial right after its test body and fails the item when a gated
metric regressed; the session then judges every configuration again with the p-values corrected
over the whole run (``--hparams-compare-correction``), prints one comparison table per test,
adds it to the Markdown file and to GitHub's step summary, and fails the run on a regression
the items alone could not show. Bad input is a usage error before any test runs.

Seeds on demand (``--hparams-compare-seeds=MIN:MAX``): before the test body runs, the item's
``hparams`` fixture value and its recorder are given the first MIN seeds of its plan (the
marker's seeds, continued with the integers after them up to MAX); after it, while the verdict
is neither regressed nor clearly within the tolerance, this hook gives them the next seeds and
runs the test body again (``item.runtest()``), recording into the same trial, so that the runs
accumulate. A test that trains seeds of its own choosing (not ``hparams.seeds`` or
``hparams_trial.runs()``) gets no seeds added, and the comparison says so.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .. import interrupts
from ..errors import BaselineMissing, CompareExpressionError, ResultsFileError
from ..hparams import HParams
from ..items import item_recorder, item_recorders, item_spec, test_name
from ..outputs import FINAL_NOTICE, check_writable, failure_text
from ..recording import TrialRecorder, recording_into
from ..runfile import RunFile, read_run, write_run
from ..saved_runs import DEFAULT_STORAGE, check_save_name, resolve_baseline, save_run
from ..session import SESSION_KEY, HParamsSession
from ..trial import TrialResult
from ..xdist import from_controller, is_worker, send_to_workers
from .options import (
    DEFAULT_CORRECTION,
    SeedsOnDemand,
    correction_label,
    correction_option,
    seeds_option,
)
from .tolerance import (
    DEFAULT_ALPHA,
    DEFAULT_FAIL,
    Tolerance,
    alpha_option,
    effective_tolerances,
    parse_tolerance,
    tolerance_option,
)
from .values import check_metrics, metric_values, recorded_metrics, run_seeds

if TYPE_CHECKING:  # the verdicts load when a run has a baseline to judge against
    from .verdicts import BaselineIndex, Comparison, ConfigComparison

_WORKER_BASELINE = "hparams_baseline"


def _save_name(text: str) -> str:
    if text == "":
        return text
    try:
        return check_save_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_options(parser: pytest.Parser) -> None:
    """Declare the saving and comparing options in the hparams group."""
    group = parser.getgroup("hparams")
    group.addoption("--hparams-save", dest="hparams_save", metavar="NAME", nargs="?", const="",
                    default=None, type=_save_name,
                    help="save this run into the storage folder as NNNN_<commit>_<time>[_NAME]"
                         ".json (write --hparams-save=NAME, with '=')")
    group.addoption("--hparams-autosave", dest="hparams_autosave", action="store_true",
                    help="save this run into the storage folder, numbered, with its commit and "
                         "time")
    group.addoption("--hparams-storage", dest="hparams_storage", metavar="PATH", default=None,
                    help=f"the folder of saved runs (default {DEFAULT_STORAGE}/; ini: "
                         f"hparams_storage)")
    group.addoption("--hparams-compare", dest="hparams_compare", metavar="ID|NAME|PATH",
                    nargs="?", const="", default=None,
                    help="compare against a saved run: this machine's latest when bare, or a "
                         "number, a saved name or a run file's path (write --hparams-compare=X)")
    group.addoption("--hparams-compare-fail", dest="hparams_compare_fail", metavar="EXPR",
                    action="append", type=tolerance_option, default=[],
                    help="fail an item whose METRIC moved beyond a tolerance, significantly: "
                         "accuracy:-0.01, accuracy:-2%%, loss:+5%%, time:+25%%, "
                         "epochs_to_target:+3 (repeatable; default "
                         f"{', '.join(DEFAULT_FAIL)})")
    group.addoption("--hparams-compare-alpha", dest="hparams_compare_alpha", metavar="ALPHA",
                    type=alpha_option, default=DEFAULT_ALPHA,
                    help=f"significance level of the one-sided test over seeds (default "
                         f"{DEFAULT_ALPHA:g})")
    group.addoption("--hparams-compare-correction", dest="hparams_compare_correction",
                    metavar="bh|holm|none", type=correction_option, default=DEFAULT_CORRECTION,
                    help=f"correct the verdicts for the number of tests in the run: bh "
                         f"(Benjamini-Hochberg), holm, or none (default {DEFAULT_CORRECTION})")
    group.addoption("--hparams-compare-seeds", dest="hparams_compare_seeds", metavar="MIN:MAX",
                    type=seeds_option, default=None,
                    help="seeds on demand: each configuration trains MIN seeds, and more, up to "
                         "MAX, only while its verdict is unsure (e.g. 3:8); without a baseline "
                         "every configuration trains MAX, so that the run can be one")
    group.addoption("--hparams-compare-missing", dest="hparams_compare_missing",
                    choices=("fail", "skip", "save"), default="fail",
                    help="when the baseline --hparams-compare names does not exist yet (a first "
                         "pull request): fail (default: a usage error), skip (gate nothing, say "
                         "so) or save (gate nothing, save this run under that name or path)")
    parser.addini("hparams_storage", "the folder of saved runs", default=DEFAULT_STORAGE)


@dataclass
class GateSettings:
    """What this run saves and compares against, read once from the options."""

    storage: Path
    save: bool
    save_name: str | None
    baseline: RunFile | None = None
    rules: list[Tolerance] = field(default_factory=list)
    alpha: float = DEFAULT_ALPHA
    correction: str = DEFAULT_CORRECTION
    seeds: SeedsOnDemand | None = None
    missing: str = ""  # why nothing is gated: the baseline does not exist yet
    save_path: Path | None = None  # --hparams-compare-missing=save with a path


def configure(config: pytest.Config, session: HParamsSession) -> None:
    """Read the options and the baseline; register the hooks. Bad input is a UsageError."""
    storage = Path(config.getoption("hparams_storage") or config.getini("hparams_storage"))
    name = config.getoption("hparams_save")
    settings = GateSettings(storage, name is not None or config.getoption("hparams_autosave"),
                            name or None, alpha=config.getoption("hparams_compare_alpha"),
                            correction=config.getoption("hparams_compare_correction"),
                            seeds=config.getoption("hparams_compare_seeds"))
    if settings.save and storage.exists() and not storage.is_dir():
        raise pytest.UsageError(f"--hparams-storage: {storage} is a file; the runs are saved "
                                f"into a folder: name a folder (default {DEFAULT_STORAGE})")
    spec = config.getoption("hparams_compare")
    user_rules: list[Tolerance] = config.getoption("hparams_compare_fail")
    if spec is None and user_rules:
        raise pytest.UsageError("--hparams-compare-fail needs a baseline: add --hparams-compare "
                                "(this machine's latest saved run) or --hparams-compare=PATH")
    if spec is not None:
        try:
            settings.baseline = _read_baseline(config, spec, storage)
        except BaselineMissing as exc:
            settings.missing = _without_baseline(config, settings, spec, exc)
    if settings.save and not session.is_worker:
        check_writable("--hparams-storage", storage, folder=True)
    if settings.baseline is not None:
        path = settings.baseline.path
        option = session.outputs.writing_to(path) if path is not None else None
        if option is not None:
            raise pytest.UsageError(f"{option} names the baseline {path} "
                                    f"(--hparams-compare={spec}): a compare never writes to its "
                                    f"baseline; write the results to another file")
        try:
            check_metrics(user_rules, settings.baseline.trials,
                          f"the baseline {settings.baseline.path}")
        except CompareExpressionError as exc:
            raise pytest.UsageError(f"--hparams-compare-fail: {exc}") from None
        settings.rules = user_rules or [parse_tolerance(text) for text in DEFAULT_FAIL]
        path = settings.baseline.path
        if path is not None:  # workers read this very file, even if a run is saved meanwhile
            send_to_workers(config, _WORKER_BASELINE, lambda node: str(path))
    config.pluginmanager.register(_GateHooks(settings, session), "hparams-gate")


def _without_baseline(config: pytest.Config, settings: GateSettings, spec: str,
                      exc: BaselineMissing) -> str:
    """``--hparams-compare-missing``: a usage error, or the line that says nothing is gated
    (and, for ``save``, where this run will be saved instead)."""
    choice = config.getoption("hparams_compare_missing")
    if choice == "fail":
        option = f"--hparams-compare={spec}" if spec else "--hparams-compare"
        raise pytest.UsageError(f"{option}: {exc} (a first run has no baseline yet: "
                                f"--hparams-compare-missing=save saves this run as it, skip "
                                f"gates nothing)") from None
    line = f"no baseline yet ({exc}): nothing is gated"
    if choice == "save" and not is_worker(config):
        if spec.endswith(".json") or "/" in spec:
            settings.save_path = Path(spec)
        else:
            settings.save, settings.save_name = True, spec or settings.save_name
        line += f"; this run is saved as {spec or 'the latest run'} instead"
    return line


def _read_baseline(config: pytest.Config, spec: str, storage: Path) -> RunFile:
    resolved = from_controller(config, _WORKER_BASELINE)
    try:
        path = Path(resolved) if resolved else resolve_baseline(spec, storage)
        return read_run(path)
    except BaselineMissing:
        raise
    except ResultsFileError as exc:
        option = f"--hparams-compare={spec}" if spec else "--hparams-compare"
        hint = ""
        if spec and (spec.endswith(".py") or _is_folder(spec) or "::" in spec):
            hint = (f" (a test path right after a bare --hparams-compare is taken as its value: "
                    f"write --hparams-compare=ID|NAME|PATH, or put {spec} first)")
        raise pytest.UsageError(f"{option}: {exc}{hint}") from None


def _is_folder(text: str) -> bool:
    try:
        return Path(text).is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


class _GateHooks:
    """Tolerances onto trials, seeds on demand, each item against its baseline, and the
    session's report."""

    def __init__(self, settings: GateSettings, session: HParamsSession) -> None:
        self.settings = settings
        self.session = session
        self.comparison: Comparison | None = None
        self.saved: Path | None = None
        self.errors: list[str] = []  # a save or a Markdown file that could not be written
        self.planned: int | None = None
        self.passed_but_regressed: list[str] = []

    @functools.cached_property
    def index(self) -> BaselineIndex:
        """The baseline's trials by node id and by hyperparameters."""
        from .verdicts import BaselineIndex

        baseline = self.settings.baseline
        return BaselineIndex(baseline.trials if baseline is not None else [])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        plan = self._start_seeds(item)
        try:
            result = yield
        except BaseException:
            self._mark_tolerances(item)
            raise
        self._check_marker_metrics(item, self._mark_tolerances(item))
        if self.settings.baseline is not None:
            self._gate(item, plan)
        return result

    # -- seeds on demand

    def _start_seeds(self, item: pytest.Item) -> tuple[int, ...] | None:
        """Give the item the seeds of its first round: MIN of its plan when comparing, all of
        them otherwise (a run without a baseline may become one)."""
        spec = item_spec(item)
        if self.settings.seeds is None or spec is None:
            return None
        plan = self.settings.seeds.plan(spec.marker.space.seeds)
        first = plan if self.settings.baseline is None else plan[: self.settings.seeds.least]
        _give_seeds(item, item_recorder(item), first)
        return plan

    def _design(self, item: pytest.Item, recorder: TrialRecorder, plan: tuple[int, ...],
                before: TrialResult | None) -> tuple[int, ...]:
        """Record on the trial the looks of its sequential design, as far as the baseline
        holds the plan's seeds; return the looks (none: a fixed-sample test)."""
        seeds = self.settings.seeds
        assert seeds is not None
        trial = recorder.result
        held = 0
        if before is not None:
            ran = set(run_seeds(before))
            while held < len(plan) and plan[held] in ran:
                held += 1
        trial.seed_design = {"requested": str(seeds), "held": held}
        trained = run_seeds(trial)
        if trained != list(plan[: seeds.least]):
            trial.seed_design["own_seeds"] = (
                f"{item.nodeid} trained seeds {trained} rather than the {seeds.least} it was "
                f"given ({list(plan[: seeds.least])}): it chooses its own seeds (not "
                f"hparams.seeds or hparams_trial.runs()), so none were added")
            return ()
        looks = seeds.looks(held)
        if looks:
            trial.seed_design.update(looks=list(looks), alpha=self._level(item))
        return looks

    def _train_more(self, item: pytest.Item, recorder: TrialRecorder,
                    seeds: tuple[int, ...]) -> bool:
        """Run the test body again on ``seeds``, recording into the same trial; False when
        the body did not train exactly them."""
        trial = recorder.result
        trained = run_seeds(trial)
        _give_seeds(item, recorder, seeds)
        progress = item.config.stash[SESSION_KEY].progress
        try:
            with recording_into(recorder):
                item.runtest()
        finally:
            recorder.close_active()
            progress.clear()
            trial.seeds = [*trained, *seeds]
        if run_seeds(trial) == [*trained, *seeds]:
            return True
        trial.seed_design["own_seeds"] = (
            f"{item.nodeid} did not train the seeds {list(seeds)} it was given: it chooses its "
            f"own seeds, so no more were added")
        return False

    # -- tolerances

    def _mark_tolerances(self, item: pytest.Item) -> dict[str, str | None]:
        """Put the marker's tolerances on the item's trials: saved with them, they gate the
        item, the controller's table and an offline compare alike."""
        spec = item_spec(item)
        if spec is None or not spec.marker.tolerance:
            return {}
        tolerances = {metric: (str(rule) if rule is not None else None)
                      for metric, rule in spec.marker.tolerance.items()}
        for recorder in item_recorders(item):
            recorder.result.tolerance = tolerances
        return tolerances

    def _check_marker_metrics(self, item: pytest.Item, tolerances: dict[str, str | None]) -> None:
        __tracebackhide__ = True
        trials = [r.result for r in item_recorders(item) if r.result.runs]
        if not tolerances or not trials:
            return
        known = recorded_metrics(trials)
        unknown = [metric for metric in tolerances if metric not in known]
        if unknown:
            pytest.fail(f"{item.nodeid}: hparams key 'tolerance': names {unknown[0]!r}, which "
                        f"no run recorded (recorded: {', '.join(known)})", pytrace=False)

    # -- the gate

    def _planned_tests(self, item: pytest.Item) -> int:
        """How many tests this run's items will make against the baseline: the family that an
        item's verdict is corrected for before the others have run (sweep configurations
        inside a test join the correction at the end)."""
        if self.planned is None:
            count = 0
            for other in item.session.items:
                spec = item_spec(other)
                values = spec.config.values if spec is not None else {}
                before = self.index.find(other.nodeid, test_name(other), values)
                if before is None:
                    continue
                overrides = spec.marker.tolerance if spec is not None else {}
                count += sum(metric_values(before, rule.field) is not None
                             for rule in effective_tolerances(self.settings.rules, overrides))
            self.planned = max(count, 1)
        return self.planned

    def _level(self, item: pytest.Item) -> float:
        """The level at which one item's test fails it: alpha shared among the run's tests, so
        that the run-level correction can only confirm the failure."""
        if self.settings.correction == "none":
            return self.settings.alpha
        return self.settings.alpha / self._planned_tests(item)

    def _gate(self, item: pytest.Item, plan: tuple[int, ...] | None) -> None:
        __tracebackhide__ = True
        baseline = self.settings.baseline
        assert baseline is not None
        failures = []
        own = item_recorder(item) if item_spec(item) is not None else None
        for recorder in item_recorders(item):
            recorder.close_active()
            trial: TrialResult = recorder.result
            before = self.index.find(trial.nodeid, trial.test, trial.hparams)
            if recorder is own and plan is not None and trial.runs:
                result = self._sequential(item, recorder, plan, before)
            else:
                result = self._compare(item, before, trial)
            if result.failed:
                failures.append(result.explain(f"baseline {baseline.path}"))
        if failures:
            pytest.fail("\n\n".join(failures), pytrace=False)

    def _compare(self, item: pytest.Item, before: TrialResult | None,
                 trial: TrialResult) -> ConfigComparison:
        from .verdicts import compare_trial

        settings = self.settings
        family = self._planned_tests(item) if settings.correction != "none" else 1
        return compare_trial(before, trial, settings.rules, settings.alpha,
                             correction=settings.correction, family=family)

    def _sequential(self, item: pytest.Item, recorder: TrialRecorder, plan: tuple[int, ...],
                    before: TrialResult | None) -> ConfigComparison:
        """Judge the item look by look, training the next seeds while it is undecided."""
        looks = self._design(item, recorder, plan, before)
        trial = recorder.result
        while True:
            result = self._compare(item, before, trial)
            trained = len(trial.runs)
            more = [look for look in looks if look > trained]
            if not result.needs_seeds or not more:
                return result
            if not self._train_more(item, recorder, plan[trained: more[0]]):
                return self._compare(item, before, trial)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        hparams = self.session
        if hparams.is_worker or not hparams.trials:
            return
        with interrupts.shielded(FINAL_NOTICE, final=True):
            self._finish(exitstatus)
        # a "save the baseline" step fails, and so does a run whose regressions only the whole
        # run's correction revealed
        if (self.errors or self.passed_but_regressed) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _finish(self, exitstatus: int) -> None:
        hparams = self.session
        settings = self.settings
        # The renderings load here, when there is something to render: a run without hparams
        # tests never pays for them, nor for the report's tables they use.
        from .tables import markdown_comparison
        from .verdicts import compare_runs

        if settings.baseline is not None:
            environment = {**hparams.environment, "device": hparams.run_device()}
            self.comparison = compare_runs(settings.baseline, hparams.ordered_trials(),
                                           settings.rules, settings.alpha,
                                           environment=environment,
                                           correction=settings.correction)
            self.passed_but_regressed = [c.trial.nodeid for c in self.comparison.regressions
                                         if c.current is not None
                                         and c.current.outcome == "passed"]
            if hparams.outputs.markdown is not None and hparams.outputs.markdown.exists():
                self._append(hparams.outputs.markdown, markdown_comparison(self.comparison))
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary and (self.comparison is not None or hparams.outputs.markdown is not None):
            from ..report import markdown_tables

            text = markdown_comparison(self.comparison) if self.comparison is not None else ""
            text += "\n## Results\n\n" + markdown_tables(hparams.ordered_trials())
            self._append(summary, text)
        if settings.save or settings.save_path is not None:
            run = hparams.run_file()
            run.extra.update(name=settings.save_name or "", exitstatus=int(exitstatus))
            where = settings.save_path or settings.storage
            try:
                if settings.save_path is not None:
                    write_run(settings.save_path, run)
                    self.saved = settings.save_path
                else:
                    self.saved = save_run(settings.storage, run, settings.save_name)
            except (OSError, ResultsFileError) as exc:
                self.errors.append(f"could not save the run: {where}: {failure_text(exc)}")

    def _append(self, path: str | Path, text: str) -> None:
        try:
            from .tables import append_markdown

            append_markdown(path, text)
        except OSError as exc:
            self.errors.append(f"could not write the comparison to {path}: {failure_text(exc)}")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        with interrupts.shielded(final=True):  # a second Ctrl-C cannot cut the table short
            if self.settings.missing:
                terminalreporter.write_line(f"hparams: {self.settings.missing}", yellow=True)
            if self.comparison is not None:
                terminalreporter.write_sep("=", "hyperparameter baseline comparison",
                                           red=self.comparison.failed,
                                           green=not self.comparison.failed)
                from .tables import render_comparison  # here: only a run with a comparison

                terminalreporter.write_line(render_comparison(self.comparison))
                self._report_passed_but_regressed(terminalreporter)
            if self.saved is not None:
                terminalreporter.write_line(f"hparams: saved run {self.saved}")
            for error in self.errors:
                terminalreporter.write_line(f"hparams: {error}", red=True)

    def _report_passed_but_regressed(self, terminalreporter: Any) -> None:
        if not self.passed_but_regressed or self.comparison is None:
            return
        shown = ", ".join(self.passed_but_regressed[:5])
        more = len(self.passed_but_regressed) - 5
        terminalreporter.write_line(
            f"hparams: {len(self.passed_but_regressed)} configuration(s) regressed "
            f"under {correction_label(self.comparison.correction, self.comparison.tests)}"
            f" although their items passed (an item is judged before the rest of the "
            f"run, at α over the planned tests; the whole run's p-values show more): "
            f"{shown}{f' and {more} more' if more > 0 else ''}; the run fails",
            red=True)


def _give_seeds(item: pytest.Item, recorder: TrialRecorder, seeds: tuple[int, ...]) -> None:
    """Make the item's test body train ``seeds``: its ``hparams`` fixture value (read by
    ``fit``) and its recorder's seeds (read by ``hparams_trial.runs()``)."""
    recorder.result.seeds = list(seeds)
    funcargs = getattr(item, "funcargs", None)
    if isinstance(funcargs, dict) and isinstance(funcargs.get("hparams"), HParams):
        funcargs["hparams"] = funcargs["hparams"].with_seeds(seeds)
