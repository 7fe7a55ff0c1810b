"""What the gate reads from a trial: each seed's value of a metric, and each seed's status.

A seed that never reached its target must not look fast, and a seed that stopped (diverged,
out of memory, an error) must not vanish: ``metric_values`` counts a missed target as slower
than any run of the comparison, non-finite values stay in (the verdict fails on them), and
``status_changes`` lists the seeds whose run ended worse than in the baseline.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence

from ..errors import CompareExpressionError
from ..trial import TrialResult
from .tolerance import ALIASES, Tolerance

#: Statuses that make a configuration regress when its baseline ran ok ("interrupted" is the
#: user stopping the run, not the model).
BAD_STATUSES = ("diverged", "oom", "error")


def metric_values(trial: TrialResult, name: str, *, beside: TrialResult | None = None
                  ) -> list[float] | None:
    """The value of metric ``name`` (an alias allowed) for each run, in the order the runs
    trained, or None if not recorded. A run without the metric, or with a null, gives NaN.

    A seed that did not reach its target counts, for ``epochs_to_target``, as one epoch more
    than the longest run of this trial and of ``beside`` (the other side of a comparison)
    and, for ``seconds_to_target``, as the longest wall time among them: never faster than
    any seed that reached the target, however early it stopped (a run that diverged at its
    first epoch included).
    """
    name = ALIASES.get(name, name)
    runs = trial.runs
    if not runs:
        return None
    if name == "wall_seconds":
        return [run.wall_seconds for run in runs]
    if name in ("epochs_to_target", "seconds_to_target"):
        if not trial.target:
            return None
        every = [*runs, *(beside.runs if beside is not None else ())]
        if name == "epochs_to_target":
            missed = float(max(run.epochs for run in every) + 1)
            return [float(r.epochs_to_target) if r.reached_target else missed for r in runs]
        slowest = max(run.wall_seconds for run in every)
        return [float(r.seconds_to_target) if r.reached_target and r.seconds_to_target
                is not None else slowest for r in runs]
    if not any(name in run.final for run in runs):
        return None
    return [_number(run.final.get(name)) for run in runs]


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def run_seeds(trial: TrialResult) -> list[int]:
    """The seed of each run, in the order the runs trained."""
    return [run.seed for run in trial.runs]


def status_changes(baseline: TrialResult, current: TrialResult) -> list[str]:
    """The seeds whose run now ended diverged, out of memory or in an error while it ran ok in
    the baseline (the same seed, or, for a seed the baseline did not run, every seed of it)."""
    before = {run.seed: run for run in baseline.runs}
    all_ok = all(run.status == "ok" for run in baseline.runs)
    changes = []
    for run in current.runs:
        if run.status not in BAD_STATUSES:
            continue
        old = before.get(run.seed)
        if old is not None and old.status != "ok":
            continue
        if old is None and not all_ok:
            continue
        where = "ok in the baseline" if old is not None else "the baseline's seeds all ran ok"
        reason = f" ({run.reason})" if run.reason else ""
        changes.append(f"seed {run.seed}: {run.status}{reason}; {where}")
    return changes


def recorded_metrics(trials: Iterable[TrialResult]) -> list[str]:
    """Every metric name a tolerance could use on these trials, aliases included."""
    names: dict[str, None] = {}
    for trial in trials:
        names.update(dict.fromkeys(trial.metric_names))
        if trial.runs:
            names.update(dict.fromkeys(("wall_seconds", "time")))
        if trial.target and trial.runs:
            names.update(dict.fromkeys(("epochs_to_target", "seconds_to_target")))
    return list(names)


def check_metrics(rules: Sequence[Tolerance], trials: Sequence[TrialResult], where: str) -> None:
    """Raise CompareExpressionError for a rule whose metric none of ``trials`` recorded."""
    known = recorded_metrics(trials)
    for rule in rules:
        if rule.metric in known:
            continue
        close = difflib.get_close_matches(rule.metric, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise CompareExpressionError(
            f"{rule}: no trial in {where} recorded the metric {rule.metric!r} (recorded: "
            f"{', '.join(known) or 'nothing'}){hint}"
        )
