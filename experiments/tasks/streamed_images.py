"""Benchmark task: images made on demand, never held, for the peak-memory benchmark.

    AUTOCOMPRESS_BENCH_TRAIN=20000 autocompress search --task experiments/tasks/streamed_images.py:task ...

A map-style Dataset synthesizes each 3 x 64 x 64 float32 image (48 KiB) from its index:
noise with one bright quadrant, the quadrant is the class. The train split has
$AUTOCOMPRESS_BENCH_TRAIN samples (default 2,000), val and test a fifth of that each, so
the data's size in memory grows with it while the search must not. The teacher is a small
CNN with BatchNorm trained for 150 steps on its own stream (seeded; a few seconds)."""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import autocompress as ac

SIZE, CLASSES = 64, 4


class Quadrants(Dataset):
    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        label = int(torch.randint(CLASSES, (1,), generator=g))
        img = torch.randn(3, SIZE, SIZE, generator=g) * 0.5
        r, c = divmod(label, 2)
        img[:, r * SIZE // 2 : (r + 1) * SIZE // 2, c * SIZE // 2 : (c + 1) * SIZE // 2] += 1.0
        return img, label


def _block(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(_block(3, 16, 2), _block(16, 32, 2), _block(32, 32, 1), _block(32, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, CLASSES))


def task() -> ac.Task:
    n = int(os.environ.get("AUTOCOMPRESS_BENCH_TRAIN", "2000"))
    train, val, test = Quadrants(n, 0), Quadrants(n // 5, 1), Quadrants(n // 5, 2)
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(Quadrants(2000, 9), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    step = 0
    while step < 150:
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == 150:
                break
    return ac.Task(model.eval(), train=train, val=val, test=test, batch_size=64, name="streamed_images", version=f"n{n}")
