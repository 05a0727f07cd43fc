"""`import autocompress`, the pure layers, the technique registry and the search driver
stay cheap: no torch, onnxruntime, optuna or ray until they are used."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_lean():
    code = (
        "import sys, autocompress, autocompress.config, autocompress.space, autocompress.pareto, autocompress.errors\n"
        "import autocompress.techniques, autocompress.schema, autocompress.names, autocompress.segments, autocompress.fidelity\n"
        "import autocompress.recipes, autocompress.atomic, autocompress.backends, autocompress.backends.ray_cluster\n"
        "import autocompress.driver, autocompress.run, autocompress.cli, autocompress.api\n"
        "autocompress.Task, autocompress.search, autocompress.load_run\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'optuna', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_api_module_and_names_load_on_first_use():
    code = (
        "import autocompress as ac\n"
        "print(ac.api.__name__, ac.show is ac.api.show, ac.export is ac.api.export, callable(ac.api.report))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "autocompress.api True True True"
