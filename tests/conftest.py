"""Shared fixtures: a throwaway MLflow store and split folder (helpers live in ``bench.testing``).

At the end, the skip policy that CI enforces (``BENCH_STRICT_SKIPS=1``, ``tests/allowed_skips.txt``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


PYTEST_OWN = "PYTEST_CURRENT_TEST"  # set and removed by pytest itself around each phase of a test


@pytest.fixture(scope="session")
def _environment_at_start() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != PYTEST_OWN}


@pytest.fixture(autouse=True)
def _environment_as_at_start(_environment_at_start: dict[str, str]):
    """Each test starts and ends with this process's environment as the session started with it.

    Libraries run in-process change ``os.environ`` for good: Dask's nannies set OMP_NUM_THREADS, PYTHONHASHSEED...
    before starting workers, MLflow sets a telemetry session id on import, ``open_store`` its progress-bar switch.
    Left in place, they leak into every later test, and ``run_cli`` must then start each later ``bench`` as a plain
    subprocess (seconds of imports) instead of forking it (see ``bench.testing.fork_cli``). Changes made with
    ``monkeypatch`` are undone by it as ever.
    """
    _restore(_environment_at_start)
    yield
    _restore(_environment_at_start)


def _restore(environment: dict[str, str]) -> None:
    for name in [name for name in os.environ if name not in environment and name != PYTEST_OWN]:
        del os.environ[name]
    for name, value in environment.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``BENCH_DATA_DIR`` holding the tiny synthetic cohort, generated once per session; tests only read it."""
    from bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic-data")
    generate("tiny", 0, root / "synthetic_mm-tiny-seed0", progress=False)
    return root


@pytest.fixture(scope="session")
def synthetic_retest_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``BENCH_DATA_DIR`` holding the synthetic test-retest cohort (preset retest, seed 0); tests only read it."""
    from bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("retest-data")
    generate("retest", 0, root / "synthetic_mm-retest-seed0", progress=False)
    return root


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def splits_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the committed split files, so tests never touch the repository's."""
    target = tmp_path / "splits"
    shutil.copytree(REPO / "splits", target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setenv("BENCH_SPLITS_DIR", str(target))
    return target


# ---------------------------------------------------------------- skip policy
# With BENCH_STRICT_SKIPS=1 (.ci/run sets it) a test skipped for a reason that tests/allowed_skips.txt does not
# allow fails the session. The hooks below run in every process; the reports reach them on the controller too,
# from pytest-xdist's workers, so only the controller judges and prints.

STRICT_SKIPS = "BENCH_STRICT_SKIPS"
ALLOWED_SKIPS = Path(__file__).parent / "allowed_skips.txt"
_skipped: dict[str, str] = {}  # node id -> skip reason, as this process saw the reports


def _strict_controller(config: pytest.Config) -> bool:
    return os.environ.get(STRICT_SKIPS, "") not in ("", "0") and not hasattr(config, "workerinput")


def _allowed_skips() -> dict[str, str]:
    """Pattern -> the comment above it; a pattern without a comment is a usage error."""
    allowed, why = {}, []
    for number, line in enumerate(ALLOWED_SKIPS.read_text().splitlines(), 1):
        if line.startswith("#"):
            why.append(line.lstrip("# "))
        elif not line.strip():
            why = []
        else:
            if not why:
                raise pytest.UsageError(f"{ALLOWED_SKIPS}:{number}: {line!r} has no comment above it saying why")
            try:
                re.compile(line)
            except re.error as exc:
                raise pytest.UsageError(f"{ALLOWED_SKIPS}:{number}: {line!r} is not a regular expression: {exc}")
            allowed[line] = " ".join(why)
    return allowed


def _record_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is reported as skipped; it is not a skip
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3 else str(longrepr)
    _skipped[report.nodeid] = reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)  # a module-level skip or importorskip


def pytest_configure(config: pytest.Config) -> None:
    if _strict_controller(config):
        _allowed_skips()  # a bad allow-list stops the run before any test


def _judged_skips() -> dict[str, tuple[int, str | None]]:
    """Reason -> (how many tests, the allow-list pattern that allows it or None)."""
    allowed = _allowed_skips()
    judged: dict[str, tuple[int, str | None]] = {}
    for reason in _skipped.values():
        count, pattern = judged.get(reason, (0, None))
        if not count:
            pattern = next((p for p in allowed if re.search(p, reason)), None)
        judged[reason] = (count + 1, pattern)
    return judged


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _strict_controller(session.config) and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        if any(pattern is None for _, pattern in _judged_skips().values()):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _strict_controller(config):
        return
    judged = _judged_skips()
    refused = sum(count for count, pattern in judged.values() if pattern is None)
    terminalreporter.section(f"skip policy ({STRICT_SKIPS}=1, {ALLOWED_SKIPS.name})")
    for reason, (count, pattern) in sorted(judged.items(), key=lambda item: (item[1][1] is not None, item[0])):
        verdict = "allowed" if pattern else "NOT ALLOWED"
        terminalreporter.line(f"{count:4d} x {verdict:11s} {reason}", red=pattern is None)
    for node, reason in sorted(_skipped.items()):
        if judged[reason][1] is None:
            terminalreporter.line(f"       skipped, not allowed: {node}", red=True)
    if refused:
        terminalreporter.line(
            f"{refused} test(s) skipped for a reason {ALLOWED_SKIPS} does not allow: make them run (the data they "
            "need belongs in tests/data, the package in requirements/lock.txt) or, if the skip is legitimate, add "
            "its reason there with a comment saying why",
            red=True,
        )
    else:
        terminalreporter.line(f"every skip is allowed by {ALLOWED_SKIPS}" if judged else "no test skipped", green=True)
