"""Every file the project reads, fuzzed: run files and baselines (``read_run``, ``parse_run``),
their journals, and the trials ``plot_curves`` draws. Each is either read, and then renders,
compares, saves and plots without surprises, or refused with a ResultsFileError naming the
file (and the field). Text from a file never reaches a table or Markdown as a raw escape.

Bounded: a few hundred examples each; deterministic under the ``ci`` hypothesis profile.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_hparams import ResultsFileError, RunFile, SeedRun, TrialResult, read_run
from pytest_hparams.gate.tables import markdown_comparison, render_comparison
from pytest_hparams.gate.tolerance import parse_tolerance
from pytest_hparams.gate.verdicts import compare_runs
from pytest_hparams.plots import plot_curves
from pytest_hparams.report import (
    group_by_test,
    markdown_tables,
    printable,
    render_tables,
    results_frame,
    write_csv,
    write_markdown,
)
from pytest_hparams.runfile import journal_path, json_text, trial_text, write_run
from tests.conftest import json_paths

RULES = [parse_tolerance("accuracy:-0.01"), parse_tolerance("loss:+5%"),
         parse_tolerance("epochs_to_target:+2"), parse_tolerance("time:+50%")]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])

# --------------------------------------------------------------------------- hostile values

_TEXTS = ["\x1b[31mred\x1b[0m", "a\nb", "a|b", "$x^2$", "\u202eevil", "\r\x07", "", "x" * 3000,
          "\x00", "\udc80", "lr=0.1", "accuracy", "loss", "epoch", "🙂", "<b>", "`x`"]
_texts = st.one_of(st.text(max_size=8), st.sampled_from(_TEXTS))
_numbers = st.one_of(
    st.integers(), st.floats(),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, 10**1000, 1e200, -1e200, 1e308,
                     -1.7e308, 5e-324, math.inf, -math.inf, math.nan, 0, -1, 0.5]),
)
_json = st.recursive(
    st.none() | st.booleans() | _numbers | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)
# Text no JSON encoder writes but a file may hold: put in place of a marker string.
_RAW = ["[" * 5000 + "]" * 5000, "[" * 500 + "]" * 500, '{"a":' * 400 + "1" + "}" * 400,
        "1" * 5000, "-" + "9" * 400, "NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"',
        '"\\u001b[2J"', "1.5", "-0", "[]", "{}", '"x"', "null", "true"]
_MARK = "@@raw@@"


def _valid_trial(index: int = 0) -> dict:
    runs = [SeedRun(seed, final={"accuracy": 0.8 + seed / 100, "loss": 0.3 + index / 10},
                    best={"accuracy": 0.85}, epochs=2, epochs_to_target=1,
                    seconds_to_target=0.1, wall_seconds=0.2,
                    history=[{"epoch": 1, "seconds": 0.1, "loss": 0.5, "accuracy": 0.7},
                             {"epoch": 2, "seconds": 0.2, "loss": 0.4, "accuracy": 0.8}])
            for seed in (0, 1)]
    trial = TrialResult(nodeid=f"t.py::test[lr={index}]", test="t.py::test",
                        config_id=f"lr={index}", hparams={"lr": index, "act": "relu"},
                        axes=["lr", "act"], labels={"act": "ReLU"}, seeds=[0, 1], runs=runs,
                        target={"accuracy": 0.75}, outcome="passed", device="cpu",
                        tolerance={"accuracy": "accuracy:-0.02", "loss": None})
    return json.loads(trial_text(trial))


def _valid_document() -> dict:
    run = RunFile([], created="2024-01-01T00:00:00", extra={"device": "cpu", "run_id": "r1"},
                  environment={"machine_info": {"node": "box", "cpu": {"brand_raw": "x"}},
                               "commit_info": {"id": "abc", "dirty": False}, "torch": "2"})
    document = json.loads(run.to_json())
    document["trials"] = [_valid_trial(0), _valid_trial(1)]
    return document


_PATHS = [p for p in json_paths(_valid_document()) if p]


def _value_at(document, path):
    for step in path:
        document = document[step]
    return document


# Where text goes: the fields a table, a CSV or Markdown shows.
_TEXT_PATHS = [p for p in _PATHS if isinstance(_value_at(_valid_document(), p), str)]
_RAW_TEXTS = ['"\\ud800"', '"a\\udc80b"', '"\\u001b[2J"', '"\\u202e"', '"\\u0000"',
              '"x\\ny"']


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A run file's text: a valid one with fields replaced, added or removed, or raw text
    spliced in where no encoder would put it, or cut short."""
    document = _valid_document()
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(_PATHS))
        parent = document
        try:
            for step in where[:-1]:
                parent = parent[step]
            kind = draw(st.sampled_from(["replace", "replace", "raw", "raw", "add", "drop",
                                         "text", "text"]))
            if kind == "text":
                where = draw(st.sampled_from(_TEXT_PATHS))
                parent = _value_at(document, where[:-1])
                parent[where[-1]] = draw(st.one_of(_texts, st.just(_MARK + "text")))
            elif kind == "replace":
                parent[where[-1]] = draw(_json)
            elif kind == "raw":
                parent[where[-1]] = _MARK
            elif kind == "add" and isinstance(parent, dict):
                parent[draw(_texts)] = draw(_json)
            elif kind == "drop":
                del parent[where[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or retyped this path
    text = json.dumps(document)
    while f'"{_MARK}text"' in text:
        text = text.replace(f'"{_MARK}text"', draw(st.sampled_from(_RAW_TEXTS)), 1)
    while f'"{_MARK}"' in text:
        text = text.replace(f'"{_MARK}"', draw(st.sampled_from(_RAW)), 1)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


# --------------------------------------------------------------------------- what readers do

_ESCAPES = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown_safely(text: str) -> None:
    """Text a terminal or a Markdown file receives: no escapes, nothing unencodable."""
    assert not _ESCAPES.search(text), repr(_ESCAPES.search(text))
    text.encode("utf-8")


def _markdown_intact(text: str, trials: list[TrialResult]) -> None:
    """Each table's rows have its header's cells: no cell spills onto another line or splits
    on a "|"; and every trial of a test that trained has its row."""
    tables: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    for rows in tables:
        width = len(re.split(r"(?<!\\)\|", rows[0]))
        for line in rows:
            assert len(re.split(r"(?<!\\)\|", line)) == width, line
    shown = sum(len(group) for group in group_by_test(trials).values())
    assert sum(len(rows) - 2 for rows in tables) == shown


def _use(run: RunFile, folder: Path) -> None:
    """Everything the plugin and the command do with a file they read."""
    trials = run.trials
    table = render_tables(trials)
    _shown_safely(table)
    markdown = markdown_tables(trials)
    _shown_safely(markdown)
    _markdown_intact(markdown, trials)
    results_frame(trials)
    for trial in trials:
        repr(trial)
        trial.to_dict()
    write_run(folder / "again.json", run)
    assert len(read_run(folder / "again.json").trials) == len(trials)
    write_csv(trials, folder / "again.csv")
    write_markdown(trials, folder / "again.md")
    comparison = compare_runs(run, trials, RULES, 0.05, environment=run.environment)
    render_comparison(comparison).encode("utf-8")
    markdown_comparison(comparison).encode("utf-8")


def _refused_naming(exc: ResultsFileError, *paths: Path) -> None:
    assert str(exc).startswith(tuple(str(p) for p in paths)), str(exc)[:300]
    assert len(str(exc)) < 2000  # a huge value is described, not printed


def test_any_run_file_is_read_and_usable_or_refused_naming_the_file(tmp_path_factory):
    seen = {"read": 0, "refused": 0}

    @FUZZ
    @given(documents())
    def check(text: str) -> None:
        folder = tmp_path_factory.mktemp("fuzz")
        path = folder / "run.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            run = read_run(path)
        except ResultsFileError as exc:
            _refused_naming(exc, path)
            seen["refused"] += 1
            return
        seen["read"] += 1
        _use(run, folder)

    check()
    assert seen["read"] >= 50 and seen["refused"] >= 50, seen  # both sides exercised


@st.composite
def journals(draw: st.DrawFn) -> list[str]:
    """A journal's lines: its header, trials, garbage, and maybe a torn last line."""
    lines = [json.dumps({"schema": "pytest-hparams/journal", "version": 1,
                         "run_id": draw(st.sampled_from(["r1", "r1", "other"]))})]
    for index in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["trial", "trial", "hostile", "raw", "environment"]))
        if kind == "trial":
            lines.append(json.dumps({"trial": _valid_trial(index + 5)}))
        elif kind == "hostile":
            entry = _valid_trial(index + 5)
            entry[draw(st.sampled_from(sorted(entry)))] = draw(_json)
            lines.append(json.dumps({"trial": entry}))
        elif kind == "raw":
            lines.append(draw(st.sampled_from([*_RAW, "{", "", "[1, 2]", '{"trial": 3}'])))
        else:
            lines.append(json.dumps({"environment": draw(_json), "device": draw(_json)}))
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):
        text += json.dumps({"trial": _valid_trial(9)})[: draw(st.integers(0, 50))]
    return text


@FUZZ
@given(journals())
def test_any_journal_beside_a_run_file_is_read_or_refused_naming_it(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("journal")
    path = folder / "run.json"
    path.write_text(json.dumps(_valid_document()))
    journal_path(path).write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        run = read_run(path)
    except ResultsFileError as exc:
        _refused_naming(exc, journal_path(path))
        return
    assert {"t.py::test[lr=0]", "t.py::test[lr=1]"} <= {t.nodeid for t in run.trials}
    _use(run, folder)


def test_a_torn_last_journal_line_is_ignored_and_a_torn_middle_line_is_an_error(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_valid_document()))
    header = '{"schema": "pytest-hparams/journal", "version": 1, "run_id": "r1"}\n'
    trial = json.dumps({"trial": _valid_trial(7)})
    journal_path(path).write_text(header + trial + "\n" + trial[:30])
    assert [t.nodeid for t in read_run(path).trials][-1] == "t.py::test[lr=7]"
    journal_path(path).write_text(header + trial[:30] + "\n" + trial + "\n")
    with pytest.raises(ResultsFileError, match=r"run\.json\.journal: line 2: is not valid JSON"):
        read_run(path)


# ----------------------------------------------------------------- writer and reader agree

_any_float = st.floats()  # NaN, the infinities, 1e308: a loop may log any of them
_live_text = st.one_of(st.text(max_size=6), st.sampled_from(_TEXTS))
_hparam_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _any_float | _live_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_live_text, inner, max_size=2),
    max_leaves=5)


@st.composite
def live_trials(draw: st.DrawFn) -> TrialResult:
    """A trial as the plugin records one: whatever a test body, a loop or fit can put in."""
    runs = []
    for seed in draw(st.lists(st.integers(), max_size=3)):
        reached = draw(st.booleans())
        history = [{"epoch": draw(st.one_of(st.integers(0, 10), _any_float)),
                    "seconds": draw(st.floats(0, 1e6)), **draw(st.dictionaries(
                        _live_text, _any_float, max_size=2))}
                   for _ in range(draw(st.integers(0, 2)))]
        runs.append(SeedRun(seed, status=draw(_live_text), reason=draw(_live_text),
                            final=draw(st.dictionaries(_live_text, _any_float, max_size=3)),
                            best=draw(st.dictionaries(_live_text, _any_float, max_size=2)),
                            history=history, epochs=draw(st.integers(0, 10**6)),
                            epochs_to_target=draw(st.integers(1, 100)) if reached else None,
                            seconds_to_target=draw(st.floats(0, 1e6)) if reached else None,
                            wall_seconds=draw(st.floats(0, 1e9)), device=draw(_live_text)))
    keys = draw(st.lists(_live_text, max_size=3, unique=True))
    return TrialResult(
        nodeid=draw(_live_text), test=draw(_live_text), config_id=draw(_live_text),
        hparams={key: draw(_hparam_values) for key in keys}, axes=keys,
        labels=draw(st.dictionaries(st.sampled_from(keys or ["x"]), _live_text, max_size=2)),
        seeds=[run.seed for run in runs], runs=runs,
        target=draw(st.dictionaries(_live_text, st.floats(allow_nan=False), max_size=2)),
        outcome=draw(_live_text), message=draw(_live_text), device=draw(_live_text),
        duration=draw(st.floats(0, 1e9)), worker=draw(_live_text),
        notes=draw(st.lists(_live_text, max_size=2)),
        tolerance=draw(st.dictionaries(st.sampled_from(["accuracy", "loss", "time"]),
                                       st.sampled_from([None, "accuracy:-0.01", "loss:+5%",
                                                        "time:+25%"]), max_size=2)))


@FUZZ
@given(st.lists(live_trials(), max_size=3))
def test_every_run_the_plugin_writes_reads_back(tmp_path_factory, trials):
    folder = tmp_path_factory.mktemp("live")
    for index, trial in enumerate(trials):
        trial.nodeid = f"{trial.nodeid}#{index}"  # node ids are unique within a run
    for trial in trials:  # the fast serialisation says what to_dict says
        assert json.loads(trial_text(trial)) == json.loads(json_text(trial.to_dict()))
    write_run(folder / "run.json", RunFile(trials, created="2024-01-01"))
    run = read_run(folder / "run.json")
    assert [t.nodeid for t in run.trials] == [_whole(t.nodeid) for t in trials]
    _use(run, folder)


def _whole(text: str) -> str:
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


# --------------------------------------------------------------------------- plots

_epochs = st.one_of(st.integers(-3, 5), st.sampled_from([math.inf, -math.inf, math.nan, 1e300,
                                                         2**60, 2.5, -0.0, None]))


@st.composite
def plotted(draw: st.DrawFn) -> list[TrialResult]:
    trials = []
    for index in range(draw(st.integers(1, 3))):
        test = draw(st.one_of(st.just("t.py::test"), _texts, st.just("t.py::" + "x" * 400)))
        runs = []
        for seed in range(draw(st.integers(1, 2))):
            history = []
            for _ in range(draw(st.integers(0, 3))):
                row = {"loss": draw(_numbers.filter(lambda v: isinstance(v, float))),
                       "accuracy": draw(st.floats(0, 1))}
                epoch = draw(_epochs)
                if epoch is not None:
                    row["epoch"] = epoch
                history.append(row)
            runs.append(SeedRun(seed, history=history, final={"accuracy": 0.5}))
        label = draw(_texts)
        trials.append(TrialResult(nodeid=f"{test}[{index}]", test=test, config_id=label,
                                  hparams={"a": label}, axes=["a"], runs=runs,
                                  target={"accuracy": draw(st.sampled_from([0.5, 1e300]))}))
    return trials


@settings(FUZZ, max_examples=40)
@given(plotted())
def test_any_trials_plot_or_are_left_out_without_error(tmp_path_factory, trials):
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("plots")
    written = plot_curves(trials, folder)
    for path in written:
        assert path.exists() and len(path.name.encode()) <= 255
    assert len(set(written)) == len(written)


# --------------------------------------------------------------------------- found by fuzzing


@pytest.mark.parametrize("raw, message", [
    ("[" * 100_000, "nested too deeply"),
    ('{"schema": "pytest-hparams/run", "version": 1, "trials": [], "x": ' + "1" * 5000 + "}",
     "not a results file (Exceeds the limit"),
    ('{"schema": "pytest-hparams/run", "version": ' + "9" * 400 + ', "trials": []}',
     "schema version an integer of 400 digits"),
])
def test_structures_no_parser_should_swallow_are_refused(tmp_path, raw, message):
    path = tmp_path / "run.json"
    path.write_text(raw)
    with pytest.raises(ResultsFileError, match=re.escape(message)):
        read_run(path)


@pytest.mark.parametrize("field, value, message", [
    ("seeds", [0.5], '"seeds" must be a list of integers'),
    ("tolerance", "accuracy:-0.01", '"tolerance" must be an object of metric: tolerance'),
    ("tolerance", {"accuracy": "up"}, '"tolerance" must be an object of metric: tolerance'),
    ("runs", [{"seed": 0, "epochs": 10**30}], 'run 0: "epochs" must be a whole number'),
    ("runs", [{"seed": 0, "history": [{"epoch": "one"}]}], 'run 0: "history" must be'),
    ("runs", [{"seed": 0, "final": {"accuracy": 10**400}}], 'run 0: "final" must be an object'),
    ("target", {"accuracy": 10**400}, '"target" must be an object of metric: number'),
])
def test_fields_out_of_range_are_refused_naming_them(tmp_path, field, value, message):
    document = _valid_document()
    document["trials"][0][field] = value
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ResultsFileError) as info:
        read_run(path)
    assert str(info.value).startswith(f"{path}: trial 0 (t.py::test[lr=0]): {message}")


def test_metrics_near_the_float_limit_compare_and_render(tmp_path):
    document = _valid_document()
    for trial in document["trials"]:
        for run in trial["runs"]:
            run["final"] = {"accuracy": 1e200 * (run["seed"] + 1), "loss": -1.7e308}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    _use(read_run(path), tmp_path)


def test_escapes_in_labels_are_shown_not_obeyed():
    trial = TrialResult(nodeid="t.py::test[x]", test="t.py::test\x1b[2J",
                        config_id="x", hparams={"act": "re\x1b[31mlu\nnext|row"}, axes=["act"],
                        runs=[SeedRun(0, status="error", reason="boom\x1b]0;title\x07\r\n",
                                      final={"accuracy": 0.5})])
    table = render_tables([trial])
    assert "re\\x1b[31mlu\\nnext|row" in table
    assert "boom\\x1b]0;title\\x07\\r\\n" in table
    _shown_safely(table)
    markdown = markdown_tables([trial])
    assert "re\\x1b[31mlu\\nnext\\|row" in markdown
    _markdown_intact(markdown, [trial])
    assert printable("\udc80") == "\\udc80"


def test_unicode_categories_of_the_escapes():
    # The pattern above agrees with what printable() escapes: every C0/C1 control.
    for code in [*range(32), *range(127, 160)]:
        assert unicodedata.category(chr(code)) == "Cc"
        assert printable(chr(code)) != chr(code)
