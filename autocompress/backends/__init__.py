"""Search backends: each drives the candidate pipeline over a search space and stores the
trials in the run's Optuna study (backends.study). `Backend` is what the search uses."""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable

SAMPLERS = ("tpe", "nsga2", "random")  # Optuna samplers by name (backends.study.make_sampler)
BACKENDS = ("optuna", "ray")  # local trials one after another (backends.optuna); trials as Ray processes (backends.ray_tune)
STUDY_NAME = "autocompress"  # the run's study in its storage (backends.study)
# A trial's values, in the study's order (backends.study.DIRECTIONS); Ray Tune's trials report them under these keys.
OBJECTIVES = ("val_metric", "latency_ratio", "size_bytes")


def objective_names(metric: Any = None) -> list[str]:
    """The study's objectives by name, as optuna-dashboard and Study.trials_dataframe show
    them: the val metric (val_accuracy; 'val_mse (negated)' where lower is better, as the
    study maximizes Metric.score), latency_ratio (to the teacher), size_bytes. Without
    the metric: 'val_metric (score)'."""
    if metric is None:
        first = "val_metric (score)"
    else:
        first = metric.column("val") + ("" if metric.higher_is_better else " (negated)")
    return [first, *OBJECTIVES[1:]]


@runtime_checkable
class Backend(Protocol):
    """What the search needs of a backend."""

    max_acc_drop: Optional[float]  # the accuracy-drop limit of the front (a constraint), or None

    def open(self, *, new: bool) -> None:
        """Create the run's study (new) or load it and recover what a dead driver left."""

    def optimize(self, evaluate: Callable[..., Any], *, budget: int, time_budget: Optional[float] = None,
                 on_trial: Callable[[dict[str, Any]], None] = ..., stop: Callable[[], bool] = ...) -> None:
        """Run trials until `budget` are finished, `time_budget` seconds have passed or
        `stop()` says so (asked after each trial: autocompress.stopping); `evaluate(cfg,
        number, **kw)` builds one candidate (a backend whose trials run elsewhere may build
        them there instead); `on_trial(record)` after each trial."""

    def finished_count(self) -> int:
        """Trials that count against the budget."""

    def records(self) -> list[dict[str, Any]]:
        """Every trial as a flat record (trials.csv's rows before derived columns)."""

    def store_remeasured(self, number: int, values: dict[str, Any]) -> None:
        """Keep the end-of-search latency re-measurement of trial `number`."""


__all__ = ["BACKENDS", "OBJECTIVES", "SAMPLERS", "STUDY_NAME", "Backend", "objective_names"]
