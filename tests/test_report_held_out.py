"""The held-out column: ``fit(test=...)`` records ``test_accuracy``, and tables show it."""

from pytest_hparams import markdown_tables, render_tables
from tests.conftest import lr_trial, seed_runs


def _trial(lr, accuracies, test_accuracies=None):
    finals = [{"accuracy": accuracy, "loss": 1 - accuracy} for accuracy in accuracies]
    if test_accuracies is not None:
        for final, test_accuracy in zip(finals, test_accuracies, strict=True):
            final["test_accuracy"] = test_accuracy
    return lr_trial(seed_runs(finals, epochs=5), lr=lr, seeds=list(range(len(finals))),
                    outcome="passed", device="cpu")


def test_the_test_set_mean_follows_the_ranking_metric():
    text = render_tables([_trial(0.1, [0.90, 0.92], [0.81, 0.83]),
                          _trial(1.0, [0.70, 0.72], [0.61, 0.65])])
    header = text.splitlines()[2]
    assert header.split()[:3] == ["lr", "accuracy", "test"]
    rows = [line for line in text.splitlines() if "0.910 ± 0.014" in line or "0.710" in line]
    assert "0.820" in rows[0] and "0.630" in rows[1]
    assert "| test accuracy " in markdown_tables([_trial(0.1, [0.9], [0.8])])


def test_no_test_column_without_test_metrics():
    text = render_tables([_trial(0.1, [0.90, 0.92]), _trial(1.0, [0.70, 0.72])])
    assert "test" not in text.splitlines()[2]


def test_the_terminal_drops_the_test_column_where_it_would_not_fit():
    wide = [_trial(lr, [0.90, 0.92], [0.81, 0.83]) for lr in (0.1, 1.0)]
    for t in wide:
        t.hparams["schedule"] = f"exponential-{t.hparams['lr']}"
        t.axes.append("schedule")
    assert "test" in render_tables(wide, width=200).splitlines()[2]
    narrow = render_tables(wide, width=70).splitlines()
    assert "test" not in narrow[2]
    assert "| test accuracy " in markdown_tables(wide)
