"""``fit`` applies every setting it is given or refuses it by name: a model with its own
training logic, and a prebuilt DataLoader facing a ``batch_size`` hyperparameter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset
from torch.utils.data.dataloader import default_collate

from pytest_hparams import MLP, HParams, SettingsError, fit

X = torch.randn(96, 4)
Y = (X[:, 0] > 0).long()


def _recording_loader(batch_size: int, seen: list[int], **kwargs) -> DataLoader:
    def collate(batch):
        seen.append(len(batch))
        return default_collate(batch)

    return DataLoader(TensorDataset(X, Y), batch_size=batch_size, collate_fn=collate, **kwargs)


def test_a_batch_size_hyperparameter_rebuilds_a_prebuilt_loader_with_that_size():
    seen: list[int] = []
    loader = _recording_loader(8, seen, shuffle=True)
    result = fit(lambda: MLP(4, 2, hidden=8), loader, (X, Y),
                 HParams({"batch_size": 32, "epochs": 1}))
    assert result.status == "ok"
    assert seen == [32, 32, 32]


def test_two_batch_sizes_over_one_loader_train_differently():
    losses = [fit(lambda: MLP(4, 2, hidden=8), _recording_loader(8, []), (X, Y),
                  HParams({"batch_size": size, "epochs": 2, "lr": 0.1})).runs[0].final["loss"]
              for size in (8, 96)]
    assert losses[0] != losses[1]


def test_a_loader_is_left_alone_when_no_batch_size_is_asked_for():
    seen: list[int] = []
    fit(lambda: MLP(4, 2, hidden=8), _recording_loader(8, seen), (X, Y), HParams({"epochs": 1}))
    assert seen == [8] * 12


def test_a_loader_with_its_own_batch_sampler_is_refused_with_what_to_do():
    sampler = BatchSampler(SequentialSampler(range(len(Y))), batch_size=8, drop_last=False)
    loader = DataLoader(TensorDataset(X, Y), batch_sampler=sampler)
    with pytest.raises(SettingsError, match=r"batch_size=32 cannot be applied to the train "
                                            r"DataLoader.*BatchSampler.*pass its Dataset"):
        fit(lambda: MLP(4, 2, hidden=8), loader, (X, Y), HParams({"batch_size": 32}))


class _OwnStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, inputs):
        return self.layer(inputs)

    def training_step(self, batch, index):
        return self(batch[0]).sum()


@pytest.mark.parametrize("model", [_OwnStep(), _OwnStep, lambda hp: _OwnStep()],
                         ids=["module", "factory", "factory-of-hparams"])
def test_a_model_with_its_own_training_step_is_refused(model):
    with pytest.raises(SettingsError, match=r"defines training_step, which fit\(\) would bypass.*"
                                            r"hparams_trial"):
        fit(model, (X, Y), (X, Y), HParams({"epochs": 1}))


def _lightning_like() -> type[nn.Module]:
    base = type("LightningModule", (nn.Module,), {"__module__": "lightning.pytorch.core.module"})

    class Classifier(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, inputs):
            return self.layer(inputs)

    return Classifier


def test_a_lightning_module_is_refused_pointing_to_fit_lightning():
    with pytest.raises(SettingsError, match=r"LightningModule \(Classifier\).*ignore its "
                                            r"training_step and configure_optimizers.*"
                                            r"fit_lightning"):
        fit(_lightning_like(), (X, Y), (X, Y), HParams({"epochs": 1}))


def test_the_refusal_fails_the_item_with_its_message(pytester):
    pytester.makepyfile(test_x="""
import pytest, torch
from torch import nn
from pytest_hparams import fit

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)
    def forward(self, x):
        return self.layer(x)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

X = torch.randn(16, 4); Y = (X[:, 0] > 0).long()

@pytest.mark.hparams(lr=[0.1], epochs=1)
def test_net(hparams):
    fit(Net, (X, Y), (X, Y), hparams)
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the model (Net) defines configure_optimizers, which fit() "
                                 "would bypass*"])
