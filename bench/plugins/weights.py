"""Pretrained weights: resolved in one order, verified, never replaced by random ones silently.

Order: an explicit path, an environment variable, the local caches (the Hugging Face hub's, torch
hub's, ours), then a download from the official source through the library made for it
(``huggingface_hub.hf_hub_download``, which knows the commit a file came from; torch hub's
``download_url_to_file`` with the hash prefix the file's name carries). Every file is checked
against the weights lock (``bench.plugins.weights_lock``) before it is used. If none works the run
stops with a message naming the file, where to get it, and the flag for an explicit
random-initialisation control (``--weights random``); rows computed with random weights carry the
label ``[random-init]``.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.cache import cache_root
from bench.errors import UsageError, WeightsError
from bench.plugins.weights_lock import LockEntry, WeightsFile, hub_origin, read_lock, sha256_of, verify, write_entry

RANDOM = "random"
RANDOM_LABEL = "random-init"
_NAME_HASH = re.compile(r"-([0-9a-f]{8,})\.")  # torch hub's convention: NAME-<sha256 prefix>.EXT


@dataclass(frozen=True)
class WeightsSource:
    """Where an extractor's checkpoint comes from."""

    filename: str  # e.g. MedSAM2_latest.pt
    env_var: str  # e.g. MEDSAM2_WEIGHTS
    url: str  # the official download (a Hugging Face file's resolve URL when hub_repo is set)
    homepage: str  # where a person gets it by hand
    locations: tuple[Path, ...] = ()  # other local caches to look in first (e.g. torch hub's)
    hub_repo: str = ""  # a Hugging Face model repository: found in and downloaded through the hub's cache

    def cached(self) -> Path:
        return cache_root() / "weights" / self.filename

    def name_prefix(self) -> str:
        """The sha256 prefix the published file's name carries (torch hub's ``-b3b3357e``), or ""."""
        found = None if self.hub_repo else _NAME_HASH.search(self.filename)
        return found.group(1) if found else ""

    def origin(self) -> str:
        return f"huggingface:{self.hub_repo}/{self.filename}" if self.hub_repo else self.url


def resolve_weights(source: WeightsSource, requested: str, extractor: str, locked: bool = True) -> Path | None:
    """The checkpoint to load, or None when random initialisation was asked for explicitly.

    ``locked=False`` (``bench weights lock`` only) skips the lock's entry for the file; a published name's
    hash prefix still holds.
    """
    if requested == RANDOM:
        return None
    if requested:
        path = Path(requested).expanduser()
        if not path.exists():
            raise WeightsError(f"{extractor}: weights file {str(path)!r} does not exist")
        return _checked(path, source, extractor, locked)
    env = os.environ.get(source.env_var)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise WeightsError(f"{extractor}: ${source.env_var} points to {str(path)!r}, which does not exist")
        return _checked(path, source, extractor, locked)
    revision = _locked_revision(source) if locked else None
    found = _from_hub(source, revision, local_only=True) if source.hub_repo else None
    for path in (*([found] if found else []), *source.locations, source.cached()):
        if path.exists():
            return _checked(path, source, extractor, locked)
    try:
        path = _from_hub(source, revision, local_only=False) if source.hub_repo else _from_url(source, extractor)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - network and hub libraries raise many types; all mean "no file"
        raise WeightsError(
            f"{extractor}: no weights file {source.filename} (download from {source.url} failed: "
            f"{type(exc).__name__}); get it from {source.homepage} and pass --weights PATH, set "
            f"${source.env_var}, or put it at {source.cached()}; or run a random-initialisation control with "
            f"--weights {RANDOM}"
        ) from exc
    return _checked(path, source, extractor, locked)


def _checked(path: Path, source: WeightsSource, extractor: str, locked: bool) -> Path:
    """``path`` once it matches its lock entry (or its published name's hash prefix) and loads as a checkpoint."""
    verify(path, extractor, source.name_prefix() if path.name == source.filename else "", locked)
    return check_checkpoint(path, extractor, locked=False)


def _locked_revision(source: WeightsSource) -> str | None:
    """The hub commit the lock pins the file to (None: the repository's main branch)."""
    entry = read_lock().get(source.filename)
    return entry.revision if entry is not None and entry.revision else None


def _from_hub(source: WeightsSource, revision: str | None, local_only: bool) -> Path | None:
    """The file in the hub's cache (``local_only``: None when it is not there), else downloaded into it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source.hub_repo, source.filename, revision=revision, local_files_only=local_only))
    except LocalEntryNotFoundError:
        if local_only:
            return None
        raise


def _from_url(source: WeightsSource, extractor: str) -> Path:
    """Downloaded by torch hub into its cache, refused there unless its sha256 starts with its name's prefix."""
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / source.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = source.name_prefix() or None
    try:
        torch.hub.download_url_to_file(source.url, str(target), hash_prefix=prefix, progress=sys.stderr.isatty())
    except RuntimeError as exc:
        got = re.search(r"got \"([0-9a-f]+)\"", str(exc))
        if prefix is None or got is None:
            raise
        raise WeightsError(
            f"{extractor}: the download of {source.url} was refused: its sha256 is {got.group(1)[:16]}, its name "
            f"says {prefix}; try again later, or get the file from {source.homepage} and pass --weights PATH"
        ) from None
    return target


def check_checkpoint(path: Path, extractor: str, locked: bool = True) -> Path:
    """``path``, once it matches the lock's entry for its name (if any, and ``locked``) and is known to load as a
    plain checkpoint (``torch.load(weights_only=True)``): else ``WeightsError``.

    Checked once per file and version of it, before any work; the tensors are memory-mapped, not read.
    """
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise WeightsError(f"{extractor}: weights file {str(path)!r} {what}; give the checkpoint file")
    if locked:
        verify(path, extractor)
    stat = path.stat()
    problem = _checkpoint_problem(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if problem:
        raise WeightsError(
            f"{extractor}: weights file {str(path)!r} is not a plain state-dict checkpoint ({problem}); give the "
            f"checkpoint as published (tensors saved with torch.save), or run a random-initialisation control "
            f"with --weights {RANDOM}"
        )
    return path


@lru_cache(maxsize=16)
def _checkpoint_problem(path: str, size: int, mtime_ns: int) -> str:
    """Why torch refuses to load the file as tensors only ("" when it loads); its advice is never passed on."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        return f"it pickles Python objects of class {found.group(1)}" if found else "it pickles Python objects"
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file that is no checkpoint
        return f"torch cannot read it: {type(exc).__name__}"
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a mapping of names to tensors"
    return ""


def used_weights(extractor: object) -> WeightsFile | None:
    """The weights file an extractor computes with (resolved as its extraction resolves it), as runs record it:
    None for the random-initialisation control and for extractors without weights (no ``weights_path``)."""
    weights_path = getattr(extractor, "weights_path", None)
    path = weights_path() if callable(weights_path) else None
    return WeightsFile.of(Path(path)) if path is not None else None


def lock_weights(extractor: str = "", weights: str = "", source: WeightsSource | None = None) -> LockEntry:
    """Record a weights file in the lock (``bench weights lock``): ``weights``, a file as given (its entry named
    after it), else ``extractor``'s published file resolved as a run resolves it (its cache, else a download),
    ignoring the entry it replaces. The entry holds the file's sha256 and, from a hub's cache, its commit."""
    if not weights and source is None:
        raise UsageError("give the file to lock with --weights PATH, or an extractor with published weights "
                         "with --extractor NAME")  # fmt: skip
    who = extractor or "weights"
    if weights:
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsError(f"{who}: weights file {str(path)!r} does not exist")
        path = check_checkpoint(path, who, locked=False)
    else:
        path = resolve_weights(source, "", who, locked=False)
    repo, revision = hub_origin(path)
    if repo:
        origin = f"huggingface:{repo}/{path.name}"
    elif source is not None and path.name == source.filename:
        origin = source.origin()
    else:
        origin = read_lock().get(path.name, LockEntry(path.name, "local file")).source
    entry = LockEntry(path.name, origin, revision or None, sha256_of(path), extractor=extractor)
    write_entry(entry)
    return entry
