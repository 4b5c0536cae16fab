"""The weights lock: the content hash (and hub commit) of each published weights file a run may load.

``weights.lock.json`` is data, like ``splits/``: read from ``$BENCH_WEIGHTS_LOCK``, else from the
working directory, else from the source checkout's root (a run started elsewhere in it); ``bench
weights lock`` writes ``$BENCH_WEIGHTS_LOCK`` or the working directory's. An entry is keyed by the
file's name (``MedSAM2_latest.pt``, ``r3d_18-b3b3357e.pth``): any file of that name, wherever it was
found (the hub's cache, ours, ``$ENV``, ``--weights PATH``), must have the entry's sha256 or is
refused; a file of another name (your own checkpoint) is not checked, only recorded with each run.
Hashes are never written by hand: an entry holds what a real file gave (``bench weights lock``), or a
hash prefix the publisher put in the file's name (torch hub's ``-b3b3357e``), marked as a prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from bench.errors import InputError, WeightsError

LOCK_NAME = "weights.lock.json"
FORMAT = "prognosis-bench-weights-lock/1"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HEX = re.compile(r"^[0-9a-f]+$")
SHOWN = 16  # hex digits of a hash shown in messages and on pages
ABOUT = (
    "The sha256 of each published weights file a run may load, by file name; a file of a locked name that differs "
    "is refused. Written by `bench weights lock` from real files, never by hand; sha256_prefix: only the start "
    "of the hash is known (from the file's published name). See README.md, Weights."
)


@dataclass(frozen=True)
class LockEntry:
    """One published weights file as the lock records it."""

    name: str  # the file's name: the key every file is checked by
    source: str  # where it is published: its URL, huggingface:ORG/NAME/FILE, or "local file"
    revision: str | None = None  # the Hugging Face hub commit it came from; None when not from the hub
    sha256: str = ""  # the whole file's sha256; "" until a real file fills it (`bench weights lock`)
    sha256_prefix: str = ""  # a known start of it (a torch hub file name's 8 hex digits), while sha256 is unknown
    extractor: str = ""  # the extractor that loads it

    @property
    def expected(self) -> str:
        return self.sha256 or self.sha256_prefix

    def as_json(self) -> dict:
        body = asdict(self)
        return {k: v for k, v in body.items() if v != "" or k in ("name", "source")}


@dataclass(frozen=True)
class WeightsFile:
    """What identifies the weights a run computed with: the file's name, its sha256 and, from a hub, the commit."""

    name: str
    sha256: str
    repo: str = ""  # the Hugging Face hub repository it came from ("" when not from a hub cache)
    revision: str = ""  # that repository's commit

    @classmethod
    def of(cls, path: Path) -> WeightsFile:
        repo, revision = hub_origin(path)
        return cls(path.name, sha256_of(path), repo, revision)

    def params(self, role: str) -> dict[str, str]:
        """MLflow parameters, e.g. ``extractor.weights.sha256``."""
        out = {f"{role}.weights.file": self.name, f"{role}.weights.sha256": self.sha256}
        if self.revision:
            out.update({f"{role}.weights.repo": self.repo, f"{role}.weights.revision": self.revision})
        return out

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}

    @staticmethod
    def describe(record: dict) -> str:
        """The page's words for one file: ``MedSAM2_latest.pt sha256 0123... (wanglab/MedSAM2 at 89ab...)``."""
        text = f"{record.get('name', '?')} sha256 {str(record.get('sha256', '?'))[:SHOWN]}"
        if record.get("revision"):
            text += f" ({record.get('repo', '?')} at {record['revision'][:12]})"
        return text


def hub_origin(path: Path) -> tuple[str, str]:
    """(repository, commit) of a file in a Hugging Face hub cache (``models--ORG--NAME/snapshots/COMMIT/...``).

    Read from the path as ``hf_hub_download`` returns it (the snapshot's link, not the blob it points to);
    ``("", "")`` for any other file.
    """
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--") and _COMMIT.match(parts[i + 1]):
            return parts[i - 1][len("models--") :].replace("--", "/"), parts[i + 1]
    return "", ""


def sha256_of(path: Path) -> str:
    """The sha256 of the file's bytes (what ``sha256sum`` prints); read once per process and version of the file."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- the file


def lock_path() -> Path:
    """Where ``bench weights lock`` writes: ``$BENCH_WEIGHTS_LOCK``, else ``./weights.lock.json``."""
    env = os.environ.get("BENCH_WEIGHTS_LOCK")
    return Path(env).expanduser() if env else Path.cwd() / LOCK_NAME


def lock_in_use() -> Path | None:
    """The lock that runs check files against: the one ``lock_path`` names, else the source checkout's."""
    own = lock_path()
    if own.is_file() or os.environ.get("BENCH_WEIGHTS_LOCK"):
        return own if own.is_file() else None
    checkout = Path(__file__).resolve().parents[2] / LOCK_NAME  # a source checkout; absent from an install
    return checkout if checkout.is_file() else None


def read_lock(path: Path | None = None) -> dict[str, LockEntry]:
    """The entries of the lock in use (or of ``path``), by file name; {} when there is none."""
    path = path if path is not None else lock_in_use()
    if path is None or not path.is_file():
        return {}
    stat = path.stat()
    return dict(_read(str(path), stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, LockEntry], ...]:
    try:
        body = json.loads(Path(path).read_text())
        if body.get("format") != FORMAT:
            raise ValueError(f"format {body.get('format')!r}, expected {FORMAT!r}")
        entries = [LockEntry(**item) for item in body["weights"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"weights lock {path!r} cannot be read ({type(exc).__name__}: {exc}); restore it from the repository, "
            "or delete it and record the files again with `bench weights lock`"
        ) from None
    names = [e.name for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    bad = [e.name for e in entries if not _HEX.match(e.expected or "0")]
    if twice or bad:
        what = f"names {twice} twice" if twice else f"a hash that is not lower-case hex for {bad}"
        raise InputError(f"weights lock {path!r} has {what}; fix it, or record the files again with "
                         "`bench weights lock`")  # fmt: skip
    return tuple((e.name, e) for e in entries)


def write_entry(entry: LockEntry, path: Path | None = None) -> Path:
    """Add or replace ``entry`` (by name) in the lock ``lock_path`` names, starting from the lock in use."""
    target = path if path is not None else lock_path()
    start = target if target.is_file() else lock_in_use()
    entries = {**read_lock(start), entry.name: entry} if start is not None else {entry.name: entry}
    body = {"format": FORMAT, "about": ABOUT, "weights": [entries[name].as_json() for name in sorted(entries)]}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(body, indent=1) + "\n")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def verify(path: Path, extractor: str, name_prefix: str = "", locked: bool = True) -> None:
    """Refuse ``path`` unless its sha256 is what the lock's entry for its name says (else ``name_prefix``, the
    hash prefix its publisher put in the name), in one line that names both hashes and what to do.

    ``locked=False`` (``bench weights lock``, which replaces the entry) checks ``name_prefix`` only.
    """
    lock = lock_in_use() if locked else None
    entry = read_lock(lock).get(path.name) if lock is not None else None
    expected = entry.expected if entry else name_prefix
    if not expected:
        return
    actual = sha256_of(path)
    if actual.startswith(expected):
        return
    which = "its sha256 prefix" if entry is None or not entry.sha256 else "its sha256"
    said = f"{lock} records {which} {expected[:SHOWN]}" if entry else f"its published name says {expected}"
    raise WeightsError(
        f"{extractor}: weights file {str(path)!r} is not the locked one: its sha256 is {actual[:SHOWN]}, {said}; "
        f"use the locked file (a downloaded copy: delete it and it is fetched again), or, if the new file is "
        f"intended, record it with `bench weights lock --weights {path}`"
    )
