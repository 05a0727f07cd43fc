"""Tasks: a trained teacher plus its train / val / test data, from the built-in demo or a
user's file. Everything downstream sees only a LoadedTask."""

from __future__ import annotations

from typing import Optional

from autocompress.tasks.base import LoadedTask, Split


def load_task(
    model: Optional[str] = None,
    data: Optional[str] = None,
    checkpoint: Optional[str] = None,
    *,
    progress=print,
) -> LoadedTask:
    """The demo when neither `model` nor `data` is given, else the user's task."""
    if model is None and data is None:
        if checkpoint is not None:
            from autocompress.errors import ConfigError

            raise ConfigError("--checkpoint needs --model and --data")
        from autocompress.tasks.demo import demo_task

        return demo_task(progress=progress)
    from autocompress.tasks.user import user_task

    return user_task(model, data, checkpoint)


__all__ = ["LoadedTask", "Split", "load_task"]
