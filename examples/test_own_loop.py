"""Your own training loop, DataLoaders, optimiser and scheduler, recorded with ``hparams_trial``.

The loop is the shape of PyTorch's well-known MNIST example (Adadelta, StepLR, its own ``train``
and ``test`` functions; the second is named ``evaluate`` here, so that pytest does not collect
it), on scikit-learn's bundled 8×8 digits so that nothing downloads.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset

from pytest_hparams import digits

DATA = digits(images=True)  # (N, 1, 8, 8) images, a fixed train/val/test split


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = self.dropout(torch.flatten(x, 1))
        return self.fc2(F.relu(self.fc1(x)))


def train(model, device, loader, optimizer):
    model.train()
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()


def evaluate(model, device, loader):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            outputs = model(inputs)
            loss += F.cross_entropy(outputs, labels, reduction="sum").item()
            correct += (outputs.argmax(1) == labels).sum().item()
    return loss / len(loader.dataset), correct / len(loader.dataset)


@pytest.mark.hparams(lr=[1.0, 2.0], gamma=[0.7, 0.9], seeds=2, epochs=10,
                     expect={"accuracy": ">=0.85"})
def test_adadelta_steplr(hparams, hparams_device, hparams_trial):
    val_loader = DataLoader(TensorDataset(*DATA.val), batch_size=512)
    for run in hparams_trial.runs(target={"accuracy": 0.95}, epochs=hparams.epochs):
        # run.seed has seeded torch, numpy and random: the model and the shuffling follow it
        train_loader = DataLoader(TensorDataset(*DATA.train), batch_size=64, shuffle=True)
        model = Net().to(hparams_device)
        optimizer = torch.optim.Adadelta(model.parameters(), lr=hparams.lr)
        scheduler = StepLR(optimizer, step_size=1, gamma=hparams.gamma)
        for _ in range(hparams.epochs):
            train(model, hparams_device, train_loader, optimizer)
            loss, accuracy = evaluate(model, hparams_device, val_loader)
            scheduler.step()
            if run.log_epoch(loss=loss, accuracy=accuracy, lr=scheduler.get_last_lr()[0]):
                break  # the target is reached, or the loss became NaN/inf
