"""The layers of docs/architecture.md are a checked contract (import-linter, `[tool.importlinter]` in pyproject.toml):
it holds on the tree, and it bites on a copy of the tree that gains an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "feature_extractors", "survival_models")
# lint-imports on the tree at ``sys.argv[1]``: the editable install's finder of this checkout is dropped, so the
# packages are found in the copy (its folder is first on sys.path), and nothing is cached.
LINT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, '__module__', '')).startswith('__editable__')]; "
    "from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename=sys.argv[1] + '/pyproject.toml', no_cache=True, no_logo=True))"
)


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", LINT, str(tree)], capture_output=True, text=True, cwd=tree, env=env,
                          timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_contracts_hold_on_the_tree(tree_copy: Path) -> None:
    result = _lint(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [line for line in result.stdout.splitlines() if " KEPT" in line]
    assert len(kept) >= 2, result.stdout  # every contract was checked, none skipped
    assert "bench's layers KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "culprit"),
    [
        ("bench/data/upward.py", "import bench.report.leaderboard\n", "bench.data.upward -> bench.report.leaderboard"),
        # a TYPE_CHECKING import counts too: a lower layer never imports a higher one, not even for a type
        ("bench/stats/typed.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
         "    from bench.protocol.splits import Split\n", "bench.stats.typed -> bench.protocol.splits"),
        # siblings of one layer must not know each other
        ("survival_models/sideways.py", "import feature_extractors.base\n",
         "survival_models.sideways -> feature_extractors.base"),
    ],
)  # fmt: skip
def test_an_upward_import_breaks_the_contract(tree_copy: Path, module: str, source: str, culprit: str) -> None:
    added = tree_copy / module
    added.write_text(source)
    try:
        result = _lint(tree_copy)
    finally:
        added.unlink()
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and culprit in result.stdout, result.stdout
