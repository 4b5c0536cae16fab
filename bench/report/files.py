"""Writing report files: atomically, so an interrupted write leaves the old file (or none), never half of one."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from bench.errors import UsageError


def check_writable(path: Path | None, flag: str, folder: bool = False) -> None:
    """Raise ``UsageError`` unless ``path`` (the value of ``flag``) can be written, before any work starts.

    A file output must not be a directory; a ``folder`` output must not be a file. Missing parent
    folders are fine (they are created), but the nearest one that exists must be a writable folder.
    """
    if path is None:
        return
    path = Path(path)
    if path.is_dir() and not folder:
        raise UsageError(f"{flag} {str(path)!r} is a directory; give a file name in it")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a file; give a folder")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {str(path)!r} cannot be written: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {str(path)!r} cannot be written: folder {str(existing)!r} is not writable; choose another path"
        )


def write_atomic(path: Path, text: str) -> Path:
    if path.is_dir():
        raise UsageError(f"{str(path)!r} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers of one path never share a temp file
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def stale_diff(text: str, path: Path) -> str | None:
    """None when ``path`` holds exactly ``text``; otherwise a unified diff from the file to ``text``."""
    current = path.read_text() if path.is_file() else ""
    if current == text:
        return None
    diff = difflib.unified_diff(
        current.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "regenerated"
    )
    return "".join(diff) or f"{path} differs from the regenerated file\n"
