"""Search backends: each drives the candidate pipeline over a search space and stores
trials. A backend needs `optimize(...)` and `records()`; see backends.optuna."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SAMPLERS = ("tpe", "nsga2", "random")


@dataclass
class Outcome:
    """What evaluating one candidate gives a backend: the three objectives and extra
    attributes to store on the trial."""

    values: tuple[float, float, float]  # val accuracy (max), latency ratio (min), size bytes (min)
    attrs: dict[str, Any] = field(default_factory=dict)
