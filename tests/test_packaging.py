"""The package as `pip install autocompress` gives it: a built wheel (not the editable
checkout) installed into a fresh virtual environment carries its built-in search spaces
and profiles, and runs a search from a directory outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.helpers import FAST_PROFILE_YAML, TINY_TASK

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "experiments", "tests")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_a_wheel_installed_in_a_fresh_venv_has_its_builtin_spaces_and_searches(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE, symlinks=True)  # a clean tree: the build writes build/ and egg-info
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist"])
    (wheel,) = (tmp_path / "dist").glob("autocompress-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    # the dependencies (torch, onnxruntime, ...) from this environment, without its editable autocompress:
    # a path line in a .pth file adds the directory but runs none of the .pth files inside it
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "user"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([py, "-c", "import autocompress.space as s, autocompress.hardware as h; print(s.SPACES_DIR); print(h.PROFILES_DIR)"],
                 cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the installed wheel, not the checkout
    assert (Path(where[0]) / "default.yaml").is_file() and (Path(where[0]) / "global.yaml").is_file()
    assert (Path(where[1]) / "cpu-1thread.yaml").is_file()

    shutil.copy(TINY_TASK, work / "tiny_task.py")
    (work / "fast.yaml").write_text(FAST_PROFILE_YAML)
    _run([venv / "bin" / "autocompress", "search", "--model", "tiny_task.py:build_model", "--data", "tiny_task.py:build_data",
          "--profile", "fast.yaml", "--budget", "1", "--out", "run"], cwd=work, env=env, timeout=600)
    assert (work / "run" / "trials.csv").is_file() and (work / "run" / "space.yaml").is_file()  # no --space: the built-in default
