"""autocompress: measured, joint compression search for PyTorch models.

Importing the package is cheap: torch, onnxruntime and optuna are imported only by the
modules that touch models, ONNX files or studies.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
