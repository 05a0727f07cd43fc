"""Atomic file writes: a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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


__all__ = ["copy_file_atomic", "write_bytes_atomic", "write_text_atomic"]
