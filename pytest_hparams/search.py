"""Adaptive hyperparameter search inside a test: optuna asks, and each batch trains as one stack.

``search`` asks optuna's sampler (TPE, a Gaussian process, CMA-ES, random or the grid) for
``batch`` configurations at a time, trains them as ``sweep`` trains its rows (as one vectorised
stack where they can stack, one by one otherwise), and tells optuna their results. With a pruner,
each trial reports its objective every epoch, and a trial the pruner stops leaves the stack as
``pruned`` while the rest trains on. Inside pytest every trial is a row of a comparison table
named after the calling test, and of the results files.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from .errors import HParamsError, SearchError
from .hparams import HParams
from .marker import parse_marker
from .metrics import lower_is_better
from .recording import RunRecorder, TrialRecorder, current_recorder, describe, recording_into
from .samplers import (
    Axis,
    describe_pruner,
    import_optuna,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    search_axes,
)
from .space import Distribution, Space
from .trial import TrialResult

#: What ``fit`` records that a search may optimise (``lr`` describes an epoch; it is no score).
OBJECTIVES = ("accuracy", "loss", "train_loss", "test_accuracy", "test_loss")
#: Keys of a trial's row that are not hyperparameters: they tell its search and trial apart.
RESERVED = ("study", "trial")
#: Marker options that make no sense for a search, and what to do instead.
_NOT_FOR_SEARCH = {
    "samples": "search() asks its sampler for trials=N configurations; drop samples=",
    "seed": "give the sampler's seed to search(seed=...), not in the space",
    "where": "a sampler proposes each key on its own and cannot skip combinations; express "
             "the constraint in the model factory, or run one search per case",
    "expect": "assert on the result instead, e.g. assert result.best.accuracy >= 0.9",
    "xfail": "a search's trials are rows of one test, not test items",
    "marks": "a search's trials are rows of one test, not test items",
    "max_trials": "search() trains trials=N configurations",
    "tolerance": "give tolerances on the test's hparams marker",
    "device": "give device= to search()",
    "skip_unavailable": "give device= to search() and skip the test yourself",
}
#: The most training seeds per trial.
SEED_LIMIT = 10_000


# --------------------------------------------------------------------------- the result


class SearchResult(Sequence[TrialResult]):
    """What ``search`` did: every trial in the order it was asked (a sequence of
    ``TrialResult``, like ``sweep``'s list), the best, and the optuna study."""

    def __init__(self, trials: list[TrialResult], values: list[float], numbers: list[int],
                 hparams: list[HParams], study: Any, objective: str, minimize: bool) -> None:
        self.trials = trials
        self.values = values  # the objective told to optuna; NaN for pruned and failed trials
        self.numbers = numbers  # optuna's trial numbers
        self.study = study
        self.objective = objective
        self.direction = "minimize" if minimize else "maximize"
        self._hparams = hparams
        #: Wall seconds optuna took to ask for and be told the trials (the sampler's and the
        #: storage's overhead), and seconds spent training them (pruning reports included).
        self.sampler_seconds = 0.0
        self.training_seconds = 0.0

    @overload
    def __getitem__(self, index: int) -> TrialResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[TrialResult]: ...

    def __getitem__(self, index: int | slice) -> TrialResult | list[TrialResult]:
        return self.trials[index]

    def __len__(self) -> int:
        return len(self.trials)

    def __repr__(self) -> str:
        done = sum(not math.isnan(v) for v in self.values)
        pruned = sum(t.status == "pruned" for t in self.trials)
        best = self._best_index()
        shown = (f", best trial {self.numbers[best]}: {self.objective} {self.values[best]:.4g}"
                 if best is not None else "")
        return (f"<SearchResult {len(self)} trials ({done} complete, {pruned} pruned), "
                f"{self.direction} {self.objective}{shown}>")

    def _best_index(self) -> int | None:
        best = None
        for index, value in enumerate(self.values):
            if math.isnan(value):
                continue
            if best is None or _better(self.direction, value, self.values[best]):
                best = index
        return best

    @property
    def best(self) -> TrialResult:
        """The trial with the best objective among those that completed (not pruned or
        failed); the earliest of equals."""
        index = self._best_index()
        if index is None:
            reasons = "; ".join(f"trial {n}: {t.status}: {t.reason or t.message}"
                                for n, t in zip(self.numbers, self.trials, strict=True))
            raise SearchError(f"no trial of the search completed ({reasons or 'no trials'})")
        return self.trials[index]

    @property
    def best_hparams(self) -> HParams:
        """The best trial's configuration as ``fit`` was given it, to train it again."""
        self.best  # noqa: B018 - raises when no trial completed
        index = self._best_index()
        assert index is not None
        return self._hparams[index]

    def best_so_far(self) -> list[float]:
        """The best objective among the first 1, 2, ... trials (NaN until one completes)."""
        curve, best = [], math.nan
        for value in self.values:
            if not math.isnan(value) and (math.isnan(best)
                                          or _better(self.direction, value, best)):
                best = value
            curve.append(best)
        return curve

    @property
    def epochs(self) -> int:
        """Epochs trained by all trials over all their seeds: the search's cost."""
        return sum(run.epochs for trial in self.trials for run in trial.runs)


def _better(direction: str, a: float, b: float) -> bool:
    return a < b if direction == "minimize" else a > b


# --------------------------------------------------------------------------- the search


def search(
    model: Any,
    train: Any,
    val: Any = None,
    space: Mapping[str, Any] | None = None,
    *,
    trials: int,
    sampler: Any = "tpe",
    batch: int = 1,
    seed: int | None = 0,
    pruner: Any = None,
    objective: str = "accuracy",
    direction: str | None = None,
    storage: Any = None,
    study_name: str | None = None,
    stop_at_target: bool = False,
    **fit_kwargs: Any,
) -> SearchResult:
    """Search ``space`` for the configuration with the best ``objective``, ``trials``
    configurations in all, asking optuna's ``sampler`` for ``batch`` at a time and training
    each batch with ``fit(model, train, val, hparams, **fit_kwargs)`` as one vectorised stack
    where the configurations can stack.

    ``space`` takes the marker's keywords: lists and dicts (categorical), ``choice``,
    ``uniform``, ``log_uniform``, ``int_uniform``, fixed values, ``seeds`` and ``vectorize``.
    ``sampler``: "tpe", "gp", "cmaes", "random", "grid" or an optuna sampler; ``seed`` seeds
    it. ``pruner``: None, "halving", "hyperband", "median" or an optuna pruner; each trial's
    first seed reports ``objective`` every epoch, and a pruned trial's seeds all stop at that
    epoch (status ``pruned``). ``objective`` is the mean over seeds of a metric ``fit``
    records (``direction`` defaults to the metric's). ``storage``: None (in memory), a file
    path (optuna's journal file) or a database URL, shared by processes that give the same
    ``study_name`` (by default the calling test's id). ``stop_at_target`` is False here, so
    that a ``target`` does not cap the values the search compares.
    """
    parent = current_recorder()
    test = parent.result.nodeid if parent is not None and parent.result.nodeid else "search()"
    plan = _Plan.of(test, space, trials=trials, batch=batch, seed=seed, objective=objective,
                    direction=direction, pruner=pruner, study_name=study_name, storage=storage,
                    parent=parent)
    optuna = import_optuna()
    axes = search_axes(optuna, plan.space)
    pruning = make_pruner(optuna, pruner, epochs=_longest(plan.space, fit_kwargs), test=test)
    chosen = make_sampler(optuna, sampler, seed=seed, axes=axes, trials=trials, batch=batch,
                          test=test)
    fit_kwargs = {**fit_kwargs, "stop_at_target": stop_at_target}
    with _quiet(optuna):
        study = open_study(optuna, storage=open_storage(optuna, storage, test=test),
                           sampler=chosen, pruner=pruning, name=plan.study_name,
                           minimize=plan.minimize, test=test)
        run = _Search(plan, optuna, study, axes, parent, pruner is not None,
                      describe_pruner(pruning))
        while len(run.rows) < trials and not run.exhausted:
            run.batch(min(batch, trials - len(run.rows)), model, train, val, fit_kwargs)
    return run.result()


@contextlib.contextmanager
def _quiet(optuna: Any) -> Iterator[None]:
    """optuna logs a line per trial at its default level (INFO); the search's table has them
    all, so they are left out while it runs. A level set lower (DEBUG) or higher stays."""
    logging = optuna.logging
    level = logging.get_verbosity()
    if level == logging.INFO:
        logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(level)


@dataclass(frozen=True)
class _Plan:
    """``search``'s arguments, validated before optuna is imported."""

    test: str
    space: Space
    vectorize: bool
    objective: str
    minimize: bool
    study_name: str
    named: bool  # the caller named the study: its rows say which search they belong to

    @classmethod
    def of(cls, test: str, space: Mapping[str, Any] | None, *, trials: Any, batch: Any,
           seed: Any, objective: Any, direction: Any, pruner: Any, study_name: Any,
           storage: Any, parent: TrialRecorder | None) -> _Plan:
        def error(key: str, problem: str) -> SearchError:
            return SearchError(f"{test}: search key {key!r}: {problem}")

        for key, value in (("trials", trials), ("batch", batch)):
            if not _is_int(value) or value < 1:
                raise error(key, f"must be a positive integer, got {value!r}")
        if seed is not None and not _is_int(seed):
            raise error("seed", f"the sampler's seed must be an integer or None, got {seed!r}")
        if objective not in OBJECTIVES:
            close = difflib.get_close_matches(str(objective), OBJECTIVES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise error("objective", f"fit records no metric {objective!r}; {hint}give one of "
                                     f"{', '.join(OBJECTIVES)}")
        if direction not in (None, "maximize", "minimize"):
            raise error("direction", f"give 'maximize', 'minimize' or None (from the "
                                     f"objective), got {direction!r}")
        if pruner is not None and objective.startswith("test_"):
            raise error("pruner", f"{objective!r} is measured once, after training, so a pruner "
                                  f"cannot follow it epoch by epoch; prune on 'accuracy' or "
                                  f"'loss'")
        parsed = _parse_space(test, space)
        if study_name is not None and (not isinstance(study_name, str) or not study_name):
            raise error("study_name", f"must be a non-empty string, got {study_name!r}")
        name = study_name or (test if storage is not None else "search")
        if storage is not None and study_name is None and parent is None:
            raise error("study_name", "a stored study needs a name that every process sharing "
                                      "it gives: pass study_name=")
        minimize = direction == "minimize" if direction else lower_is_better(objective)
        plan = cls(test, parsed.space, parsed.vectorize, objective, minimize, name,
                   study_name is not None)
        plan._check_rows_are_new(parent)
        return plan

    def _check_rows_are_new(self, parent: TrialRecorder | None) -> None:
        """Two searches in one test write rows with the same ids unless they are named."""
        if parent is None:
            return
        prefix = self.config_prefix
        taken = [child.result.config_id for child in parent.children]
        if any(config_id.startswith(f"{prefix}trial=") for config_id in taken):
            raise SearchError(f"{self.test}: search key 'study_name': this test already ran a "
                              f"search{f' named {self.study_name!r}' if self.named else ''}; "
                              f"give each search() of a test its own study_name=")

    @property
    def config_prefix(self) -> str:
        return f"{self.study_name}-" if self.named else ""


@dataclass(frozen=True)
class _ParsedSpace:
    space: Space
    vectorize: bool


def _parse_space(test: str, space: Mapping[str, Any] | None) -> _ParsedSpace:
    if space is None:
        raise SearchError(f"{test}: search key 'space': search() needs space={{...}}: the "
                          f"keys to search, e.g. {{'lr': log_uniform(1e-4, 1.0)}}")
    if not isinstance(space, Mapping):
        raise SearchError(f"{test}: search key 'space': give a dict of keys, got {space!r}")
    for key in space:
        if key in _NOT_FOR_SEARCH:
            raise SearchError(f"{test}: search key {key!r}: {_NOT_FOR_SEARCH[key]}")
        if key in RESERVED:
            raise SearchError(f"{test}: search key {key!r}: the name is taken by the "
                              f"{key} column of the search's rows; rename the hyperparameter")
    seeds = space.get("seeds", 1)
    count = seeds if _is_int(seeds) else len(seeds) if isinstance(seeds, (list, tuple)) else 0
    if count > SEED_LIMIT:
        raise SearchError(f"{test}: search key 'seeds': {count:,} seeds train each trial "
                          f"{count:,} times; use at most {SEED_LIMIT:,}")
    # The marker's parser validates every value; its "samples" is the search's trials. A
    # search never expands the space, so the marker's limit on its size does not apply.
    draws = any(isinstance(value, Distribution) for value in space.values())
    marker = parse_marker(test, (), {**space, **({"samples": 1} if draws else {})},
                          max_trials=10**12)
    parsed = marker.space
    if not parsed.grid and not parsed.distributions:
        fixed = ", ".join(parsed.fixed) or "nothing"
        raise SearchError(f"{test}: search key 'space': there is nothing to search (fixed: "
                          f"{fixed}); give at least one key a list of values or a distribution "
                          f"(choice, uniform, log_uniform, int_uniform)")
    return _ParsedSpace(parsed, marker.vectorize)


def _longest(space: Space, fit_kwargs: Mapping[str, Any]) -> int:
    """The most epochs a trial of ``space`` trains (fit's default when nothing says)."""
    from .settings import TrainSettings

    default = TrainSettings.epochs
    if isinstance(fit_kwargs.get("epochs"), int):
        return int(fit_kwargs["epochs"])
    if "epochs" in space.fixed and _is_int(space.fixed["epochs"]):
        return int(space.fixed["epochs"])
    if "epochs" in space.grid:
        return max((v for _, v in space.grid["epochs"] if _is_int(v)), default=default)
    high = getattr(space.distributions.get("epochs"), "high", None)
    return int(high) if _is_int(high) else default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Row:
    """One asked trial: its optuna trial, configuration, recorder and epoch reporter."""

    trial: Any
    hparams: HParams
    recorder: TrialRecorder
    reporter: _Reporter
    error: BaseException | None = None
    told: bool = False

    @property
    def result(self) -> TrialResult:
        return self.recorder.result


class _Reporter:
    """A trial's per-epoch callback: reports the first seed's objective to optuna and prunes.

    Only the first seed reports, so that a trial is judged the same way whether its seeds train
    together in a stack or one after another; when the pruner stops it at an epoch, every
    seed of the trial stops at that epoch.
    """

    def __init__(self, trial: Any, objective: str, first_seed: int, *, prunes: bool,
                 pruner: str, progress: Callable[[RunRecorder], None] | None) -> None:
        self.trial = trial
        self.objective = objective
        self.first_seed = first_seed
        self.prunes = prunes
        self.pruner = pruner
        self.progress = progress
        self.pruned_at: int | None = None

    def __call__(self, run: RunRecorder) -> None:
        if self.progress is not None:
            self.progress(run)
        epoch = len(run.record.history)
        if self.pruned_at is not None:
            if epoch >= self.pruned_at:
                run.prune(f"with seed {self.first_seed}")
            return
        if not self.prunes or run.seed != self.first_seed:
            return
        value = run.record.history[-1].get(self.objective)
        if value is None or not math.isfinite(value):
            return  # a diverged epoch: the run stops as diverged, the trial fails
        self.trial.report(value, epoch)
        last = run.planned_epochs is not None and epoch >= run.planned_epochs
        # Pruning after the last epoch would save nothing and throw a finished result away.
        if not last and self.trial.should_prune():
            self.pruned_at = epoch
            run.prune(f"by {self.pruner} after epoch {epoch} ({self.objective} {value:.4g})")


class _Search:
    """The trials of one ``search`` call, asked and told batch by batch."""

    def __init__(self, plan: _Plan, optuna: Any, study: Any, axes: list[Axis],
                 parent: TrialRecorder | None, prunes: bool, pruner: str) -> None:
        self.plan = plan
        self.optuna = optuna
        self.study = study
        self.axes = axes
        self.distributions = {axis.key: axis.distribution for axis in axes}
        self.parent = parent
        self.prunes = prunes
        self.pruner = pruner
        self.rows: list[_Row] = []
        self.values: list[float] = []
        self.exhausted = False  # a grid sampler has walked its whole grid
        self.sampler_seconds = 0.0
        self.training_seconds = 0.0

    def batch(self, size: int, model: Any, train: Any, val: Any,
              fit_kwargs: Mapping[str, Any]) -> None:
        """Ask ``size`` trials, train them together, tell their results."""
        rows: list[_Row] = []
        try:
            started = time.perf_counter()
            for _ in range(size):
                rows.append(self._row(self.study.ask(self.distributions)))
            asked = time.perf_counter()
            train_rows(model, train, val, rows, fit_kwargs, vectorize=self.plan.vectorize)
            trained = time.perf_counter()
            for row in rows:
                self.values.append(self._tell(row))
                self.rows.append(row)
            self.training_seconds += trained - asked
            self.sampler_seconds += (asked - started) + (time.perf_counter() - trained)
        except BaseException:
            # Nothing stays "running" in a shared study when this process stops.
            state = self.optuna.trial.TrialState.FAIL
            for row in rows:
                if not row.told:
                    self._send(row, state=state, skip_if_finished=True)
            raise

    def _row(self, trial: Any) -> _Row:
        plan, space = self.plan, self.plan.space
        values: dict[str, Any] = {}
        labels: dict[str, str] = {}
        searched = {axis.key: axis for axis in self.axes}
        for key in space.order:
            if key in searched:
                values[key], label = searched[key].decode(trial.params[key])
                if label is not None:
                    labels[key] = label
            else:
                values[key] = space.fixed[key]
        number = trial.number
        config_id = f"{plan.config_prefix}trial={number}"
        # The row shows its search (when named) and trial number before the hyperparameters.
        shown: dict[str, Any] = {"study": plan.study_name} if plan.named else {}
        shown["trial"] = number
        shown.update(values)
        axes = [*(key for key in RESERVED if key in shown), *searched]
        seeds = list(space.seeds)
        if self.parent is not None:
            recorder = self.parent.child(config_id, shown, axes=axes, seeds=seeds,
                                         labels=labels)
        else:
            recorder = TrialRecorder(TrialResult(config_id=config_id, hparams=shown, axes=axes,
                                                 labels=labels, seeds=seeds))
        reporter = _Reporter(trial, plan.objective, seeds[0], prunes=self.prunes,
                             pruner=self.pruner, progress=recorder.on_epoch)
        recorder.on_epoch = reporter
        hparams = HParams(values, seeds=space.seeds, id=config_id, axes=tuple(searched))
        return _Row(trial, hparams, recorder, reporter)

    def _tell(self, row: _Row) -> float:
        """Tell optuna how ``row`` ended; its objective value (NaN unless it completed)."""
        states = self.optuna.trial.TrialState
        result, objective = row.result, self.plan.objective
        status = "error" if row.error is not None and result.status == "ok" else result.status
        row.trial.set_user_attr("status", status)
        value = result.metric(objective).mean if status == "ok" else math.nan
        if status == "ok" and objective not in result.metric_names:
            recorded = ", ".join(n for n in result.metric_names) or "nothing"
            self._tell_state(row, states.FAIL)
            raise SearchError(f"{self.plan.test}: search key 'objective': the trials record "
                              f"no {objective!r} (they record {recorded}); give another "
                              f"objective=")
        if status == "pruned":
            self._tell_state(row, states.PRUNED)
        elif math.isnan(value):
            row.trial.set_user_attr("reason", result.reason or result.message)
            self._tell_state(row, states.FAIL)
        else:
            self._send(row, value)
        return value

    def _tell_state(self, row: _Row, state: Any) -> None:
        self._send(row, state=state)

    def _send(self, row: _Row, *values: float, **options: Any) -> None:
        try:
            self.study.tell(row.trial, *values, **options)
        except RuntimeError as exc:
            # optuna's GridSampler stops the study when its grid is used up, which only an
            # optimize() loop allows; optuna has stored the trial by then. The search ends
            # after this batch (other processes sharing the study may have used the grid up).
            if "Study.stop" not in str(exc):
                raise
            self.exhausted = True
        row.told = True

    def result(self) -> SearchResult:
        result = SearchResult([row.result for row in self.rows], self.values,
                              [row.trial.number for row in self.rows],
                              [row.hparams for row in self.rows], self.study,
                              self.plan.objective, self.plan.minimize)
        result.sampler_seconds = self.sampler_seconds
        result.training_seconds = self.training_seconds
        return result


# --------------------------------------------------------------------------- training


def train_rows(model: Any, train: Any, val: Any, rows: list[_Row],
               fit_kwargs: Mapping[str, Any], *, vectorize: bool) -> None:
    """Train a batch as ``sweep`` trains its rows: the first ``fit`` trains every row that can
    stack with it as one vectorised stack, each later row takes its runs (or leads the rows
    left out). A row's exception is kept on the row (the trial failed, the search goes on);
    bad input (an ``HParamsError``, a ``TypeError`` from the call) is raised.

    The only place this module reaches into the training code.
    """
    from .training.fit import fit
    from .training.peers import Member, sweep_peers

    members = [Member(row.hparams.id, row.hparams.id, row.hparams,
                      on_epoch=row.recorder.on_epoch) for row in rows]
    group = sweep_peers(members, vectorize=vectorize)
    for row, member in zip(rows, members, strict=True):
        with recording_into(row.recorder), group.running(member.key):
            try:
                fit(model, train, val, row.hparams, **fit_kwargs)
            except (HParamsError, TypeError):
                raise
            except Exception as exc:
                row.error = exc
                row.recorder.close_active(describe(exc))
                row.result.message = describe(exc)
