"""A task built in Python: the user's model and data as objects (the Python API's
`autocompress.Task`; `--task FILE.py:FN` returns one). Validated when made, read into a
LoadedTask by load()."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from autocompress.errors import ConfigError
from autocompress.evaluation.metrics import resolve

if TYPE_CHECKING:
    from autocompress.tasks.base import LoadedTask



@dataclass(frozen=True, eq=False)
class Task:
    """A trained model and its data. `train`, `val` and `test` (optional) are sized Datasets
    of (inputs, integer class) samples, or of dicts holding the class under `target_key`,
    or DataLoaders of such batches; inputs are a tensor (any dtype), a tuple of tensors
    (the model is called as model(*x)) or a dict of tensors (model(**x)). Nothing reads a
    split whole: Datasets are read in batches of `batch_size` (None: the search space's
    fine-tune batch size, 256 for evaluation), DataLoaders as they are. `val` selects
    candidates, `test` is only reported for the front. `dynamic_axes` names axes besides
    the batch that the exported ONNX file keeps dynamic, by input (e.g. {"input_ids": {1:
    "sequence"}}). `name` names the default run directory; `version`, a string of yours,
    goes into the task's fingerprint (which a resume checks) with the model's spec and a
    hash of a seeded sample of the data.

    `metric`: a built-in name ("accuracy", "top5": class scores against integer classes;
    "mse", "mae": the primary output against targets of its shape) or a callable
    `metric(outputs, targets) -> float` with `higher_is_better` (outputs as the model returns
    them, as numpy arrays concatenated over the split: one array, a tuple, or a dict of a
    dict's or ModelOutput's fields). A metric that is not a classification one needs
    `loss(outputs, targets) -> scalar tensor`, the fine-tune's label term (on the torch
    outputs as returned); `distill_loss(student, teacher) -> scalar tensor` on the primary
    outputs replaces the teacher term (default: temperature-scaled KL for a classification,
    mean squared error otherwise)."""

    model: Any
    train: Any
    val: Any
    test: Any = None
    metric: Any = "accuracy"
    higher_is_better: Optional[bool] = None  # for a callable metric
    loss: Any = None  # the fine-tune's label loss; None: cross-entropy (with distillation)
    distill_loss: Any = None
    batch_size: Optional[int] = None
    target_key: str = "labels"
    dynamic_axes: Optional[dict] = None
    name: str = "task"
    version: Optional[str] = None
    _metric: Any = field(init=False, repr=False, default=None)  # the resolved evaluation.metrics.Metric

    def __post_init__(self) -> None:
        try:
            metric = resolve(self.metric, self.higher_is_better)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "_metric", metric)
        for name in ("loss", "distill_loss"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ConfigError(f"Task.{name} must be a callable ({'outputs, targets' if name == 'loss' else 'student, teacher'}) -> scalar tensor, "
                                  f"got {type(getattr(self, name)).__name__}")
        if not metric.classification and self.loss is None:
            raise ConfigError(f"Task.loss: the metric {metric.name!r} is not a classification one (accuracy, top5), so the fine-tune needs "
                              f"your loss(outputs, targets) -> scalar tensor, got None")
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ConfigError(f"Task.name must be a non-empty string without '/', got {self.name!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"Task.batch_size must be a positive integer or None, got {self.batch_size!r}")
        if not isinstance(self.target_key, str) or not self.target_key:
            raise ConfigError(f"Task.target_key must be a non-empty string, got {self.target_key!r}")
        if self.dynamic_axes is not None and not (
                isinstance(self.dynamic_axes, dict) and all(isinstance(k, str) and isinstance(v, dict) and v
                                                            and all(isinstance(a, int) and not isinstance(a, bool) and a >= 1 and isinstance(n, str)
                                                                    for a, n in v.items()) for k, v in self.dynamic_axes.items())):
            raise ConfigError(f"Task.dynamic_axes must map input names to {{axis >= 1: name}}, e.g. {{'input_ids': {{1: 'sequence'}}}}, "
                              f"got {self.dynamic_axes!r}")
        if self.version is not None and not isinstance(self.version, str):
            raise ConfigError(f"Task.version must be a string, got {self.version!r}")

    def load(self, *, source: Optional[dict[str, Any]] = None) -> "LoadedTask":
        """The task as the pipeline sees it (the splits read once, the model's forward
        checked). `source`: where it came from, for run.json (default: built in Python)."""
        from autocompress.tasks.user import build_task

        splits = (self.train, self.val) if self.test is None else (self.train, self.val, self.test)
        spec = {**(source or {"kind": "python"}), "name": self.name, "model_class": type(self.model).__name__, "version": self.version}
        task = build_task(self.model, splits, name=self.name, spec=spec, model_field="Task.model", data_field="Task",
                          batch_size=self.batch_size, target_key=self.target_key, metric=self._metric,
                          loss=self.loss, distill_loss=self.distill_loss)
        unknown = sorted(set(self.dynamic_axes or {}) - set(task.input_names))
        if unknown:
            raise ConfigError(f"Task.dynamic_axes names {unknown[0]!r}, which is not an input of the model {task.input_names}")
        task.dynamic_axes = self.dynamic_axes
        return task


__all__ = ["Task"]
