"""autocompress: measured, joint compression search for PyTorch models.

The Python API (autocompress.api): Task, search, load_run and SearchResult; the command
line wraps it. Importing the package is cheap: torch, onnxruntime and optuna are imported only by the
modules that touch models, ONNX files or studies.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = ("Task", "SearchResult", "search", "load_run")  # autocompress.api, imported when first used

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from autocompress import api

        return getattr(api, name)
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")
