"""Shared fixtures: an isolated cache, the tiny user task, a fast hardware profile, a
prepared pipeline context and a prune stage that fails. Everything here is real (ORT
sessions, Torch-Pruning, Optuna); only the sizes are small."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest

from tests.helpers import FAST_PROFILE_YAML, SPACE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC, TINY_TASK, search_args


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """AUTOCOMPRESS_CACHE points at a fresh temporary folder for the whole session: tests
    never read (or fill) the user's ~/.cache/autocompress."""
    cache = tmp_path_factory.mktemp("autocompress-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOCOMPRESS_CACHE", str(cache))
        mp.delenv("AUTOCOMPRESS_WORKERS", raising=False)  # trials one at a time unless a test asks for workers
        yield cache


@pytest.fixture(scope="session")
def tiny_module():
    """The fixture task file imported as a plain module (for its model class and data)."""
    name = "_tests_tiny_task"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TINY_TASK)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def tiny_task():
    """The tiny task loaded the way the CLI loads it (tasks.user.user_task)."""
    from autocompress.tasks.user import user_task

    return user_task(TINY_MODEL_SPEC, TINY_DATA_SPEC)


@pytest.fixture(scope="session")
def fast_profile():
    from autocompress.hardware import HardwareProfile

    return HardwareProfile(name="fast", warmup=2, repeats=5, passes=3, max_passes=3)


@pytest.fixture(scope="session")
def prepared(tiny_task, fast_profile, tmp_path_factory):
    """pipeline.prepare() on the tiny task: teacher exported and measured once."""
    from autocompress.pipeline import prepare

    ctx = prepare(tiny_task, fast_profile, tmp_path_factory.mktemp("prepared"))
    yield ctx
    ctx.close()


@pytest.fixture
def fast_profile_yaml(tmp_path):
    path = tmp_path / "fast-profile.yaml"
    path.write_text(FAST_PROFILE_YAML)
    return path


@pytest.fixture(scope="session")
def cli_inputs(tmp_path_factory):
    """A small --space and a fast --profile YAML for end-to-end runs."""
    d = tmp_path_factory.mktemp("cli-inputs")
    (d / "space.yaml").write_text(SPACE_YAML)
    (d / "profile.yaml").write_text(FAST_PROFILE_YAML)
    return SimpleNamespace(dir=d, space=d / "space.yaml", profile=d / "profile.yaml")


@pytest.fixture(scope="session")
def search_run(cli_inputs, tmp_path_factory):
    """One budget-3 search through the CLI on the tiny task, shared by read-only tests
    (tests that change a run copy it first)."""
    from autocompress.cli import main

    out = tmp_path_factory.mktemp("cli-run") / "run"
    rc = main(search_args(cli_inputs, "--budget", 3, "--out", out))
    return SimpleNamespace(rc=rc, out=out)


@pytest.fixture
def failing_prune(monkeypatch):
    """Every candidate that prunes fails in its prune stage (trials run in this process)."""
    from autocompress.techniques import technique

    prune = type(technique("prune"))
    original = prune.apply

    def apply(self, model, cfg, ctx):
        if cfg.active:
            raise RuntimeError("no pruning today")
        return original(self, model, cfg, ctx)

    monkeypatch.setattr(prune, "apply", apply)
