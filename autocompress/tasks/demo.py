"""The built-in demo: scikit-learn's digits (shipped with scikit-learn, nothing is
downloaded) upsampled to 16x16, and a small ResNet-style teacher trained once and cached.

Split: 60% train / 20% val / 20% test, stratified, seed 0. The teacher is cached under
$AUTOCOMPRESS_CACHE (default ~/.cache/autocompress), keyed by a hash of this file's
source, the data and the seed, so editing the model or its training retrains it.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.tasks.base import LoadedTask, TensorSplit

IMAGE_SIZE = 16
SEED = 0
TEACHER_EPOCHS = 20


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress"))


def check_cache_writable(folder: Path) -> None:
    """ConfigError naming $AUTOCOMPRESS_CACHE unless the trained teacher can be saved in `folder`."""
    from autocompress.atomic import unwritable_reason
    from autocompress.errors import ConfigError

    reason = unwritable_reason(folder)
    if reason is not None:
        where = "$AUTOCOMPRESS_CACHE" if "AUTOCOMPRESS_CACHE" in os.environ else "the cache (~/.cache/autocompress; set $AUTOCOMPRESS_CACHE)"
        raise ConfigError(f"{where} {cache_dir()}: the demo teacher cannot be cached there: {reason}")


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """The demo teacher: a plain ResNet-style CNN for 1x16x16 inputs.

    stem conv3x3(1->48) @16x16 -> layer1 block(48) @16x16 -> layer2 block(48->96, /2) @8x8
    -> layer3 block(96->192, /2) @4x4 -> global average pool -> fc(192->10).
    0.69M parameters, ~27M multiply-adds per image; ~0.45 ms per image in ONNX Runtime
    (1 thread, AVX2), so convolution cost, not per-call overhead, dominates latency.
    """

    def __init__(self, widths: tuple[int, int, int] = (48, 96, 192), num_classes: int = 10):
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.layer1 = BasicBlock(w1, w1)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def digits_splits() -> tuple[TensorSplit, TensorSplit, TensorSplit]:
    """Seeded, stratified 60/20/20 split of the 1,797 digits, upsampled to 16x16 and
    standardised with the training split's mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx = np.arange(len(y))
    train_idx, rest = train_test_split(idx, test_size=0.4, stratify=digits.target, random_state=SEED)
    val_idx, test_idx = train_test_split(rest, test_size=0.5, stratify=digits.target[rest], random_state=SEED)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return tuple(TensorSplit(x[i].contiguous(), y[i].contiguous(), name) for i, name in ((train_idx, "train"), (val_idx, "val"), (test_idx, "test")))  # type: ignore[return-value]


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to one pixel (the only augmentation)."""
    dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_teacher(train: TensorSplit, *, epochs: int = TEACHER_EPOCHS, seed: int = SEED, progress=print) -> DigitsResNet:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitsResNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(train) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(model(_shift(train.x[b], gen)), train.y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        progress(f"  teacher epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}  ({time.perf_counter() - start:.0f} s)")
    return model.eval()


def _cache_key(train: TensorSplit) -> str:
    h = hashlib.sha1(inspect.getsource(inspect.getmodule(DigitsResNet)).encode())  # type: ignore[arg-type]
    h.update(train.x.numpy().tobytes())
    h.update(f"{SEED}-{TEACHER_EPOCHS}-{torch.__version__.split('+')[0]}".encode())
    return h.hexdigest()[:16]


def demo_task(*, progress=print) -> LoadedTask:
    train, val, test = digits_splits()
    path = cache_dir() / "teachers" / f"digits-resnet-{_cache_key(train)}.pt"
    model = DigitsResNet()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        check_cache_writable(path.parent)  # before minutes of training, not after
        progress(f"Training the demo teacher once (cached at {path}) ...")
        model = train_teacher(train, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    model.eval()
    return LoadedTask(
        name="digits",
        teacher=model,
        train=train,
        val=val,
        test=test,
        num_classes=10,
        spec={"kind": "demo", "model": "DigitsResNet", "cache_key": path.stem},
    )
