"""The fine-tune a candidate gets, as its fine-tune-stage techniques set it up (pure data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainPlan:
    """Adam for `steps` steps (cosine-decayed `lr`) on minibatches of `batch_size`, with the
    distillation loss alpha * CE + (1 - alpha) * T^2 * KL at `temperature` (training.distill),
    ended early when the val metric stops moving if `early_stop` (training.early_stop) is set.
    `wrappers` change the model for the length of the fine-tune: each has
    begin(model, example_input) -> a handle whose bake_() ends it (e.g. training.qat.QAT)."""

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    alpha: float = 0.5
    temperature: float = 4.0
    wrappers: tuple[Any, ...] = ()
    early_stop: Any = None  # training.early_stop.EarlyStop, or None: every step runs


__all__ = ["TrainPlan"]
