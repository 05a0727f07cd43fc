"""The run directory: creation checks, resume checks, the lock, artifact clean-up."""

from __future__ import annotations

import json

import pytest

from autocompress.errors import RunDirError
from autocompress.atomic import write_text_atomic
from autocompress.run import MANIFEST, RunDir, cpu_info, new_manifest, package_versions


def test_check_new_accepts_missing_or_empty_and_refuses_anything_else(tmp_path):
    assert RunDir.check_new(tmp_path / "fresh").path == tmp_path / "fresh"
    (tmp_path / "empty").mkdir()
    RunDir.check_new(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        RunDir.check_new(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError):
        RunDir.check_new(tmp_path / "file")
    assert not (tmp_path / "fresh").exists()  # checking writes nothing


def test_open_existing_needs_a_manifest(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory"):
        RunDir.open_existing(tmp_path)
    run = RunDir(tmp_path)
    run.write_manifest({"seed": 3})
    assert RunDir.open_existing(tmp_path).read_manifest() == {"seed": 3}
    assert json.loads((tmp_path / MANIFEST).read_text()) == {"seed": 3}


def test_lock_is_exclusive(tmp_path):
    run = RunDir(tmp_path)
    held = run.lock()
    try:
        with pytest.raises(RunDirError, match="in use by another autocompress process"):
            RunDir(tmp_path).lock()
    finally:
        held.close()
    RunDir(tmp_path).lock().close()  # free again once released


def test_remove_trial_artifacts_keeps_only_the_front(tmp_path):
    run = RunDir(tmp_path)
    for n in range(5):
        run.trial_dir(n).mkdir(parents=True)
        (run.trial_dir(n) / "model.onnx").write_bytes(b"x")
    (tmp_path / "trials" / "notes").mkdir()
    run.remove_trial_artifacts(keep={1, 3})
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["1", "3", "notes"]
    assert (run.trial_dir(3) / "model.onnx").is_file()
    RunDir(tmp_path / "none").remove_trial_artifacts(keep=set())  # no trials/ folder: nothing to do


def test_storage_url_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = RunDir(tmp_path / "r").storage_url
    assert url == f"sqlite:///{(tmp_path / 'r' / 'study.db').resolve()}"


def test_write_text_atomic_leaves_no_temporary_files(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "one")
    write_text_atomic(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_manifest_describes_the_machine():
    m = new_manifest(seed=1)
    assert m["seed"] == 1 and m["packages"]["torch"] and m["packages"]["autocompress"] == "0.1.0"
    assert set(package_versions()) >= {"python", "torch", "onnxruntime", "optuna"}
    info = cpu_info()
    assert info["cores"] >= 1 and isinstance(info["flags"], list)
