"""A regression model with two inputs, judged by the mean squared error.

    autocompress search --task examples/regression.py:task --budget 30 --max-metric-drop 0.05

Each sample is ((features, weekday), target): a float vector and an int64 category, so
the model is called as model(features, weekday) and the exported ONNX file takes the two
inputs by name. The metric is the built-in "mse" (lower is better): the front, the CSVs
(val_mse, mse_drop) and the drop limit are in its units. A metric that is not a
classification one needs the fine-tune's loss: here the same squared error, on the
model's outputs as it returns them; distillation adds the squared error to the teacher's
outputs (alpha searched, no temperature). The model is trained here for a few seconds on
a toy problem so that the example runs offline; yours is your trained model and data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import autocompress as ac

FEATURES = 8


class Demand(Dataset):
    """y = a smooth function of the features plus a per-weekday offset, plus noise."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, FEATURES, generator=g)
        self.day = torch.randint(0, 7, (n,), generator=g)
        offset = torch.linspace(-1.0, 1.0, 7)[self.day]
        self.y = torch.sin(self.x[:, 0]) + 0.5 * self.x[:, 1] * self.x[:, 2] + offset + 0.05 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return (self.x[i], self.day[i]), self.y[i]


class Regressor(nn.Module):
    def __init__(self, width: int = 96):
        super().__init__()
        self.day = nn.Embedding(7, 4)
        self.body = nn.Sequential(nn.Linear(FEATURES + 4, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, features: torch.Tensor, weekday: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([features, self.day(weekday)], dim=1)).squeeze(1)


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs, targets.to(outputs.dtype))


def trained(train: Dataset, *, steps: int = 400) -> nn.Module:
    torch.manual_seed(0)
    model = Regressor()
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    done = 0
    while done < steps:
        for (x, day), y in loader:
            loss = squared_error(model(x, day), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


def task() -> ac.Task:
    train, val, test = Demand(2048, 0), Demand(512, 1), Demand(512, 2)
    return ac.Task(trained(train), train=train, val=val, test=test, metric="mse", loss=squared_error, batch_size=64, name="regression")
