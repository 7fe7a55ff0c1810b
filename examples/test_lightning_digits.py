"""The README's Lightning example: a LightningModule (its own ``configure_optimizers``, a
torchmetrics accuracy, ``save_hyperparameters``) and a LightningDataModule on the bundled
digits, tested over a grid with ``fit_lightning``, and with a Trainer of the test's own through
``HParamsCallback``. Run it with ``pytest examples/test_lightning_digits.py``; it needs
``pip install "pytest-hparams[lightning]"``."""

import pytest

L = pytest.importorskip("lightning")

import torch  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
from torchmetrics.classification import MulticlassAccuracy  # noqa: E402

from pytest_hparams import HParamsCallback, digits, fit_lightning, trainer_device  # noqa: E402

DATA = digits()


class DigitsData(L.LightningDataModule):
    def __init__(self, batch_size: int = 64):
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        return DataLoader(TensorDataset(*DATA.train), batch_size=self.hparams.batch_size,
                          shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*DATA.val), batch_size=512)


class DigitsClassifier(L.LightningModule):
    def __init__(self, lr: float = 1e-2, optimizer: str = "adam", hidden: int = 64):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
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
        if self.hparams.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}


@pytest.mark.hparams(lr=[0.01, 0.1], optimizer=["adam", "sgd"], seeds=3, epochs=10,
                     expect={"accuracy": ">=0.9"}, vectorize=False,
                     xfail=lambda hp: hp.optimizer == "sgd" and hp.lr < 0.05
                     and "SGD at lr=0.01 needs more than 10 epochs")
def test_classifier(hparams, hparams_device):
    result = fit_lightning(lambda hp: DigitsClassifier(lr=hp.lr, optimizer=hp.optimizer),
                           DigitsData(), hparams, device=hparams_device,
                           target={"accuracy": 0.95})
    assert result.status == "ok"


@pytest.mark.hparams(hidden=[16, 64], seeds=2, vectorize=False)
def test_own_trainer(hparams, hparams_device, hparams_trial):
    for run in hparams_trial.runs(target={"accuracy": 0.95}, stop_at_target=False):
        trainer = L.Trainer(**trainer_device(hparams_device), max_epochs=10, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            callbacks=[EarlyStopping("val_loss", patience=2),
                                       HParamsCallback(run)])
        trainer.fit(DigitsClassifier(hidden=hparams.hidden), datamodule=DigitsData())
