"""Tasks: a trained teacher plus its train / val / test data, from the built-in demo, a
user's files, or a Task built in Python. Everything downstream sees only a LoadedTask.
Importing this package imports no torch (LoadedTask and Split load tasks.base when used)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from autocompress.tasks.python import Task

if TYPE_CHECKING:
    from autocompress.tasks.base import LoadedTask, Split


def check_source(model: Optional[str], data: Optional[str], checkpoint: Optional[str], task: Optional[str]) -> None:
    """The task options go together as they must (ConfigError, one line), before anything is loaded."""
    from autocompress.errors import ConfigError

    if task is not None and (model is not None or data is not None or checkpoint is not None):
        raise ConfigError("--task goes alone: the Task it returns holds the model and the data (no --model, --data or --checkpoint)")
    if (model is None) != (data is None):
        raise ConfigError("--model and --data go together: give both, or neither for the demo")


def load_task(
    model: Optional[str] = None,
    data: Optional[str] = None,
    checkpoint: Optional[str] = None,
    *,
    task: Optional[str] = None,
    progress=print,
) -> "LoadedTask":
    """The demo when no `model`, `data` or `task` is given; else the user's files:
    `model` and `data` (FILE.py:FN each, and an optional `checkpoint`), or `task`
    (FILE.py:FN returning an autocompress.Task)."""
    check_source(model, data, checkpoint, task)
    if task is not None:
        from autocompress.errors import TaskError
        from autocompress.tasks.user import call_user

        made = call_user(task, flag="--task")
        if not isinstance(made, Task):
            raise TaskError(f"--task: {task} must return an autocompress.Task, got {type(made).__name__}")
        return made.load(source={"kind": "task", "task": task})
    if model is None:
        if checkpoint is not None:
            from autocompress.errors import ConfigError

            raise ConfigError("--checkpoint needs --model and --data")
        from autocompress.tasks.demo import demo_task

        return demo_task(progress=progress)
    from autocompress.tasks.user import user_task

    return user_task(model, data, checkpoint)


def __getattr__(name: str):
    if name in ("LoadedTask", "Split"):
        from autocompress.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module 'autocompress.tasks' has no attribute {name!r}")


__all__ = ["LoadedTask", "Split", "Task", "check_source", "load_task"]
