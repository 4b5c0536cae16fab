"""Pretrained weights: resolved in one order, never replaced by random ones silently.

Order: an explicit path, an environment variable, the local cache, a download
from the official source. If none works the run stops with a message naming
the file, where to get it, and the flag for an explicit random-initialisation
control (``--weights random``); rows computed with random weights carry the
label ``[random-init]``.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
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
        return path
    env = os.environ.get(source.env_var)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise WeightsError(f"{extractor}: ${source.env_var} points to {str(path)!r}, which does not exist")
        return path
    for path in (*source.locations, source.cached()):
        if path.exists():
            return path
    cached = source.cached()
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.part")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(source.url, timeout=10) as response, tmp.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        tmp.replace(cached)
        return cached
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WeightsError(
            f"{extractor}: no weights file {source.filename} (download from {source.url} failed: "
            f"{type(exc).__name__}); get it from {source.homepage} and pass --weights PATH, set "
            f"${source.env_var}, or put it at {cached}; or run a random-initialisation control with "
            f"--weights {RANDOM}"
        ) from exc
