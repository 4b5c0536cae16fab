"""Import paths of version 0.1 that moved in 0.2: they keep working, with a DeprecationWarning naming the new path.

Plugins written against 0.1 imported e.g. ``bench.cohort`` (ColumnSpec) or ``bench.weights``; a meta-path
finder maps each old name onto the module that replaced it, so no stub files clutter the package.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED = {
    "bench.cohort": "bench.data.cohort",
    "bench.datasets": "bench.data.datasets",
    "bench.tabular_datasets": "bench.data.tabular",
    "bench.synthetic_datasets": "bench.data.synthetic.datasets",
    "bench.synthetic": "bench.data.synthetic",
    "bench.manifest": "bench.data.manifest",
    "bench.imaging": "bench.data.imaging",
    "bench.imaging.io": "bench.data.imaging.io",
    "bench.imaging.masks": "bench.data.imaging.masks",
    "bench.imaging.study": "bench.data.imaging.study",
    "bench.imaging.show": "bench.data.imaging.show",
    "bench.weights": "bench.plugins.weights",
    "bench.registry": "bench.plugins.registry",
    "bench.options": "bench.plugins.options",
    "bench.preprocessing": "bench.protocol.preprocessing",
    "bench.evaluate": "bench.protocol.evaluation",
    "bench.tuning": "bench.protocol.tuning",
    "bench.runner": "bench.protocol.runner",
    "bench.grid": "bench.protocol.grid",
    "bench.engine": "bench.stats.engine",
    "bench.metrics": "bench.stats.bootstrap",
    "bench.validity": "bench.stats.validity",
    "bench.tracking": "bench.report.tracking",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # the target module is already executed
        pass


class MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} moved to {new} in prognosis-bench 0.2; import it from there",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return importlib.machinery.ModuleSpec(fullname, _Alias(new), is_package=fullname == "bench.imaging")


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModules())  # before the path finder, so a moved module is never loaded twice
