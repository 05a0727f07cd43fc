"""autocompress: measured, joint compression search for PyTorch models.

The Python API (autocompress.api): Task, search, load_run, SearchResult, show and export
(and api.report, since autocompress.report is the package that draws); the command line
wraps it. Importing the package is cheap: torch, onnxruntime and optuna are imported only by the
modules that touch models, ONNX files or studies.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = ("Task", "SearchResult", "search", "load_run", "show", "export")  # autocompress.api, imported when first used

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API or name == "api":
        import importlib

        api = importlib.import_module("autocompress.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")
