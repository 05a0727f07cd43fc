"""Ending a fine-tune early when the validation metric has stopped moving (pure logic; the
pipeline supplies the metric)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class EarlyStop:
    """Check the metric every `every` steps once `warmup` of the steps are done; stop when
    `patience` checks in a row gained no more than `min_delta` over the best so far."""

    every: int = 10
    patience: int = 3
    min_delta: float = 1e-3  # accuracy as a fraction: 0.1 pt
    warmup: float = 0.3


class Plateau:
    """One fine-tune's early-stopping state. `should_stop(step, metric)` is asked after every
    step (1-based) and calls `metric()` only on a check step."""

    def __init__(self, rule: EarlyStop, steps: int):
        self.rule = rule
        self.first = max(rule.every, int(rule.warmup * steps))
        self.best = float("-inf")
        self.since = 0
        self.history: list[tuple[int, float]] = []

    def should_stop(self, step: int, metric: Callable[[], float]) -> bool:
        if step < self.first or step % self.rule.every:
            return False
        value = float(metric())
        self.history.append((step, value))
        if value > self.best + self.rule.min_delta:
            self.best, self.since = value, 0
        else:
            self.since += 1
        return self.since >= self.rule.patience


__all__ = ["EarlyStop", "Plateau"]
