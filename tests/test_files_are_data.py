"""Results and baseline files are data: parsed as JSON and validated, never unpickled or run."""

from __future__ import annotations

import ast
import json
import math
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest_hparams
from pytest_hparams import ResultsFileError, RunFile, SeedRun, TrialResult, read_run
from pytest_hparams.report import render_tables, results_frame
from tests.conftest import json_paths


class _Payload:
    """Unpickling this creates ``marker``: what a malicious results file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_results_file_is_rejected_and_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Payload(marker))
    pickle.loads(payload)  # the payload is live: unpickling it runs code
    assert marker.exists()
    marker.unlink()
    crafted = tmp_path / "run.json"
    crafted.write_bytes(payload)
    for read in (read_run, results_frame):
        with pytest.raises(ResultsFileError, match=r"run\.json: (not a pytest-hparams results "
                                                   r"file \(not text\)|is not valid JSON)"):
            read(crafted)
    assert not marker.exists()


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['touch code-ran']\n",
    "__import__('pathlib').Path('code-ran').touch()\n",
    "cos\nsystem\n(S'touch code-ran'\ntR.",  # a protocol-0 pickle is plain text
])
def test_code_in_a_text_file_is_rejected_as_not_json(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    Path("run.json").write_text(text)
    with pytest.raises(ResultsFileError, match=r"run\.json: is not valid JSON \(.*line 1"):
        read_run("run.json")
    assert not Path("code-ran").exists()


def test_object_hooks_in_json_stay_plain_data(tmp_path):
    run = SeedRun(0, final={"accuracy": 0.9})
    trial = TrialResult(nodeid="t.py::test[a]", runs=[run]).to_dict()
    trial["hparams"] = {"model": {"py/reduce": [{"py/function": "os.system"}, ["touch x"]]},
                        "__reduce__": ["os.system", "touch x"], "opt": {"$type": "os.system"}}
    document = {"schema": "pytest-hparams/run", "version": 1, "trials": [trial]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    (read,) = read_run(path).trials
    assert read.hparams == trial["hparams"]  # dicts and strings, nothing instantiated
    assert not (tmp_path / "x").exists()


def test_the_package_never_unpickles_evaluates_or_runs_code_from_files():
    forbidden = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
                 ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"),
                 ("torch", "load"), ("yaml", "load"), ("yaml", "unsafe_load"),
                 ("numpy", "load"), ("np", "load"), ("pd", "read_pickle"),
                 ("pandas", "read_pickle"), ("jsonpickle", "decode")}
    found = []
    for module in Path(pytest_hparams.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            function = node.func
            if isinstance(function, ast.Name) and function.id in ("eval", "exec", "compile"):
                found.append(f"{module.name}:{node.lineno} {function.id}()")
            if (isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name)
                    and (function.value.id, function.attr) in forbidden):
                found.append(f"{module.name}:{node.lineno} {function.value.id}.{function.attr}()")
    assert found == []


# --------------------------------------------------------------------------- fuzzed fields

def _valid_document() -> dict:
    runs = [SeedRun(seed, final={"accuracy": 0.8 + seed / 100, "loss": 0.3},
                    history=[{"epoch": 1, "seconds": 0.1, "loss": 0.5, "accuracy": 0.7}],
                    epochs=1, epochs_to_target=1, seconds_to_target=0.1)
            for seed in (0, 1)]
    trial = TrialResult(nodeid="t.py::test[lr=0.1]", test="t.py::test", config_id="lr=0.1",
                        hparams={"lr": 0.1}, axes=["lr"], labels={"lr": "tenth"},
                        seeds=[0, 1], runs=runs,
                        target={"accuracy": 0.75}, outcome="passed", device="cpu")
    return json.loads(RunFile([trial], created="2024-01-01").to_json())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)


_PATHS = [p for p in json_paths(_valid_document()) if p]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_PATHS), _json)
def test_any_field_of_any_type_is_read_or_rejected_with_the_file_named(tmp_path_factory, where,
                                                                         value):
    document = _valid_document()
    parent = document
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = value
    path = tmp_path_factory.mktemp("fuzz") / "run.json"
    path.write_text(json.dumps(document))
    try:
        trials = read_run(path).trials
    except ResultsFileError as exc:
        assert str(exc).startswith(str(path))
        return
    # What was accepted can be used: tables, frames and the records' own summaries.
    render_tables(trials)
    results_frame(trials)
    for trial in trials:
        repr(trial)
        trial.to_dict()


def test_a_huge_but_finite_metric_summarises_without_raising_or_overflowing():
    # Found by the field fuzzing above: a diverging metric near the float limit.
    from pytest_hparams.metrics import MetricSummary

    summary = MetricSummary.of([1e308, 1e308, 0.5])
    assert summary.mean == pytest.approx(1e308 / 3 * 2)
    assert summary.std == pytest.approx(1e308 / math.sqrt(3))
    assert MetricSummary.of([2.7e154, 0.81]).std == pytest.approx(2.7e154 / math.sqrt(2))
    assert MetricSummary.of([1.7e308, -1.7e308]).std == math.inf  # beyond the float range
    assert MetricSummary.of([0.1, 0.2, 0.3]).mean == pytest.approx(0.2)
