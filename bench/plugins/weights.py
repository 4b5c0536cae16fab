"""Pretrained weights: resolved in one order, never replaced by random ones silently.

Order: an explicit path, an environment variable, the local cache, a download
from the official source. If none works the run stops with a message naming
the file, where to get it, and the flag for an explicit random-initialisation
control (``--weights random``); rows computed with random weights carry the
label ``[random-init]``.
"""

from __future__ import annotations

import os
import re
import urllib.request
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.cache import cache_root
from bench.errors import WeightsError

RANDOM = "random"
RANDOM_LABEL = "random-init"


@dataclass(frozen=True)
class WeightsSource:
    """Where an extractor's checkpoint comes from."""

    filename: str  # e.g. MedSAM2_latest.pt
    env_var: str  # e.g. MEDSAM2_WEIGHTS
    url: str  # the official download
    homepage: str  # where a person gets it by hand
    locations: tuple[Path, ...] = ()  # other local caches to look in first (e.g. torch hub's)

    def cached(self) -> Path:
        return cache_root() / "weights" / self.filename


def resolve_weights(source: WeightsSource, requested: str, extractor: str) -> Path | None:
    """The checkpoint to load, or None when random initialisation was asked for explicitly."""
    if requested == RANDOM:
        return None
    if requested:
        path = Path(requested).expanduser()
        if not path.exists():
            raise WeightsError(f"{extractor}: weights file {str(path)!r} does not exist")
        return check_checkpoint(path, extractor)
    env = os.environ.get(source.env_var)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise WeightsError(f"{extractor}: ${source.env_var} points to {str(path)!r}, which does not exist")
        return check_checkpoint(path, extractor)
    for path in (*source.locations, source.cached()):
        if path.exists():
            return check_checkpoint(path, extractor)
    cached = source.cached()
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.part")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(source.url, timeout=10) as response, tmp.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        tmp.replace(cached)
        return check_checkpoint(cached, extractor)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WeightsError(
            f"{extractor}: no weights file {source.filename} (download from {source.url} failed: "
            f"{type(exc).__name__}); get it from {source.homepage} and pass --weights PATH, set "
            f"${source.env_var}, or put it at {cached}; or run a random-initialisation control with "
            f"--weights {RANDOM}"
        ) from exc


def check_checkpoint(path: Path, extractor: str) -> Path:
    """``path``, once it is known to load as a plain checkpoint (``torch.load(weights_only=True)``): else ``WeightsError``.

    Checked once per file and version of it, before any work; the tensors are memory-mapped, not read.
    """
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise WeightsError(f"{extractor}: weights file {str(path)!r} {what}; give the checkpoint file")
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
