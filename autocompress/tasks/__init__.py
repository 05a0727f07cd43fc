"""Tasks: a trained teacher plus its train / val / test data, from the built-in demo or a
user's file. Everything downstream sees only a Task."""

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
class Task:
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


def load_task(
    model: Optional[str] = None,
    data: Optional[str] = None,
    checkpoint: Optional[str] = None,
    *,
    progress=print,
) -> Task:
    """The demo when neither `model` nor `data` is given, else the user's task."""
    if model is None and data is None:
        if checkpoint is not None:
            from autocompress.errors import ConfigError

            raise ConfigError("--checkpoint needs --model and --data")
        from autocompress.tasks.demo import demo_task

        return demo_task(progress=progress)
    from autocompress.tasks.user import user_task

    return user_task(model, data, checkpoint)
