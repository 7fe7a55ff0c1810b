"""The ``pytest-hparams`` command: compare two saved runs offline, list saved runs.

``pytest-hparams compare A B`` (or ``python -m pytest_hparams compare A B``) applies the same
gate as ``pytest --hparams-compare``: B is the candidate, A the baseline; each is a saved run's
number or name in the storage folder, or a path to a run file. The exit status is 0 when nothing
regressed, 1 on a regression and only then, 2 for bad input (a missing, unreadable or invalid
file, a bad expression, a ``--markdown`` path that cannot be written or names A or B), 3 for an
internal error (a bug: its traceback is printed) and 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .errors import CompareExpressionError, HParamsError, ResultsFileError
from .gate.options import DEFAULT_CORRECTION, correction_option
from .gate.tables import markdown_comparison, render_comparison
from .gate.tolerance import (
    DEFAULT_ALPHA,
    DEFAULT_FAIL,
    alpha_option,
    parse_tolerance,
    tolerance_option,
)
from .gate.values import check_metrics
from .gate.verdicts import compare_runs
from .runfile import RunFile, atomic_write_text, failure_text, read_run, same_file
from .saved_runs import DEFAULT_STORAGE, machine_id, resolve_baseline, saved_runs

EXIT_OK, EXIT_REGRESSED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-hparams",
        description="Compare saved pytest-hparams runs: the same gate as "
                    "pytest --hparams-compare, offline.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare = commands.add_parser(
        "compare", help="compare run B against baseline A; exit 1 on a regression",
        description="Compare run B (the candidate) against run A (the baseline). A and B are a "
                    "saved run's number or name in the storage folder, or a run file's path.",
    )
    compare.add_argument("baseline", metavar="A", help="the baseline: ID, NAME or PATH")
    compare.add_argument("candidate", metavar="B", help="the run to judge: ID, NAME or PATH")
    compare.add_argument("--fail", metavar="EXPR", action="append", type=tolerance_option,
                         default=[],
                         help="a tolerance such as accuracy:-0.01, accuracy:-2%%, time:+25%% "
                              f"(repeatable; default {', '.join(DEFAULT_FAIL)}); tolerances "
                              f"saved from B's markers override it per test")
    compare.add_argument("--alpha", type=alpha_option, default=DEFAULT_ALPHA,
                         help=f"significance level of the one-sided test (default "
                              f"{DEFAULT_ALPHA:g})")
    compare.add_argument("--correction", type=correction_option, default=DEFAULT_CORRECTION,
                         metavar="bh|holm|none",
                         help=f"correct the verdicts for the number of tests compared: bh "
                              f"(Benjamini-Hochberg), holm, or none (default "
                              f"{DEFAULT_CORRECTION})")
    compare.add_argument("--storage", default=DEFAULT_STORAGE,
                         help=f"the folder of saved runs (default {DEFAULT_STORAGE})")
    compare.add_argument("--markdown", metavar="PATH", default=None,
                         help="also write the comparison as Markdown to PATH")
    listing = commands.add_parser("list", help="list the saved runs in the storage folder")
    listing.add_argument("--storage", default=DEFAULT_STORAGE,
                         help=f"the folder of saved runs (default {DEFAULT_STORAGE})")
    return parser


def _load(spec: str, storage: str, role: str) -> RunFile:
    try:
        return read_run(resolve_baseline(spec, storage))
    except ResultsFileError as exc:
        raise ResultsFileError(f"{role} {spec!r}: {exc}") from None


def _error(message: str) -> int:
    print(f"pytest-hparams: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def compare(args: argparse.Namespace) -> int:
    baseline = _load(args.baseline, args.storage, "baseline")
    candidate = _load(args.candidate, args.storage, "candidate")
    rules = list(args.fail) or [parse_tolerance(text) for text in DEFAULT_FAIL]
    try:
        check_metrics(args.fail, [*baseline.trials, *candidate.trials],
                      f"{baseline.path} or {candidate.path}")
    except CompareExpressionError as exc:
        return _error(f"--fail: {exc}")
    environment = {**candidate.environment, "device": candidate.extra.get("device")}
    comparison = compare_runs(baseline, candidate.trials, rules, args.alpha,
                              environment=environment, correction=args.correction)
    for run in (baseline, candidate):
        if args.markdown and run.path is not None and same_file(args.markdown, run.path):
            return _error(f"--markdown {args.markdown} is the run file {run.path}: a compare "
                          f"never writes to the runs it reads; name another file")
    print(f"candidate: {candidate.path}")
    print(render_comparison(comparison))
    if args.markdown:
        try:
            atomic_write_text(Path(args.markdown), markdown_comparison(comparison))
        except (OSError, ValueError) as exc:
            return _error(f"--markdown: could not write {args.markdown}: {failure_text(exc)}")
    return EXIT_REGRESSED if comparison.failed else EXIT_OK


def list_runs(args: argparse.Namespace) -> int:
    runs = saved_runs(args.storage)
    if not runs:
        print(f"no saved runs in {args.storage}")
        return EXIT_OK
    here = machine_id()
    for run in runs:
        mark = "" if run.machine == here else f"  (machine {run.machine})"
        print(f"{run.counter:04d}  {run.path}{mark}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            return compare(args)
        return list_runs(args)
    except HParamsError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("pytest-hparams: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: never exit 1, which would read as "regressed"
        traceback.print_exc()
        print("pytest-hparams: internal error (a bug in pytest-hparams; please report it with "
              "the traceback above)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
