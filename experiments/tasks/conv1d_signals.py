"""Benchmark task: a 1-D convolution + MLP model on synthetic signals (1 x 256 samples,
6 classes: a chirp, a sine pair or a burst train at class-specific frequencies, with random
phase, amplitude, offset and noise). Not an image model: no 4-D tensors, so block
substitution finds nothing; pruning, low rank (on the MLP), fine-tuning and quantization
all apply.

    autocompress search --model experiments/tasks/conv1d_signals.py:build_model \\
                        --data experiments/tasks/conv1d_signals.py:build_data --budget 30

The teacher is trained once (seeded) and cached under $AUTOCOMPRESS_CACHE, keyed by this
file's source. The file stands alone, as a user's task file does (`--model FILE.py:FN`
imports it by path), so its teacher-training code repeats that of vgg_patterns.py.
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

LENGTH, CLASSES, SEED = 256, 6, 11
N_TRAIN, N_VAL, N_TEST = 3000, 1000, 1000
EPOCHS = 15


class SignalNet(nn.Module):
    def __init__(self, widths=(32, 64, 96), classes=CLASSES):
        super().__init__()
        layers, cin = [], 1
        for i, w in enumerate(widths):
            layers += [nn.Conv1d(cin, w, 7, stride=2 if i else 1, padding=3, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True),
                       nn.Conv1d(w, w, 5, padding=2, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True), nn.MaxPool1d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(cin * 2, 256), nn.ReLU(inplace=True), nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Linear(128, classes))

    def forward(self, x):
        z = self.features(x)
        return self.mlp(torch.cat([z.mean(-1), z.amax(-1)], dim=1))


def _signals(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    t = torch.linspace(0, 1, LENGTH)[None]
    phase = torch.rand(n, 1, generator=gen) * 2 * math.pi
    f = (6 + 5 * (y % 3)).float()[:, None] * (0.9 + 0.2 * torch.rand(n, 1, generator=gen))
    kind = (y // 3)[:, None]
    chirp = torch.sin(2 * math.pi * (f * t + 8 * t**2) + phase)
    bursts = torch.sin(2 * math.pi * 3 * f * t + phase) * (torch.sin(2 * math.pi * f / 3 * t) > 0.3).float()
    x = torch.where(kind == 0, chirp, bursts)
    x = (0.5 + torch.rand(n, 1, generator=gen)) * x + 0.3 * torch.randn(n, 1, generator=gen) + 1.0 * torch.randn(n, LENGTH, generator=gen)
    return x[:, None].float(), y


def _splits():
    gen = torch.Generator().manual_seed(SEED)
    x, y = _signals(N_TRAIN + N_VAL + N_TEST, gen)
    a, b = N_TRAIN, N_TRAIN + N_VAL
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def _cache() -> Path:
    key = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress")) / "teachers" / f"conv1d-signals-{key}.pt"


def build_model() -> nn.Module:
    torch.manual_seed(SEED)
    model = SignalNet()
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
