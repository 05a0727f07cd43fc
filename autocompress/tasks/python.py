"""A task built in Python: the user's model and data as objects (the Python API's
`autocompress.Task`; `--task FILE.py:FN` returns one). Validated when made, read into a
LoadedTask by load()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from autocompress.errors import ConfigError

if TYPE_CHECKING:
    from autocompress.tasks.base import LoadedTask

METRICS = ("accuracy",)  # what a Task's metric may be (top-1 accuracy on the val split, measured on ONNX Runtime)


@dataclass(frozen=True, eq=False)
class Task:
    """A trained model and its data. `train`, `val` and `test` (optional) are sized Datasets
    of (input tensor, integer class) samples or DataLoaders of such batches; `val` selects
    candidates, `test` is only reported for the front. `name` names the default run
    directory; `version`, a string of yours, goes into the task's fingerprint (which a resume
    checks) with the model's spec and a hash of the data."""

    model: Any
    train: Any
    val: Any
    test: Any = None
    metric: str = "accuracy"
    loss: Any = None  # the fine-tune's label loss; None: cross-entropy (with distillation)
    name: str = "task"
    version: Optional[str] = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"Task.metric must be one of {list(METRICS)} (so far), got {self.metric!r}")
        if self.loss is not None:
            raise ConfigError(f"Task.loss: a classification task fine-tunes with cross-entropy and distillation; a loss of your own is not supported yet, got {self.loss!r}")
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ConfigError(f"Task.name must be a non-empty string without '/', got {self.name!r}")
        if self.version is not None and not isinstance(self.version, str):
            raise ConfigError(f"Task.version must be a string, got {self.version!r}")

    def load(self, *, source: Optional[dict[str, Any]] = None) -> "LoadedTask":
        """The task as the pipeline sees it (the splits read once, the model's forward
        checked). `source`: where it came from, for run.json (default: built in Python)."""
        from autocompress.tasks.user import build_task

        splits = (self.train, self.val) if self.test is None else (self.train, self.val, self.test)
        spec = {**(source or {"kind": "python"}), "name": self.name, "model_class": type(self.model).__name__, "version": self.version}
        return build_task(self.model, splits, name=self.name, spec=spec, model_field="Task.model", data_field="Task")


__all__ = ["METRICS", "Task"]
