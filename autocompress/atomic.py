"""Atomic file writes: a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


__all__ = ["copy_file_atomic", "unwritable_reason", "write_bytes_atomic", "write_text_atomic"]
