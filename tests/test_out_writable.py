"""Where a search writes is checked before any work: --out, --resume, the default runs/
folder and the demo teacher's cache. Root writes through permission bits, so each
unwritable place is one nobody can write: below a regular file, /proc, or (not as root) a
read-only folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from autocompress.atomic import unwritable_reason
from tests.helpers import search_args

ROOT = os.geteuid() == 0


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot create anything in."""
    if ROOT:
        yield Path("/proc")  # root: permission bits do not stop it, /proc does
        return
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o500)
    yield d
    d.chmod(0o700)


def _unwritable(kind: str, tmp_path: Path, read_only: Path) -> Path:
    if kind == "below a file":
        (tmp_path / "file.txt").write_text("not a folder")
        return tmp_path / "file.txt" / "run"
    return read_only / "autocompress-run" / "out"


def test_unwritable_reason(tmp_path, read_only_dir):
    assert unwritable_reason(tmp_path / "new" / "deeper") is None
    assert unwritable_reason(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind
    (tmp_path / "file.txt").write_text("x")
    assert unwritable_reason(tmp_path / "file.txt" / "run") == f"{tmp_path / 'file.txt'} is a file, not a directory"
    assert unwritable_reason(read_only_dir / "run").startswith(f"nothing can be created in {read_only_dir} (")


@pytest.mark.parametrize("kind", ["below a file", "read-only folder"])
def test_an_out_that_cannot_be_written_is_refused_at_once(kind, cli_inputs, tmp_path, read_only_dir, capsys, monkeypatch):
    from autocompress.cli import main

    def never(*args, **kwargs):
        raise AssertionError("the task was loaded")

    monkeypatch.setattr("autocompress.tasks.load_task", never)
    out = _unwritable(kind, tmp_path, read_only_dir)
    before = sorted(p.name for p in tmp_path.iterdir())
    t0 = time.perf_counter()
    rc = main(search_args(cli_inputs, "--budget", 1, "--out", out))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"autocompress: error: --out {out}: cannot write there: ")
    assert time.perf_counter() - t0 < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_out_that_is_a_file_is_refused_and_left_alone(cli_inputs, tmp_path, capsys):
    from autocompress.cli import main

    out = tmp_path / "model.onnx"
    out.write_text("mine")
    assert main(search_args(cli_inputs, "--budget", 1, "--out", out)) == 2
    assert capsys.readouterr().err.strip() == f"autocompress: error: --out {out} is a file; give a directory (new, or empty)"
    assert out.read_text() == "mine"


def test_without_out_an_unwritable_runs_folder_is_refused(cli_inputs, tmp_path, capsys, monkeypatch):
    from autocompress.cli import main

    monkeypatch.chdir(tmp_path)
    Path("runs").write_text("a file where the runs go")
    assert main(search_args(cli_inputs, "--budget", 1)) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("autocompress: error: --out not given: the default run directory runs/<task>-<time> cannot be written: "
                   f"{tmp_path / 'runs'} is a file, not a directory; give --out DIR")


def test_the_demo_teacher_is_not_trained_when_its_cache_cannot_be_written(tmp_path, capsys, monkeypatch):
    from autocompress.cli import main
    from autocompress.tasks import demo

    def never(*args, **kwargs):
        raise AssertionError("the teacher was trained")

    monkeypatch.setattr(demo, "train_teacher", never)
    (tmp_path / "file.txt").write_text("x")
    cache = tmp_path / "file.txt" / "cache"
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(cache))
    out = tmp_path / "run"
    assert main(["search", "--budget", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autocompress: error: $AUTOCOMPRESS_CACHE {cache}: the demo teacher cannot be cached there: "
                   f"{tmp_path / 'file.txt'} is a file, not a directory"]
    assert not out.exists()
