"""Benchmark task: a VGG-style CNN on synthetic 3x24x24 images (8 classes of oriented
stripe-and-blob patterns with random shifts, contrast and noise). Not tuned to the demo:
plain conv-BN-ReLU stacks and max-pooling, no residuals, a two-layer classifier head.

    autocompress search --model experiments/tasks/vgg_patterns.py:build_model \\
                        --data experiments/tasks/vgg_patterns.py:build_data --budget 30

The teacher is trained once (seeded) and cached under $AUTOCOMPRESS_CACHE (default
~/.cache/autocompress), keyed by this file's source. The file stands alone, as a user's task file does
(`--model FILE.py:FN` imports it by path), so its teacher-training code repeats that of conv1d_signals.py.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

SIZE, CLASSES, SEED = 24, 8, 7
N_TRAIN, N_VAL, N_TEST = 3000, 1000, 1000
EPOCHS = 12


class VGGish(nn.Module):
    def __init__(self, widths=(24, 48, 96), classes=CLASSES):
        super().__init__()
        layers, cin = [], 3
        for w in widths:  # two convs per stage, then a 2x max-pool
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * (SIZE // 8) ** 2, 128), nn.ReLU(inplace=True), nn.Linear(128, classes))

    def forward(self, x):
        return self.head(self.features(x))


def _images(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    angle = (y % 4).float() * math.pi / 4  # 4 stripe orientations ...
    freq = 0.45 + 0.35 * (y // 4).float()  # ... at two frequencies
    shift = torch.rand(n, 2, generator=gen) * SIZE
    phase = torch.rand(n, generator=gen) * 2 * math.pi
    u = (xx[None] - shift[:, 0, None, None]) * torch.cos(angle)[:, None, None] + (yy[None] - shift[:, 1, None, None]) * torch.sin(angle)[:, None, None]
    stripes = torch.sin(freq[:, None, None] * u + phase[:, None, None])
    blob = torch.exp(-(((xx[None] - shift[:, 0, None, None]) ** 2 + (yy[None] - shift[:, 1, None, None]) ** 2) / 30.0))
    colour = torch.stack([torch.cos(angle), torch.sin(angle), freq - 0.8], dim=1)[:, :, None, None]
    contrast = 0.3 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    x = contrast * (stripes[:, None] * (0.5 + colour) + blob[:, None]) + 2.2 * torch.randn(n, 3, SIZE, SIZE, generator=gen)
    return x.float(), y


def _splits():
    gen = torch.Generator().manual_seed(SEED)
    x, y = _images(N_TRAIN + N_VAL + N_TEST, gen)
    a, b = N_TRAIN, N_TRAIN + N_VAL
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def _cache() -> Path:
    key = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress")) / "teachers" / f"vgg-patterns-{key}.pt"


def build_model() -> nn.Module:
    torch.manual_seed(SEED)
    model = VGGish()
    path = _cache()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    (x, y), _, _ = _splits()
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    steps = EPOCHS * (len(y) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y) - 63, 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def build_data():
    return tuple(TensorDataset(x, y) for x, y in _splits())
