"""A Hugging Face vision transformer (ViT), images in memory as (image, class) samples.

    autocompress search --task examples/vision_transformer.py:task --budget 30

The model returns a ModelOutput; autocompress reads its logits. Its attention modules
(q_proj/k_proj/v_proj), feed-forward blocks and layer stack are found by structure, so
head pruning, MLP-width pruning and layer dropping are searched with the rest. Here the ViT
is built from a config and trained for a few seconds on a toy problem (which quadrant of a
noisy image is bright?) so that the example runs offline; yours is your trained model
(e.g. ViTForImageClassification.from_pretrained(...)) and your data."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

import autocompress as ac

SIZE = 16


def quadrants(n: int, seed: int) -> TensorDataset:
    """Noisy one-channel images with one quadrant brighter; the class says which."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.rand(n, 1, SIZE, SIZE, generator=g)
    half = SIZE // 2
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        images[i, :, r * half:(r + 1) * half, c * half:(c + 1) * half] += 0.5
    return TensorDataset((images - 0.75) / 0.3, labels)


def trained_vit(train: TensorDataset, *, steps: int = 80) -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, num_labels=4)
    model = ViTForImageClassification(config)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    done = 0
    while done < steps:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


def task() -> ac.Task:
    train, val, test = quadrants(512, 0), quadrants(128, 1), quadrants(128, 2)
    return ac.Task(trained_vit(train), train=train, val=val, test=test, batch_size=32, name="vision_transformer")
