"""Lightning: a LightningModule trained through its own steps by a real Trainer, each seed a
recorded run that the table, the result files, the gate and xdist see as they see ``fit``'s."""

import contextvars
import importlib
import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

# Imported here, before any pytester run: in-process runs drop the modules they first import.
L = pytest.importorskip("lightning")
pytest.importorskip("torchmetrics")
pytest.importorskip("sklearn")

from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from pytest_hparams import (  # noqa: E402
    HParams,
    HParamsCallback,
    SettingsError,
    TrialRecorder,
    TrialResult,
    fit_lightning,
    trainer_device,
)
from pytest_hparams.recording import recording_into  # noqa: E402

# A user's test file: a torchmetrics classifier with a DataModule on the bundled digits.
MODULE = """
import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from pytest_hparams import digits, fit_lightning

torch.set_num_threads(1)  # a small MLP: one thread is fastest on a shared machine
DATA = digits()


class Digits(L.LightningDataModule):
    def __init__(self, batch_size=64):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(TensorDataset(*DATA.train), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*DATA.val), batch_size=512)


class Classifier(L.LightningModule):
    def __init__(self, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro")

    def training_step(self, batch, batch_idx):
        inputs, labels = batch
        loss = F.cross_entropy(self.net(inputs), labels)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        inputs, labels = batch
        logits = self.net(inputs)
        self.log("val_loss", F.cross_entropy(logits, labels))
        self.val_acc(logits, labels)
        self.log("val_acc", self.val_acc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
"""

GRID = MODULE + """

@pytest.mark.hparams(lr=[0.003, 0.03], seeds=2, epochs=3, vectorize=False)
def test_classifier(hparams, hparams_device):
    result = fit_lightning(lambda hp: Classifier(lr=hp.lr), Digits(), hparams,
                           device=hparams_device)
    assert result.status == "ok"
"""

ARGS = ("-p", "no:cacheprovider", "--hparams-device=cpu")


def _trials(pytester: pytest.Pytester, name: str = "run.json") -> dict[str, dict]:
    trials = json.loads((pytester.path / name).read_text())["trials"]
    return {t["nodeid"].split("::", 1)[1]: t for t in trials}


def test_each_configuration_is_a_row_and_each_seed_a_run_with_lightnings_logged_metrics(
        pytester):
    pytester.makepyfile(test_lit=GRID)
    result = pytester.runpytest(*ARGS, "--hparams-json", "run.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*hyperparameter comparison*",
        "test_lit.py::test_classifier",
        "2 configurations × 2 seeds, on cpu",
        "*lr*accuracy*loss*status*",
        "*0.003*0.* ± *passed",
        "*0.03*0.* ± *passed",
    ])
    trials = _trials(pytester)
    assert list(trials) == ["test_classifier[lr=0.003]", "test_classifier[lr=0.03]"]
    for trial in trials.values():
        assert trial["status"] == "ok" and trial["device"] == "cpu"
        assert [run["seed"] for run in trial["runs"]] == [0, 1]
        for run in trial["runs"]:
            assert [row["epoch"] for row in run["history"]] == [1, 2, 3]
            assert set(run["history"][0]) == {"epoch", "seconds", "accuracy", "loss",
                                              "train_loss", "lr"}
            assert {row["lr"] for row in run["history"]} == {trial["hparams"]["lr"]}
            assert run["final"]["accuracy"] == run["history"][-1]["accuracy"]
    # the seeds are different runs, and a higher learning rate learns faster in 3 epochs
    slow, fast = (trials[f"test_classifier[lr={lr}]"] for lr in ("0.003", "0.03"))
    assert len({run["final"]["loss"] for run in slow["runs"]}) == 2
    assert fast["metrics"]["accuracy"]["mean"] > slow["metrics"]["accuracy"]["mean"]
    # quiet by default: no logs, checkpoints or other files of Lightning's
    written = {p.name for p in pytester.path.iterdir()} - {".benchmarks"}  # pytest-benchmark's
    assert written == {"run.json", "test_lit.py"}


def test_changing_configure_optimizers_changes_the_results_and_the_gate_catches_it(pytester):
    # The bug of issue 12: the module's own optimiser was bypassed, so Adam -> SGD "unchanged".
    pytester.makepyfile(test_lit=GRID)
    saved = pytester.runpytest(*ARGS, "--hparams-save=adam", "--hparams-json", "adam.json")
    saved.assert_outcomes(passed=2)
    pytester.makepyfile(test_lit=GRID.replace("torch.optim.Adam(", "torch.optim.SGD("))
    compared = pytester.runpytest(*ARGS, "--hparams-compare=adam", "--hparams-json", "sgd.json")
    adam, sgd = _trials(pytester, "adam.json"), _trials(pytester, "sgd.json")
    for item in adam:
        assert sgd[item]["metrics"]["accuracy"]["mean"] < adam[item]["metrics"]["accuracy"][
            "mean"] - 0.1
    compared.assert_outcomes(failed=2)
    compared.stdout.fnmatch_lines([
        "FAILED test_lit.py::test_classifier[[]lr=0.003[]] - Failed: accuracy*",
        "FAILED test_lit.py::test_classifier[[]lr=0.03[]] - Failed: accuracy*",
    ])


def test_a_target_stops_each_seed_where_it_is_reached_and_divergence_is_recorded(pytester):
    pytester.makepyfile(test_lit=MODULE.replace("torch.optim.Adam(", "torch.optim.SGD(") + """

@pytest.mark.hparams(lr=[0.3, 1e10], seeds=2, epochs=6)
def test_classifier(hparams, hparams_device):
    result = fit_lightning(lambda hp: Classifier(lr=hp.lr), Digits(), hparams,
                           device=hparams_device, target={"accuracy": 0.8})
    assert result.status == ("diverged" if hparams.lr > 1 else "ok")
""")
    result = pytester.runpytest(*ARGS, "--hparams-json", "run.json")
    result.assert_outcomes(passed=2)
    trials = _trials(pytester)
    for run in trials["test_classifier[lr=0.3]"]["runs"]:
        accuracies = [row["accuracy"] for row in run["history"]]
        assert run["epochs_to_target"] == run["epochs"] == len(accuracies) < 6
        assert accuracies[-1] >= 0.8 > max(accuracies[:-1], default=0)
    diverged = trials["test_classifier[lr=1e+10]"]
    assert diverged["status"] == "diverged"
    for run in diverged["runs"]:
        assert run["status"] == "diverged" and run["epochs"] == 1
        assert re.fullmatch(r"(train_)?loss became (nan|inf) at epoch 1", run["reason"])
    result.stdout.fnmatch_lines(["*1e+10*passed, diverged [[]1[]]",
                                 "[[]1[]] seed 0: diverged: *loss became * at epoch 1; seed 1*"])


def test_the_callback_records_a_users_own_trainer(pytester):
    pytester.makepyfile(test_lit=MODULE + """
from pytest_hparams import HParamsCallback, trainer_device


@pytest.mark.hparams(lr=[0.003, 0.03], seeds=2)
def test_own_trainer(hparams, hparams_device, hparams_trial):
    for run in hparams_trial.runs(target={"accuracy": 0.99}):
        trainer = L.Trainer(**trainer_device(hparams_device), max_epochs=2, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            callbacks=[HParamsCallback(run)])
        trainer.fit(Classifier(lr=hparams.lr), datamodule=Digits())
        assert trainer.callback_metrics["val_acc"].item() == run.record.history[-1]["accuracy"]
""")
    result = pytester.runpytest(*ARGS, "--hparams-json", "run.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 configurations × 2 seeds, target accuracy >= 0.99, on cpu",
                                 "*0.003*0.* ± *- (0/2)*passed"])
    for trial in _trials(pytester).values():
        assert trial["target"] == {"accuracy": 0.99}
        assert [len(run["history"]) for run in trial["runs"]] == [2, 2]


def test_xdist_workers_train_lightning_and_report_every_row(pytester, monkeypatch):
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_lit=GRID)
    pytester.runpytest(*ARGS, "--hparams-json", "alone.json").assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess(*ARGS, "-n", "2", "--hparams-json", "run.json")
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("hyperparameter comparison") == 1
    result.stdout.fnmatch_lines(["*0.003*0.* ± *passed", "*0.03*0.* ± *passed"])
    spread, alone = _trials(pytester), _trials(pytester, "alone.json")
    assert {t["worker"] for t in spread.values()} == {"gw0", "gw1"}
    assert list(spread) == list(alone)
    for item, trial in spread.items():  # the same runs, to the last bit, as in one process
        assert _measured(trial) == _measured(alone[item])


def _measured(trial: dict) -> list[list[dict]]:
    """Each run's per-epoch metrics, without the seconds (which vary from run to run)."""
    return [[{k: v for k, v in row.items() if k != "seconds"} for row in run["history"]]
            for run in trial["runs"]]


# --------------------------------------------------------------------------- fit_lightning itself


class Scripted(L.LightningModule):
    """Trains a real linear layer and logs values fixed in advance, epoch by epoch."""

    def __init__(self, hparams, logs=None, fail=None):
        super().__init__()
        self.save_hyperparameters(hparams)  # positional, as Lightning's docs show
        self.layer = torch.nn.Linear(4, 2)
        self.logs = logs or {"val_acc": [0.5, 0.6, 0.7, 0.8], "val_loss": [0.9, 0.8, 0.7, 0.6]}
        self.fail = fail

    def training_step(self, batch, batch_idx):
        if self.fail is not None:
            raise self.fail
        inputs, labels = batch
        loss = F.cross_entropy(self.layer(inputs), labels)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:
            return
        for name, values in self.logs.items():
            self.log(name, values[self.current_epoch])
        self.log("seen_lr", self.hparams.lr)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _loaders(batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=generator),
                         torch.randint(0, 2, (32,), generator=generator))
    return DataLoader(data, batch_size=batch_size, shuffle=True), DataLoader(data, batch_size=32)


class Batches(L.LightningDataModule):
    def __init__(self, batch_size: int = 16):
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        return _loaders(self.hparams.batch_size)[0]

    def val_dataloader(self):
        return _loaders()[1]


def _fit(*args, **kwargs) -> TrialResult:
    """``fit_lightning`` recorded apart from this test's own recorder (each call a fresh trial)."""
    with recording_into(TrialRecorder(TrialResult(seeds=[0]))):
        return fit_lightning(*args, **kwargs)


def _hparams(**values) -> HParams:
    return HParams({"lr": 0.1, "epochs": 4, **values}, seeds=(0, 1))


def test_the_run_holds_what_the_module_logged_under_the_tables_names():
    result = _fit(Scripted, _loaders(), _hparams(lr=0.25))
    assert isinstance(result, TrialResult)
    for run in result.runs:
        assert [row["accuracy"] for row in run.history] == pytest.approx([0.5, 0.6, 0.7, 0.8])
        assert [row["loss"] for row in run.history] == pytest.approx([0.9, 0.8, 0.7, 0.6])
        assert {row["seen_lr"] for row in run.history} == {0.25}  # save_hyperparameters(hp)
        assert {row["lr"] for row in run.history} == {0.25}
        assert "train_loss" in run.final and "train_loss_epoch" not in run.final
    assert result.accuracy == pytest.approx(0.8)
    assert "PL_GLOBAL_SEED" not in os.environ and "PL_SEED_WORKERS" not in os.environ


def test_outside_pytest_it_records_a_trial_of_its_own():
    result = contextvars.Context().run(  # no test's recorder in this context
        fit_lightning, Scripted, _loaders(), {"lr": 0.1, "epochs": 2, "batch_size": 16})
    assert (result.config_id, result.hparams, result.device) == (
        "default", {"lr": 0.1, "epochs": 2, "batch_size": 16}, "cpu")
    assert [len(run.history) for run in result.runs] == [2]


def test_a_datamodule_and_a_step_budget_serve_as_well():
    hparams = HParams({"lr": 0.1, "batch_size": 8}, seeds=(0,))
    result = _fit(Scripted, Batches(batch_size=8), hparams, trainer_kwargs={"max_steps": 12})
    assert result.runs[0].epochs == 3  # 32 samples in batches of 8: 4 steps an epoch
    assert [row["accuracy"] for row in result.runs[0].history] == pytest.approx([0.5, 0.6, 0.7])


def test_a_reached_target_stops_the_trainer_and_a_nan_loss_is_diverged():
    result = _fit(Scripted, _loaders(), _hparams(), target={"accuracy": 0.65})
    assert [(run.epochs, run.epochs_to_target) for run in result.runs] == [(3, 3), (3, 3)]
    trained_on = _fit(Scripted, _loaders(), _hparams(), target={"accuracy": 0.65},
                               stop_at_target=False, seeds=[0])
    assert (trained_on.runs[0].epochs, trained_on.runs[0].epochs_to_target) == (4, 3)

    logs = {"val_acc": [0.5, 0.5, 0.5, 0.5], "val_loss": [0.9, math.nan, 0.7, 0.6]}
    result = _fit(lambda hp: Scripted(hp, logs), _loaders(), _hparams())
    assert result.status == "diverged"
    assert [run.epochs for run in result.runs] == [2, 2]
    assert result.runs[0].reason == "loss became nan at epoch 2"


def test_named_metrics_stand_for_accuracy_and_loss():
    logs = {"val_f1": [0.1, 0.2, 0.3, 0.4], "val_nll": [4.0, 3.0, 2.0, 1.0],
            "val_loss": [9.0, 9.0, 9.0, 9.0]}
    result = _fit(lambda hp: Scripted(hp, logs), _loaders(), _hparams(),
                           accuracy="val_f1", loss="val_nll")
    final = result.runs[0].final
    assert (final["accuracy"], final["loss"], final["val_loss"]) == pytest.approx((0.4, 1, 9))
    with pytest.raises(SettingsError, match=r"accuracy='val_f2'.*logged no 'val_f2'.*val_f1"):
        _fit(lambda hp: Scripted(hp, logs), _loaders(), _hparams(), accuracy="val_f2")


def test_unrecognised_logged_names_are_warned_about_once():
    logs = {"f1_score": [0.1, 0.2, 0.3, 0.4]}
    with pytest.warns(UserWarning, match="none of the logged metrics .*f1_score.* reads as") as w:
        _fit(lambda hp: Scripted(hp, logs), _loaders(), _hparams(), seeds=[0])
    assert len([x for x in w if "reads as" in str(x.message)]) == 1


@pytest.mark.parametrize(("logged", "validating", "accuracy", "loss"), [
    ({"val_acc": 1, "val_loss": 1, "train_loss": 1}, True, "val_acc", "val_loss"),
    ({"val/accuracy": 1, "val/loss": 1}, True, "val/accuracy", "val/loss"),
    ({"valid_acc": 1, "validation_loss": 1}, True, "valid_acc", "validation_loss"),
    ({"val_MulticlassAccuracy": 1, "loss": 1}, True, "val_MulticlassAccuracy", None),
    ({"train_acc": 1, "loss": 1}, False, "train_acc", "loss"),
    ({"train_acc": 1, "train_loss": 1}, True, None, None),
])
def test_the_default_names_cover_the_common_spellings(logged, validating, accuracy, loss):
    from pytest_hparams.lightning import default_metric_name

    assert default_metric_name(logged, "accuracy", validating=validating) == accuracy
    assert default_metric_name(logged, "loss", validating=validating) == loss


def test_seeds_are_reproducible_and_differ_from_each_other():
    def run() -> list[float]:
        result = _fit(Scripted, _loaders(), _hparams())
        return [r.final["train_loss"] for r in result.runs]

    first = run()
    assert first == run()
    assert first[0] != first[1]


def test_an_out_of_memory_error_is_oom_and_the_next_seed_runs():
    failures = iter([torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")])

    def factory(hp):
        return Scripted(hp, fail=next(failures, None))

    result = _fit(factory, _loaders(), _hparams())
    assert [run.status for run in result.runs] == ["oom", "ok"]
    assert result.runs[0].reason.startswith("OutOfMemoryError: CUDA out of memory")
    assert len(result.runs[1].history) == 4


def test_an_error_is_recorded_and_raised():
    recorder = TrialRecorder(TrialResult(seeds=[0, 1]))
    with recording_into(recorder), pytest.raises(ValueError, match="bad batch"):
        fit_lightning(lambda hp: Scripted(hp, fail=ValueError("bad batch")), _loaders(),
                      HParams({"lr": 0.1, "epochs": 2}))
    assert [(run.status, run.reason) for run in recorder.result.runs] == [
        ("error", "ValueError: bad batch")]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stays_a_keyboard_interrupt_with_sigint_handled_again():
    before = signal.getsignal(signal.SIGINT)
    recorder = TrialRecorder(TrialResult(seeds=[0]))
    with recording_into(recorder), pytest.raises(KeyboardInterrupt):
        fit_lightning(lambda hp: Scripted(hp, fail=KeyboardInterrupt()), _loaders(),
                      HParams({"lr": 0.1, "epochs": 2}))
    assert signal.getsignal(signal.SIGINT) is before
    assert recorder.result.runs[0].status == "interrupted"


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: _fit(Scripted, _loaders(), _hparams(), epochs=3), SettingsError,
     r"epochs are given in 2 places: epochs= \(3\), the hparams' epochs \(4\)"),
    (lambda: _fit(Scripted, _loaders(), HParams({"lr": 0.1})), SettingsError,
     "how many epochs"),
    (lambda: _fit(Scripted, _loaders(batch_size=16), _hparams(batch_size=8)),
     SettingsError, r"'batch_size' is 8 but the train loader was built with batch_size=16"),
    (lambda: _fit(Scripted, Batches(batch_size=16), _hparams(batch_size=8)), SettingsError,
     r"'batch_size' is 8 but the LightningDataModule was built with batch_size=16"),
    (lambda: _fit(Scripted, _loaders(), _hparams(),
                           trainer_kwargs={"accelerator": "gpu"}),
     SettingsError, r"trainer_kwargs\['accelerator'\]: the device comes from device="),
    (lambda: _fit(Scripted, (torch.zeros(4, 4), torch.zeros(4)), _hparams()),
     TypeError, r"pair of tensors.*DataLoader\(TensorDataset"),
    (lambda: _fit(Scripted({"lr": 0.1}), _loaders(), _hparams()),
     TypeError, r"module_factory must be a function of the hparams"),
    (lambda: _fit(lambda hp: torch.nn.Linear(4, 2), _loaders(), _hparams()),
     TypeError, "returned Linear, not a lightning.pytorch.LightningModule"),
])
def test_what_fit_lightning_cannot_honour_is_refused_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_trainer_runs_on_the_tests_device(monkeypatch):
    import pytest_hparams.lightning as module

    assert trainer_device("cpu") == {"accelerator": "cpu", "devices": 1}
    monkeypatch.setattr(module, "resolve_device", torch.device)  # no GPU needed to map names
    assert trainer_device("cuda:1") == {"accelerator": "gpu", "devices": [1]}
    assert trainer_device("mps") == {"accelerator": "mps", "devices": 1}


def test_without_lightning_each_entry_point_names_the_extra(monkeypatch):
    import pytest_hparams

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "pytest_hparams.lightning")
    monkeypatch.delattr(pytest_hparams, "lightning")
    without = importlib.import_module("pytest_hparams.lightning")
    install = r'pip install "pytest-hparams\[lightning\]"'
    with pytest.raises(ImportError, match=install):
        without.fit_lightning(lambda hp: None, None, HParams({"epochs": 1}))
    with pytest.raises(ImportError, match=install):
        without.HParamsCallback(None)


def test_the_package_imports_whole_without_lightning(tmp_path):
    code = ("import sys\n"
            "sys.modules['lightning'] = sys.modules['lightning.pytorch'] = None\n"
            "from pytest_hparams import *\n"
            "try:\n"
            "    fit_lightning(None, None)\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ('pytest_hparams.lightning needs Lightning 2: '
                                   'pip install "pytest-hparams[lightning]"')


def test_a_users_callbacks_start_fresh_for_each_seed():
    from lightning.pytorch.callbacks import EarlyStopping

    # Shared between seeds, EarlyStopping's patience would carry seed 0's count into seed 1.
    stop = EarlyStopping(monitor="val_loss", patience=0, mode="min")
    logs = {"val_acc": [0.5, 0.5, 0.5, 0.5], "val_loss": [0.5, 0.6, 0.7, 0.8]}
    result = _fit(lambda hp: Scripted(hp, logs), _loaders(), _hparams(),
                           trainer_kwargs={"callbacks": [stop]})
    assert [run.epochs for run in result.runs] == [2, 2]
    assert stop.wait_count == 0
    with pytest.raises(TypeError, match=r"a run of hparams_trial\.runs"):
        HParamsCallback(object())
