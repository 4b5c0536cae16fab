"""Content-addressed feature cache: every extraction happens once.

A key is the sha256 of the extractor's name, version and resolved options and of
the content of every input file. An entry is one ``.npz`` holding the arrays and
their checksum; it is written to a temporary file and renamed, so an interrupted
run leaves no half-written entry, and an entry that fails its checksum is
deleted and recomputed, never used.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BadInputError


def cache_root() -> Path:
    """Where features and computed masks are cached: ``$BENCH_CACHE_DIR`` or ``~/.cache/prognosis-bench/cache``.

    Within ``cache_root_as(folder)`` it is that folder: a cluster worker that shares its client's cache.
    """
    given = _ROOT.get()
    if given is not None:
        return given
    env = os.environ.get("BENCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "prognosis-bench" / "cache"


_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("bench_cache_root", default=None)


@contextlib.contextmanager
def cache_root_as(folder: Path | None) -> Iterator[None]:
    """``cache_root()`` is ``folder`` within the block (in this thread only); None leaves it as it is."""
    token = _ROOT.set(Path(folder)) if folder is not None else None
    try:
        yield
    finally:
        if token is not None:
            _ROOT.reset(token)


def tools_dir() -> Path:
    """Where compiled code and other tool caches go (never data): ``~/.cache/prognosis-bench``."""
    return Path.home() / ".cache" / "prognosis-bench"


READ_ONLY_ENV = "BENCH_CACHE_READONLY"  # set (not 0) by users of a shared cache that no run may change


def read_only_reason() -> str:
    """Why the feature cache is used read-only ("" when runs may write it): ``$BENCH_CACHE_READONLY``, or a folder
    that cannot be written. A run on a read-only cache is served its hits; ``bench.protocol.cache_check`` fails it
    before extraction if an entry is missing. A cache root under a file is an error, not a read-only cache.
    """
    if os.environ.get(READ_ONLY_ENV, "") not in ("", "0"):
        return f"${READ_ONLY_ENV} is set"
    features = cache_root() / "features"
    try:
        features.mkdir(parents=True, exist_ok=True)
        if not os.access(features, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(features))
        probe = features / f".probe.{os.getpid()}.tmp"  # root passes os.access; only a write tells (chattr, ro mounts)
        probe.write_bytes(b"")
        probe.unlink()
    except (NotADirectoryError, FileExistsError) as exc:
        raise _cache_error("write", exc) from exc
    except OSError as exc:
        return f"it cannot be written: {exc.strerror or type(exc).__name__}"
    return ""


def masks_dir() -> Path:
    return cache_root() / "masks"


@dataclass(frozen=True)
class CacheSummary:
    root: Path
    feature_entries: int
    feature_bytes: int
    masks: int
    mask_bytes: int

    def __str__(self) -> str:
        return (f"{self.root}: {self.feature_entries} feature entries ({self.feature_bytes / 1e6:.1f} MB), "
                f"{self.masks} masks ({self.mask_bytes / 1e6:.1f} MB)")  # fmt: skip


def summary() -> CacheSummary:
    """What ``bench cache info`` reports; a cache folder that cannot be read is one error naming it."""
    features = FeatureCache.default()
    try:
        for folder in (cache_root(), features.root, masks_dir()):
            if folder.is_dir():
                with os.scandir(folder):  # rglob and glob pass over a folder they cannot read: say so instead
                    pass
        count, size = features.info()
        masks = list(masks_dir().glob("*.nii.gz")) if masks_dir().exists() else []
        return CacheSummary(cache_root(), count, size, len(masks), sum(f.stat().st_size for f in masks))
    except OSError as exc:
        raise _cache_error("read", exc) from exc


def clear() -> CacheSummary:
    """Empty the feature and mask caches; what was there before."""
    before = summary()
    try:
        FeatureCache.default().clear()
        if masks_dir().exists():
            shutil.rmtree(masks_dir())
    except OSError as exc:
        raise _cache_error("clear", exc) from exc
    return before


def _cache_error(action: str, exc: OSError) -> BadInputError:
    folder = str(exc.filename or cache_root())
    if isinstance(exc, NotADirectoryError):
        fix = "it is a file: move it away"
    else:
        fix = f"make it {'readable' if action == 'read' else 'writable'}"
    return BadInputError(
        f"cannot {action} the cache folder {folder!r} ({exc.strerror or type(exc).__name__}); {fix}, "
        "or point $BENCH_CACHE_DIR at another folder"
    )


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of every file (name and bytes) in a folder such as a DICOM series.

    Read once per process: a file whose size, modification time and inode have not changed since is
    not read again (cache keys and the cohort's content fingerprint both ask for every input file).
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = tuple((str(f.resolve()), *_stat_stamp(f)) for f in files)
    known = _DIGESTS.get(stamp)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime, inode) of every file read -> digest, for this process


def _stat_stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()  # FileNotFoundError for a missing file, as reading it would raise
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def entry_key(name: str, version: str, options: dict, inputs: list[Path]) -> str:
    body = json.dumps([name, version, options], sort_keys=True, default=str)
    digest = hashlib.sha256(body.encode())
    for path in inputs:
        digest.update(file_digest(Path(path)).encode())
    return digest.hexdigest()


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return digest.hexdigest()


@dataclass
class FeatureCache:
    root: Path

    @classmethod
    def default(cls) -> FeatureCache:
        return cls(cache_root() / "features")

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files if k != "__checksum__"}
                stored = str(data["__checksum__"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            stored, arrays = "", {}
        if stored != _checksum(arrays):
            with contextlib.suppress(OSError):  # a read-only cache keeps it; either way it is a miss, never used
                path.unlink(missing_ok=True)  # damaged: recompute rather than use
            return None
        return arrays

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            with tmp.open("wb") as handle:
                np.savez(handle, __checksum__=np.array(_checksum(arrays)), **arrays)
            os.replace(tmp, path)
        except BaseException:  # an error, Ctrl-C or SIGTERM (see bench.signals): no half-written file is left
            tmp.unlink(missing_ok=True)
            raise

    def info(self) -> tuple[int, int]:
        """Number of entries and their total size in bytes."""
        files = list(self.root.rglob("*.npz")) if self.root.exists() else []
        entries = [f for f in files if not f.name.startswith(".")]  # not a writer's '.<key>.<pid>.tmp.npz'
        return len(entries), sum(f.stat().st_size for f in entries)

    def clear(self) -> int:
        count, _ = self.info()
        if self.root.exists():
            shutil.rmtree(self.root)
        return count
