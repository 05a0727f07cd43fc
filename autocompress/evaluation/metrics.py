"""What candidates are judged by: a task's metric, computed on the outputs of a whole split
(ONNX Runtime's outputs of the exported file, or a torch model's), with its direction and
its units. Built-ins: accuracy (top-1), top5, mse, mae; or the user's callable
`metric(outputs, targets) -> float`. Pure numpy; nothing here imports torch."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from autocompress.pareto import REFERENCE

DROP_REFERENCE = 0.10  # the hypervolume's worst drop for a metric without points: 10% of the teacher's value
PERCENT_REFERENCE = REFERENCE[0]  # ... and for accuracy: 10 points


def primary_output(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The output the built-in metrics read: "logits" if there is one, else the first."""
    return outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))


def _scores(outputs: dict[str, np.ndarray], targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = primary_output(outputs)
    return scores.reshape(len(scores), -1), np.asarray(targets).reshape(-1)


def _accuracy(outputs, targets) -> float:
    scores, y = _scores(outputs, targets)
    return float((scores.argmax(axis=1) == y).mean())


def _top5(outputs, targets) -> float:
    scores, y = _scores(outputs, targets)
    k = min(5, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def _residual(outputs, targets) -> np.ndarray:
    pred = np.asarray(primary_output(outputs), dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if pred.size != y.size:
        raise ValueError(f"the model's output has {pred.size // max(1, len(pred))} values per sample, the target {y.size // max(1, len(y))}")
    return pred.reshape(-1) - y.reshape(-1)


def _mse(outputs, targets) -> float:
    return float(np.mean(_residual(outputs, targets) ** 2))


def _mae(outputs, targets) -> float:
    return float(np.mean(np.abs(_residual(outputs, targets))))


@dataclass(frozen=True)
class Metric:
    """A metric and how to read it. `percent`: a fraction shown in %, its drops in points
    (accuracy, top5); otherwise values and drops are in the metric's own units.
    `classification`: it reads class scores against integer classes, and the fine-tune is
    cross-entropy with distillation; otherwise the task gives its loss. `builtin`: `fn`
    takes the outputs as a dict by name; a callable of the user's gets them as the model
    returned them (one array, a tuple, or a dict of a ModelOutput's or dict's fields)."""

    name: str
    higher_is_better: bool
    percent: bool = False
    classification: bool = False
    builtin: bool = False
    fn: Optional[Callable[..., Any]] = None

    @property
    def unit(self) -> str:
        return "pt" if self.percent else ""

    def drop(self, teacher: float, value: float) -> float:
        """How much worse `value` is than the teacher's: points for a percent metric, the
        metric's units otherwise; negative when it is better."""
        scale = 100.0 if self.percent else 1.0
        return scale * ((teacher - value) if self.higher_is_better else (value - teacher))

    def score(self, value: float) -> float:
        """Higher is better: the value or its negative (for ranking at rungs, early stopping)."""
        return value if self.higher_is_better else -value

    def show(self, value: Any) -> str:
        """One value as tables print it: 97.50 (percent) or 4 significant digits."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{100 * value:.2f}" if self.percent else f"{value:.4g}"

    def drop_reference(self, teacher: float) -> float:
        """The worst drop the hypervolume counts (pareto.REFERENCE's first coordinate, and
        the front's drop limit when none is given): 10 points for a percent metric, else
        DROP_REFERENCE of the teacher's value (its magnitude; 1 unit if it is 0)."""
        return PERCENT_REFERENCE if self.percent else DROP_REFERENCE * (abs(teacher) or 1.0)

    def near(self, teacher: float) -> float:
        """A drop that counts as close to the teacher (the climb's default step limit, the
        summary's recipe line): a tenth of drop_reference, i.e. 1 point for a percent
        metric, else 1% of the teacher's value."""
        return self.drop_reference(teacher) / 10.0

    def column(self, split: str) -> str:
        """The tables' column of this metric on a split: val_accuracy, test_mse, ..."""
        return f"{split}_{self.name}"

    @property
    def drop_column(self) -> str:
        return "acc_drop_pts" if self.name == "accuracy" else f"{self.name}_drop"

    def describe(self) -> dict[str, Any]:
        """What run.json keeps of it (enough to show a run again without the task)."""
        return {"name": self.name, "higher_is_better": self.higher_is_better, "percent": self.percent,
                "classification": self.classification}

    @classmethod
    def described(cls, d: Optional[dict[str, Any]]) -> "Metric":
        """The metric of a run.json (a run from before metrics were recorded: accuracy)."""
        if not d:
            return BUILTIN["accuracy"]
        return BUILTIN.get(d["name"]) or cls(d["name"], bool(d["higher_is_better"]), bool(d.get("percent")), bool(d.get("classification")))

    def __call__(self, outputs: dict[str, np.ndarray], targets: np.ndarray, *, kind: str = "tensor") -> float:
        """The metric of outputs concatenated over a split (by output name) against the
        targets; ValueError unless it is one finite number."""
        if self.fn is None:
            raise ValueError(f"metric {self.name!r} was read from a run's files and cannot be computed")
        value = self.fn(outputs if self.builtin else as_returned(outputs, kind), targets)
        return checked(self.name, value)


def as_returned(outputs: dict[str, np.ndarray], kind: str) -> Any:
    """Outputs by name as the model returned them (`kind`: data.structure.output_kind): one
    array (a tensor), a tuple (a tuple or list), or the dict of fields (a dict or ModelOutput)."""
    values = list(outputs.values())
    if kind == "tensor":
        return values[0]
    if kind == "tuple":
        return tuple(values)
    return dict(outputs)


def checked(name: str, value: Any) -> float:
    """`value` as a float; ValueError naming the metric unless it is one finite real number."""
    if (isinstance(value, np.ndarray) and value.size == 1) or (hasattr(value, "numel") and value.numel() == 1):  # an array or tensor of one
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"metric {name!r} must return one number, got {type(value).__name__}"
                         + (f" of shape {tuple(value.shape)}" if hasattr(value, "shape") else ""))
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric {name!r} returned {value}")
    return value


BUILTIN: dict[str, Metric] = {
    "accuracy": Metric("accuracy", True, percent=True, classification=True, builtin=True, fn=_accuracy),
    "top5": Metric("top5", True, percent=True, classification=True, builtin=True, fn=_top5),
    "mse": Metric("mse", False, builtin=True, fn=_mse),
    "mae": Metric("mae", False, builtin=True, fn=_mae),
}


def resolve(metric: Any, higher_is_better: Optional[bool] = None, *, field: str = "Task.metric") -> Metric:
    """A Metric from a built-in's name or a callable (`higher_is_better` then required);
    ValueError naming `field` otherwise."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in BUILTIN:
            raise ValueError(f"{field} must be one of {list(BUILTIN)} or a callable metric(outputs, targets) -> float, got {metric!r}")
        if higher_is_better is not None and higher_is_better != BUILTIN[metric].higher_is_better:
            raise ValueError(f"{field}: {metric!r} is {'higher' if BUILTIN[metric].higher_is_better else 'lower'}-is-better; "
                             f"higher_is_better={higher_is_better!r} contradicts it")
        return BUILTIN[metric]
    if callable(metric):
        if not isinstance(higher_is_better, bool):
            raise ValueError(f"{field}: a callable metric needs higher_is_better=True or False, got {higher_is_better!r}")
        name = getattr(metric, "__name__", type(metric).__name__)
        if not name.isidentifier():  # a lambda
            name = "metric"
        if name in BUILTIN:
            raise ValueError(f"{field}: a callable metric may not be named like the built-in {name!r}; rename the function")
        return Metric(name, higher_is_better, fn=metric)
    raise ValueError(f"{field} must be one of {list(BUILTIN)} or a callable metric(outputs, targets) -> float, got {type(metric).__name__}")


__all__ = ["BUILTIN", "DROP_REFERENCE", "Metric", "as_returned", "checked", "primary_output", "resolve"]
