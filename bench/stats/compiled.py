"""Numba's ``njit`` for the statistics modules, with its cache kept out of the installed package.

Numba caches compiled code beside the source unless told otherwise ($NUMBA_CACHE_DIR); an installed package is
never written to, so every compiled function of ``bench.stats`` caches in the user's cache folder (not the feature
cache: that one holds data, and a run on bad input must leave it empty). Import ``njit`` from here, never from
numba directly, so that the folder is set before the first compiled function is defined.
"""

from __future__ import annotations

import numba
from numba import njit

from bench.cache import tools_dir

if not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = str(tools_dir() / "numba")

__all__ = ["njit"]
