"""`import autocompress` and the pure layers stay cheap: no torch, onnxruntime or optuna."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_lean():
    code = (
        "import sys, autocompress, autocompress.config, autocompress.space, autocompress.pareto, autocompress.errors\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'optuna', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
