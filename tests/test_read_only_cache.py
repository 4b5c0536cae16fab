"""A feature cache that cannot be written is used read-only: its hits serve a run, a missing entry fails it first.

Read-only either because its user says so (``$BENCH_CACHE_READONLY``, for a shared cache) or because the folder
cannot be written. Root ignores file modes, so the folder is made immutable with ``chattr +i`` as root (a read-only
mount, as far as a writer can tell) and read-only with ``chmod`` otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.testing import run_cli

RUN = ("run", "--dataset", "synthetic_mm_tiny", "--extractor", "radiomics:feature_classes=firstorder",
       "--model", "coxnet", "--bootstrap", "20", "--quiet")  # fmt: skip
ENTRIES = 24  # one per study of the tiny cohort


def _run(tmp: Path, data: Path, cache: Path, name: str, **env: str) -> subprocess.CompletedProcess:
    return run_cli(
        *RUN, "--tracking-uri", f"sqlite:///{tmp / (name + '.db')}", "--results", str(tmp / f"{name}.json"),
        env={"BENCH_DATA_DIR": str(data), "BENCH_CACHE_DIR": str(cache), **env},
    )  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [{k: row[k] for k in ("extractor", "model", "metrics")} for row in json.loads(path.read_text())["rows"]]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path) -> tuple[Path, Path]:
    """A cache holding every entry of ``RUN`` and the results of the run that filled it."""
    tmp = tmp_path_factory.mktemp("filled")
    result = _run(tmp, synthetic_data, tmp / "cache", "fill")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp / "cache" / "features").rglob("*.npz"))) == ENTRIES
    return tmp / "cache", tmp / "fill.json"


def _copy(filled: tuple[Path, Path], to: Path, drop_one: bool = False) -> tuple[Path, Path | None]:
    """A copy of the filled cache; with ``drop_one``, less one entry (returned)."""
    shutil.copytree(filled[0], to)
    dropped = sorted((to / "features").rglob("*.npz"))[0] if drop_one else None
    if dropped is not None:
        dropped.unlink()
    return to, dropped


def _entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


@pytest.mark.parametrize("readonly", ["1", "yes"])
def test_a_cache_said_read_only_serves_a_run_with_every_entry(
    tmp_path: Path, synthetic_data: Path, filled: tuple[Path, Path], readonly: str
) -> None:
    cache, _ = _copy(filled, tmp_path / "cache")
    before = _entries(cache)
    result = _run(tmp_path, synthetic_data, cache, "served", BENCH_CACHE_READONLY=readonly)
    assert result.returncode == 0, result.stderr
    assert _rows(tmp_path / "served.json") == _rows(filled[1]), "the same results as the run that filled it"
    assert _entries(cache) == before, "nothing written"


def test_a_cache_said_read_only_missing_an_entry_fails_before_extraction(
    tmp_path: Path, synthetic_data: Path, filled: tuple[Path, Path]
) -> None:
    cache, dropped = _copy(filled, tmp_path / "cache", drop_one=True)
    before = _entries(cache)
    result = _run(tmp_path, synthetic_data, cache, "refused", BENCH_CACHE_READONLY="1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, f"one line: {result.stderr}"
    assert f"lacks 1 of the {ENTRIES} entries" in result.stderr and "$BENCH_CACHE_READONLY is set" in result.stderr
    assert _entries(cache) == before, "the folder is writable, yet nothing was extracted into it"
    assert not (tmp_path / "refused.json").exists()


def test_the_setting_0_leaves_a_writable_cache_written(
    tmp_path: Path, synthetic_data: Path, filled: tuple[Path, Path]
) -> None:
    cache, dropped = _copy(filled, tmp_path / "cache", drop_one=True)
    result = _run(tmp_path, synthetic_data, cache, "written", BENCH_CACHE_READONLY="0")
    assert result.returncode == 0, result.stderr
    assert dropped is not None and dropped.is_file(), "the missing entry is computed and written as ever"


@contextlib.contextmanager
def _frozen(folder: Path) -> Iterator[None]:
    """``folder`` and everything in it cannot be written, even by root, within the block (skip where impossible)."""
    as_root = os.geteuid() == 0
    if as_root:
        made = subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"chattr +i is not available here as root: {made.stderr.strip()}")
    else:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    try:
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
        else:
            for path in [folder, *folder.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)


@pytest.mark.parametrize("drop_one", [False, True], ids=["every-entry", "one-missing"])
def test_a_cache_folder_that_cannot_be_written_is_used_read_only(
    tmp_path: Path, synthetic_data: Path, filled: tuple[Path, Path], drop_one: bool
) -> None:
    cache, _ = _copy(filled, tmp_path / "cache", drop_one=drop_one)
    with _frozen(cache):
        result = _run(tmp_path, synthetic_data, cache, "frozen")
    if drop_one:
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0, f"one line: {result.stderr}"
        assert f"lacks 1 of the {ENTRIES} entries" in result.stderr and "cannot be written" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert _rows(tmp_path / "frozen.json") == _rows(filled[1])

