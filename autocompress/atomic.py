"""Atomic file writes: a reader never sees half a file."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name (torch.save,
    onnx.save): renamed over `path` when the block ends without an error, removed if it
    raises. A process killed mid-write leaves `path` as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_file_atomic(src: Path, dest: Path) -> None:
    """Copy `src` to a temporary file beside `dest` (in chunks: model files can be large),
    then rename it over `dest`; the temporary file is removed if the copy fails."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def unwritable_reason(path: Path) -> Optional[str]:
    """Why a directory at `path` could not be created or written into, or None when it can.
    The nearest existing folder on the way (`path` itself when it exists) must be a
    directory in which this process can create one: tried with an empty directory that is
    removed at once, so read-only mounts, permissions and /proc-like folders all count,
    whoever runs it (root too)."""
    path = Path(os.path.abspath(path))
    base = path
    while not base.exists() and base != base.parent:  # exists() is False below a regular file too
        base = base.parent
    if not base.is_dir():
        return f"{base} is a file, not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=base))
    except OSError as exc:
        return f"nothing can be created in {base} ({exc.strerror or type(exc).__name__})"
    return None


__all__ = ["atomic_path", "copy_file_atomic", "unwritable_reason", "write_bytes_atomic", "write_text_atomic"]


@contextmanager
def file_lock(directory, name: str):
    """An exclusive lock on the file `name` in `directory`, held for the `with` block: the
    workers of one run (processes on this machine) take turns, e.g. to time latency."""
    with open(Path(directory) / name, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
