"""What a search compresses, as loaded: the teacher and its data held as tensors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn


@dataclass
class Split:
    """A dataset held as two tensors: inputs (N, *input_shape) float32, labels (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class LoadedTask:
    """What a search compresses and how candidates are judged.

    `val` selects (the search sees it); `test` is never seen by the search and is only
    reported for the final front. `test` may be None when the user gives no test split.
    """

    name: str
    teacher: nn.Module
    train: Split
    val: Split
    test: Optional[Split]
    input_shape: tuple[int, ...]
    num_classes: int
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Identifies the task for resume checks: its spec plus a hash of the data."""
        h = hashlib.sha1(json.dumps(self.spec, sort_keys=True).encode())
        for split in (self.train, self.val, self.test):
            if split is not None:
                h.update(split.x.numpy().tobytes())
                h.update(split.y.numpy().tobytes())
        return h.hexdigest()[:12]


__all__ = ["LoadedTask", "Split"]
