"""The shape of the tree: one core package, data folders that hold data, nothing written into an install."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench.testing import ForkServer, fork_cli, run_cli

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "feature_extractors", "survival_models")


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-editable copy of the package, as `pip install .` puts it in site-packages."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(REPO)],
        check=True, capture_output=True, text=True, cwd=tmp_path_factory.mktemp("build"),
    )  # fmt: skip
    return target


def test_a_non_editable_install_is_never_written_to(installed: Path, tmp_path: Path) -> None:
    before = _listing(installed)
    assert "bench/_builtin_splits/gbsg2/cv5.json" in before, "the built-in splits ship with the package"
    for package in ("bench", "feature_extractors", "survival_models"):  # every module of the tree is installed
        for module in sorted((REPO / package).rglob("*.py")):
            assert str(module.relative_to(REPO)) in before, f"{module.relative_to(REPO)}: add its package to pyproject"
    assert not any(name.startswith(("splits/", "leaderboards/")) for name in before), "no data folders as packages"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    # The invocations are forked from a server that imported the installed copy once (the same PYTHONPATH).
    server = ForkServer(env=env)
    try:

        def bench(*args: str):
            return fork_cli(args, env=env, cwd=tmp_path, timeout=600, server=server)

        where = bench("list", "datasets")  # warm-up; the real checks follow
        assert where.returncode == 0, where.stderr
        located = subprocess.run([sys.executable, "-c", "import bench; print(bench.__file__)"], capture_output=True,
                                 text=True, cwd=tmp_path, env=env, check=True)  # fmt: skip
        assert located.stdout.strip().startswith(str(installed)), "the test must exercise the installed copy"

        ran = bench("run", "--dataset", "gbsg2", "--model", "coxph", "--bootstrap", "20", "--quiet",
                    "--results", "results.json")  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        made = bench("splits", "make", "--dataset", "veterans", "--name", "mine", "--folds", "3")
        assert made.returncode == 0, made.stderr
        page = bench("leaderboard", "--from", "results.json")
        assert page.returncode == 0, page.stderr
        verify = bench("splits", "verify", "--dataset", "veterans", "--name", "mine")
    finally:
        server.close()

    assert _listing(installed) == before, "nothing is written inside the installed package"
    for written in ("mlflow.db", "results.json", "results.md", "splits/veterans/mine.json"):
        assert (tmp_path / written).is_file(), f"{written} lands in the working directory"
    assert verify.returncode == 0 and str(tmp_path / "splits" / "veterans" / "mine.json") in verify.stdout


def test_data_folders_hold_no_code() -> None:
    for folder in ("splits", "leaderboards"):
        code = sorted(str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*.py"))
        assert code == [], f"{folder}/ is data only"
    assert (REPO / "splits" / "gbsg2" / "cv5.json").is_file(), "the built-in splits stay visible in the repository"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_500_lines(package: str) -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / package).rglob("*.py")}
    assert sizes and max(sizes.values()) <= 500, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_errors_are_all_declared_in_one_module() -> None:
    read = 0
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "bench" / "errors.py":
                continue
            read += 1
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                    assert not any(b.endswith(("Error", "Exception")) for b in bases), f"{path}: {node.name}"
    assert read > 20, f"only {read} modules read"


def test_the_cli_only_parses_and_calls() -> None:
    """cli.py parses and hands over to bench/commands; neither imports a library module at the top (a fast --help)."""
    for module, allowed in (("cli.py", ["bench.commands", "bench.errors"]), ("commands/__init__.py", ["bench.errors"]),
                            ("commands/robustness.py", ["bench.errors"])):  # fmt: skip
        tree = ast.parse((REPO / "bench" / module).read_text())
        top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("bench")]
        assert [n.module for n in top] == allowed, module


def test_no_import_shims() -> None:
    """0.3 has no finder of its own on sys.meta_path, and a 0.1 path (see CHANGES.md) is simply not there."""
    code = (
        "import bench, sys\n"
        "print('OURS', [type(f).__module__ for f in sys.meta_path if type(f).__module__.split('.')[0] == 'bench'])\n"
        "for old in ('bench.cohort', 'bench.weights', 'bench.imaging.study'):\n"
        "    try:\n        __import__(old)\n    except ModuleNotFoundError as e:\n        print('MISSING', e.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "OURS []" in out, out
    assert out.count("MISSING bench.") == 3, out
    assert "MISSING bench.cohort" in out and "MISSING bench.weights" in out and "MISSING bench.imaging" in out, out


def test_committed_plugins_keep_their_contract_imports() -> None:
    """An outside plugin written for 0.1 imports these; they must not move."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from feature_extractors.base import Extractor, FeatureBlock, PatientRecord  # noqa: F401
        from survival_models.base import SksurvModel, SurvivalModel  # noqa: F401


def _committed_pages() -> list[Path]:
    return sorted((REPO / "leaderboards").glob("*.md"))


def test_there_are_committed_leaderboards_to_check() -> None:
    """An empty list would turn the test below into no test at all, not a failure."""
    assert {p.stem for p in _committed_pages()} >= {"gbsg2", "synthetic_mm", "synthetic_mm_paper"}


@pytest.mark.parametrize("page", _committed_pages(), ids=lambda p: p.stem)
def test_every_committed_leaderboard_is_regenerated_byte_for_byte(page: Path) -> None:
    results = page.with_suffix(".json")
    assert results.is_file(), f"{page.name} has no results file beside it"
    check = run_cli("leaderboard", "--from", str(results), "--check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_readme_documents_every_option_of_every_builtin_plugin() -> None:
    from bench.plugins.docs import readme_blocks, splice

    text = (REPO / "README.md").read_text()
    assert splice(text, readme_blocks()) == text, "the README's option tables are stale; regenerate with: make readme"
