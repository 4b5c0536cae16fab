"""Writing report files: atomically, so an interrupted write leaves the old file (or none), never half of one."""

from __future__ import annotations

import difflib
from pathlib import Path

from bench.errors import UsageError


def write_atomic(path: Path, text: str) -> Path:
    if path.is_dir():
        raise UsageError(f"{str(path)!r} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
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
