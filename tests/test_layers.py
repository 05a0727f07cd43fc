"""The package's layers: every module sits in one, imports only from its own layer or the
ones before it (imports inside functions count, `if TYPE_CHECKING:` blocks do not), and no
chain of imports comes back to where it started. A new module must be given a layer here."""

from __future__ import annotations

import ast
from pathlib import Path

import autocompress

ROOT = Path(autocompress.__file__).resolve().parent

# In pipeline order; a prefix ending in '.' holds a whole package.
LAYERS = [
    ["errors", "atomic", "names", "segments", "faults"],  # shared facts and helpers, no dependencies
    ["schema", "pareto", "fidelity", "hardware", "stopping"],  # pure data and numerics; hardware profiles
    ["data.", "tasks.", "transforms.", "training.", "export.", "evaluation."],  # what touches models and ONNX files
    ["techniques."],  # one file per technique: config, search-space schema, sampling, labels, apply
    ["config", "space", "recipes", "climb"],  # candidates and search spaces, over the registry; the structured start
    ["pipeline", "testing"],  # one candidate config -> measured metrics; the conformance suite
    ["backends."],  # drive the pipeline over a space (Optuna here, Ray Tune on a cluster)
    ["run", "progress", "outputs", "report."],  # the run directory and what is written into it
    ["inspect_run", "deploy", "driver", "verify", "audit", "profile_device"],  # the commands
    ["api"],  # the Python API over the commands
    ["cli", "__init__", "__main__"],
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name.endswith(".") and (module + ".").startswith(name)):
                return i
    raise AssertionError(f"autocompress.{module} is in no layer: add it to tests/test_layers.py")


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports (at any depth, TYPE_CHECKING blocks left out)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("autocompress"):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autocompress") and node.level == 0:
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub.removeprefix("autocompress.") in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m.removeprefix("autocompress").removeprefix(".") or "__init__" for m in found}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: {i for i in imports_of(p, known) if i != m} for m, p in mods.items()}


def test_every_module_imports_only_its_own_layer_or_earlier_ones():
    bad = []
    for module, imported in sorted(_graph().items()):
        for other in sorted(imported):
            if layer_of(other) > layer_of(module):
                bad.append(f"autocompress.{module} (layer {layer_of(module)}) imports autocompress.{other} (layer {layer_of(other)})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_walker_sees_lazy_imports_and_skips_type_checking_blocks(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from autocompress.driver import search\n"
                   "def f():\n    from autocompress.pipeline import prepare\n    import autocompress.cli\n"
                   "from autocompress.techniques import prune\n")
    assert imports_of(src, {"techniques.prune", "pipeline", "cli", "driver"}) == {"pipeline", "cli", "techniques.prune"}
