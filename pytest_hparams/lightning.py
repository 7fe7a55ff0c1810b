"""Lightning: a LightningModule trained by a real ``Trainer`` through its own steps, per seed.

``fit_lightning`` is ``fit`` for Lightning users: the module's own ``training_step``,
``validation_step`` and ``configure_optimizers`` do the work, on the test's device, once per
seed, and ``HParamsCallback`` turns what the module logged with ``self.log`` into the run's
per-epoch metrics (so the table, the result files, the baseline gate and xdist see them as they
see ``fit``'s). The callback also serves users who build their own ``Trainer``::

    for run in hparams_trial.runs(target={"accuracy": 0.9}):
        trainer = L.Trainer(**trainer_device(hparams_device), max_epochs=5,
                            callbacks=[HParamsCallback(run)])
        trainer.fit(MyModule(lr=hparams.lr), datamodule)

Lightning is optional (``pip install "pytest-hparams[lightning]"``): this module imports without
it, and each entry point says how to install it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from .devices import resolve_device
from .errors import SettingsError
from .hparams import HParams
from .recording import (
    RunRecorder,
    current_recorder,
    describe,
    free_accelerator_memory,
    is_out_of_memory,
    standalone_recorder,
)
from .trial import TrialResult

try:
    import lightning.pytorch as pl
except ImportError:
    pl = None
    _CallbackBase: type = object
else:
    _CallbackBase = pl.Callback

INSTALL = 'pip install "pytest-hparams[lightning]"'

#: Where the monitored names start when the module validates, and when it only trains.
_VAL_PREFIXES = ("val_", "val/", "valid_", "valid/", "validation_", "validation/")
_TRAIN_PREFIXES = ("train_", "train/", "")
#: The suffixes of Lightning's copies of a metric logged both per step and per epoch.
_FORKED = re.compile(r"_(step|epoch)$")
#: The Trainer's defaults here: quiet, and no files written (a user's trainer_kwargs win).
QUIET_TRAINER = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                 "enable_model_summary": False}
#: Trainer keywords fit_lightning sets itself; the message says where each one comes from.
_OWN_KEYWORDS = {
    "accelerator": "the device comes from device= (the test's hparams_device)",
    "devices": "the device comes from device= (the test's hparams_device)",
}


def require_lightning() -> None:
    """Raise ImportError naming the extra to install when Lightning is missing."""
    if pl is None:
        raise ImportError(f"pytest_hparams.lightning needs Lightning 2: {INSTALL}")


def trainer_device(device: str | torch.device) -> dict[str, Any]:
    """The ``Trainer`` keywords that train on ``device`` (``hparams_device``):
    cpu → ``accelerator="cpu"``; cuda:N → ``accelerator="gpu", devices=[N]``; mps → ``"mps"``.
    """
    device = resolve_device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"accelerator": "gpu", "devices": [index]}
    if device.type in ("cpu", "mps"):
        return {"accelerator": device.type, "devices": 1}
    raise SettingsError(f"trainer_device(): Lightning cannot train on {device}")


class HParamsCallback(_CallbackBase):  # type: ignore[misc,valid-type]
    """Record what a LightningModule logged into a run of ``hparams_trial``, an epoch at a time,
    and stop the ``Trainer`` when the run says so (target reached, or a loss became NaN/inf).

    At the end of each training epoch the run gets every scalar in ``trainer.callback_metrics``
    (what ``self.log`` logged, its ``_step``/``_epoch`` copies folded), the optimiser's ``lr``,
    and two names the table, targets and the gate read: ``accuracy`` and ``loss``. ``accuracy=``
    and ``loss=`` name the logged metrics that are meant; by default they are the validation
    ones (``val_acc``/``val_accuracy``/``val_loss``, also ``val/``, ``valid_``, ``validation_``
    spellings and torchmetrics' ``val_MulticlassAccuracy``), or the training ones when the
    module has no validation. An epoch without a validation run (``check_val_every_n_epoch``)
    records no row, so no row repeats an earlier validation's values.
    """

    def __init__(self, run: RunRecorder, *, accuracy: str | None = None,
                 loss: str | None = None) -> None:
        require_lightning()
        if not isinstance(run, RunRecorder):
            raise TypeError(f"HParamsCallback takes a run of hparams_trial.runs(), got "
                            f"{type(run).__name__}")
        self.run = run
        self.accuracy = accuracy
        self.loss = loss
        self._validated = False
        self._warned = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.enable_validation and not self._validated:
            return
        self._validated = False
        metrics = self.epoch_metrics(trainer)
        epoch = trainer.current_epoch + 1
        if epoch != len(self.run.record.history) + 1:  # epochs without validation were skipped
            metrics["epoch"] = epoch
        if self.run.log_epoch(**metrics):
            trainer.should_stop = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "oom" if is_out_of_memory(exception) else "error"
        self.run.fail(status, describe(exception))

    def epoch_metrics(self, trainer: pl.Trainer) -> dict[str, float]:
        """This epoch's logged metrics under the run's names (``accuracy``, ``loss``...)."""
        logged = _scalars(trainer.callback_metrics)
        validating = bool(trainer.enable_validation)
        chosen = {"accuracy": self._pick(logged, "accuracy", self.accuracy, validating),
                  "loss": self._pick(logged, "loss", self.loss, validating)}
        if not any(chosen.values()) and logged:
            self._warn_unrecognised(logged)
        metrics = {ours: logged.pop(theirs) for ours, theirs in chosen.items() if theirs}
        for name, value in logged.items():
            # a logged "loss" beside the chosen val_loss keeps its own value, under its own key
            metrics[name if name not in metrics else f"logged_{name}"] = value
        lr = _learning_rate(trainer)
        if lr is not None and "lr" not in metrics:
            metrics["lr"] = lr
        return metrics

    def _pick(self, logged: Mapping[str, float], metric: str, named: str | None,
              validating: bool) -> str | None:
        if named is not None:
            if named not in logged:
                raise SettingsError(
                    f"HParamsCallback({metric}={named!r}): the module logged no {named!r} "
                    f"this epoch (it logged: {', '.join(logged) or 'nothing'}); name one of "
                    f"these, or log it with self.log({named!r}, ...)")
            return named
        return default_metric_name(logged, metric, validating=validating)

    def _warn_unrecognised(self, logged: Mapping[str, float]) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"HParamsCallback: none of the logged metrics ({', '.join(logged)}) reads as "
                f"the validation accuracy or loss; name them, e.g. "
                f"HParamsCallback(run, accuracy='val_f1', loss='val_nll') or "
                f"fit_lightning(..., accuracy=..., loss=...)", UserWarning, stacklevel=2)


def default_metric_name(logged: Mapping[str, float], metric: str, *,
                        validating: bool) -> str | None:
    """The logged name that stands for ``metric`` (``accuracy`` or ``loss``) by the common
    spellings: validation ones when the module validates, training (or bare) ones otherwise."""
    stems = ("acc", "accuracy") if metric == "accuracy" else ("loss",)
    prefixes = _VAL_PREFIXES if validating else _TRAIN_PREFIXES
    lowered = {name.lower(): name for name in logged}
    for prefix in prefixes:
        for stem in stems:
            if prefix + stem in lowered:
                return lowered[prefix + stem]
    if metric == "accuracy":  # torchmetrics collections: val_MulticlassAccuracy and the like
        for low, name in lowered.items():
            if any(low.startswith(p) and low.endswith("accuracy") for p in prefixes if p):
                return name
    return None


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics; Lightning's ``_step``/``_epoch`` copies of a name it also logged
    plainly are dropped (at the end of an epoch the plain name holds the epoch's value)."""
    values = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if not isinstance(value, (int, float)):
            continue
        values[name] = float(value)
    return {name: value for name, value in values.items()
            if _FORKED.sub("", name) == name or _FORKED.sub("", name) not in values}


def _learning_rate(trainer: pl.Trainer) -> float | None:
    """The first optimiser's learning rate in this epoch (its epoch scheduler steps after)."""
    optimizers = trainer.optimizers
    if not optimizers or not optimizers[0].param_groups:
        return None
    lr = optimizers[0].param_groups[0].get("lr")
    return float(lr) if isinstance(lr, (int, float, torch.Tensor)) else None


# --------------------------------------------------------------------------- fit_lightning


def fit_lightning(
    module_factory: Callable[[Any], pl.LightningModule],
    data: Any,
    hparams: Mapping[str, Any] | None = None,
    *,
    device: str | torch.device | None = None,
    target: Mapping[str, Any] | None = None,
    stop_at_target: bool = True,
    epochs: int | None = None,
    seeds: Sequence[int] | None = None,
    accuracy: str | None = None,
    loss: str | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> TrialResult:
    """Train a LightningModule with a Lightning ``Trainer`` once per seed; return the
    configuration's ``TrialResult``, recorded like ``fit``'s.

    ``module_factory(hparams)`` builds a fresh module for each seed, after seeding
    (``lightning.seed_everything(seed, workers=True)``); it gets the configuration as a dict
    with attribute access, so ``MyModule(lr=hp.lr)``, ``MyModule(**hp)`` and a module calling
    ``self.save_hyperparameters(hp)`` all work. ``data`` is a ``LightningDataModule``, a
    ``(train_loader, val_loader)`` pair or a train loader alone. ``epochs`` (or the hparams'
    ``epochs``, or ``trainer_kwargs``' ``max_epochs``/``max_steps``) bounds training; ``target``
    stops a seed when reached (``stop_at_target=False`` trains on); a NaN/inf loss stops it as
    ``diverged``; an out-of-memory error is recorded as ``oom`` and the next seed runs; any other
    exception is recorded as ``error`` and raised. ``accuracy``/``loss`` name the logged metrics
    meant by those names (see ``HParamsCallback``). ``trainer_kwargs`` go to the ``Trainer``
    (each seed gets fresh copies of their callbacks); the defaults switch off the logger,
    checkpoints, progress bar and model summary, so nothing is written or printed.
    """
    require_lightning()
    hparams = hparams if hparams is not None else HParams()
    recorder = current_recorder() or standalone_recorder(hparams)
    where = f"{recorder.result.nodeid}: " if recorder.result.nodeid else ""
    if seeds is None:
        seeds = hparams.seeds if isinstance(hparams, HParams) else recorder.seeds
    device = resolve_device(device if device is not None else recorder.result.device or "cpu")
    recorder.result.device = str(device)
    options = dict(trainer_kwargs or {})
    clash = [key for key in _OWN_KEYWORDS if key in options]
    if clash:
        raise SettingsError(f"{where}fit_lightning(): trainer_kwargs[{clash[0]!r}]: "
                            f"{_OWN_KEYWORDS[clash[0]]}")
    user_callbacks = list(options.pop("callbacks", None) or [])
    planned = _epochs(hparams, epochs, options, where)
    inputs = _fit_inputs(data, hparams, where)
    settings = {**QUIET_TRAINER, **options, **trainer_device(device)}
    if planned is not None:
        settings["max_epochs"] = planned
    for seed in list(seeds):
        out_of_memory = False
        try:
            with recorder.run(seed, target=target, stop_at_target=stop_at_target,
                              epochs=planned, device=str(device)) as run, _seeded(seed):
                module = _build(module_factory, hparams, where)
                callback = HParamsCallback(run, accuracy=accuracy, loss=loss)
                with _quiet_info():
                    trainer = pl.Trainer(**settings,
                                         callbacks=[*copy.deepcopy(user_callbacks), callback])
                    _fit(trainer, module, inputs)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            out_of_memory = True
        if out_of_memory:
            # Out of the except block the traceback (holding the failed run's tensors) is gone;
            # dropping the module and trainer too lets the cache really be emptied.
            module = trainer = None
            free_accelerator_memory()
    return recorder.result



def _epochs(hparams: Mapping[str, Any], epochs: int | None, options: Mapping[str, Any],
            where: str) -> int | None:
    """The most epochs to train: from ``epochs=``, the hparams or ``max_epochs``, in one place."""
    given = {place: value for place, value in (
        ("epochs=", epochs), ("the hparams' epochs", hparams.get("epochs")),
        ("trainer_kwargs' max_epochs", options.get("max_epochs"))) if value is not None}
    if len(given) > 1:
        shown = ", ".join(f"{place} ({value!r})" for place, value in given.items())
        raise SettingsError(f"{where}fit_lightning(): the epochs are given in {len(given)} "
                            f"places: {shown}; give them in one")
    if not given:
        if any(options.get(k) not in (None, -1) for k in ("max_steps", "max_time")):
            return None
        raise SettingsError(f"{where}fit_lightning(): how many epochs? pass epochs=N, put "
                            f"epochs=N in the hparams marker, or give trainer_kwargs "
                            f"max_epochs/max_steps/max_time")
    value = next(iter(given.values()))
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsError(f"{where}fit_lightning(): epochs must be a positive integer, "
                            f"got {value!r}")
    return value


def _fit_inputs(data: Any, hparams: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``Trainer.fit``'s data keywords; a prebuilt loader whose batch size is not the
    configuration's ``batch_size`` is refused (its rows would be labelled with a size they did
    not train with)."""
    if isinstance(data, pl.LightningDataModule):
        _check_batch_size(data, hparams, "the LightningDataModule", where)
        return {"datamodule": data}
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if all(isinstance(part, torch.Tensor) for part in data):
            raise TypeError(f"{where}fit_lightning(): data is an (inputs, labels) pair of "
                            f"tensors; give a LightningDataModule or (train_loader, val_loader), "
                            f"e.g. DataLoader(TensorDataset(inputs, labels), batch_size=64)")
        train, val = data
    else:
        train, val = data, None
    if isinstance(train, pl.LightningModule) or train is None:
        raise TypeError(f"{where}fit_lightning(): data must be a LightningDataModule, a "
                        f"(train_loader, val_loader) pair or a train loader, got "
                        f"{type(data).__name__}")
    # a validation loader's batch size changes no result, so it may differ
    _check_batch_size(train, hparams, "the train loader", where)
    return {"train_dataloaders": train, "val_dataloaders": val}


def _check_batch_size(source: Any, hparams: Mapping[str, Any], name: str, where: str) -> None:
    wanted = hparams.get("batch_size")
    if wanted is None:
        return
    built = getattr(source, "batch_size", None)
    saved = getattr(source, "hparams", None)
    if built is None and isinstance(saved, Mapping):
        built = saved.get("batch_size")
    if isinstance(built, int) and built != wanted:
        raise SettingsError(
            f"{where}fit_lightning(): hparams key 'batch_size' is {wanted!r} but {name} was "
            f"built with batch_size={built}: build it from hparams.batch_size inside the test, "
            f"so that each configuration trains with its own")


def _build(factory: Callable[[Any], Any], hparams: Mapping[str, Any],
           where: str) -> pl.LightningModule:
    if isinstance(factory, pl.LightningModule) or not callable(factory):
        raise TypeError(f"{where}fit_lightning(): module_factory must be a function of the "
                        f"hparams that builds the module, e.g. lambda hp: MyModule(lr=hp.lr), "
                        f"so that each seed trains a fresh one; got {type(factory).__name__}")
    from lightning.fabric.utilities.data import AttributeDict

    module = factory(AttributeDict(hparams))
    if not isinstance(module, pl.LightningModule):
        origin = type(module).__module__.split(".")[0]
        hint = (" (a pytorch_lightning module: build it from lightning.pytorch instead)"
                if origin == "pytorch_lightning" else "")
        raise TypeError(f"{where}fit_lightning(): module_factory returned "
                        f"{type(module).__name__}, not a lightning.pytorch.LightningModule{hint}")
    return module


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Lightning's seeding (it also seeds DataLoader workers), its environment left as found."""
    saved = {key: os.environ.get(key) for key in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    pl.seed_everything(seed, workers=True, verbose=False)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _fit(trainer: pl.Trainer, module: pl.LightningModule, inputs: Mapping[str, Any]) -> None:
    """``trainer.fit``, quietly; Ctrl-C stays a KeyboardInterrupt.

    On Ctrl-C Lightning ignores SIGINT from then on and calls ``sys.exit(1)``: pytest would
    report a failed test and carry on, deaf to a second Ctrl-C. The handler is put back and
    the interrupt raised, so pytest stops as it does for ``fit``.
    """
    in_main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if in_main else None
    try:
        with warnings.catch_warnings():
            # advice for big data sets; a test's in-memory loaders need no worker processes
            warnings.filterwarnings("ignore", message=r".*does not have many workers")
            trainer.fit(module, **inputs)
    except SystemExit as exc:
        if not _interrupted(trainer):
            raise
        raise KeyboardInterrupt from exc
    finally:
        if in_main and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def _quiet_info() -> Iterator[None]:
    """Lightning's rank-zero notes ("GPU available: False", tips, "`Trainer.fit` stopped")
    held back; its warnings, and the model summary when asked for, still show."""
    loggers = [logging.getLogger(f"lightning.{part}.utilities.rank_zero")
               for part in ("pytorch", "fabric")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(max(each.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def _interrupted(trainer: pl.Trainer) -> bool:
    callbacks = [cb for cb in trainer.callbacks if isinstance(cb, HParamsCallback)]
    return any(cb.run.record.status == "interrupted" for cb in callbacks)
