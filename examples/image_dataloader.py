"""A Hugging Face image classifier fed by a DataLoader with its own collate function.

    autocompress search --task examples/image_dataloader.py:task --budget 30

The dataset yields raw samples (an HWC uint8 image as numpy and an int class), as an image
folder would; the DataLoader's collate function turns a list of them into what the model
takes: {"pixel_values": float NCHW, normalised} and the classes under "labels".
autocompress reads each split through its loader as given (batch size, collate, order)
and never holds a split in memory. The model is a small MobileNetV2 from transformers,
built from a config and trained for a few seconds on a toy problem (which quadrant is
bright?) so that the example runs offline; yours is your trained model and your data."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import autocompress as ac

SIZE = 32
MEAN, STD = 0.3, 0.3


class Quadrants(Dataset):
    """Noisy images, one quadrant brighter: the class says which."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        rng = np.random.default_rng(self.seed * 100_003 + i)
        label = int(rng.integers(4))
        img = rng.integers(0, 120, (SIZE, SIZE, 3)).astype(np.uint8)
        r, c = divmod(label, 2)
        img[r * SIZE // 2 : (r + 1) * SIZE // 2, c * SIZE // 2 : (c + 1) * SIZE // 2] += 100
        return img, label


def collate(samples):
    images = np.stack([img for img, _ in samples]).astype(np.float32) / 255.0
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2) - MEAN) / STD
    return {"pixel_values": pixels.contiguous(), "labels": torch.tensor([label for _, label in samples])}


def trained_mobilenet(loader: DataLoader, *, steps: int = 60) -> torch.nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    torch.manual_seed(0)
    config = MobileNetV2Config(num_channels=3, image_size=SIZE, depth_multiplier=0.35, num_labels=4)
    model = MobileNetV2ForImageClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


def task() -> ac.Task:
    def loader(n: int, seed: int, shuffle: bool = False) -> DataLoader:
        return DataLoader(Quadrants(n, seed), batch_size=32, shuffle=shuffle, collate_fn=collate,
                          generator=torch.Generator().manual_seed(seed) if shuffle else None)

    train = loader(512, 0, shuffle=True)
    return ac.Task(trained_mobilenet(train), train=train, val=loader(128, 1), test=loader(128, 2), name="image_dataloader")
