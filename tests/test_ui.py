"""`bench ui`: loopback only unless told, the store checked first, the URLs the MLflow UI builds, no orphan server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from bench.cli import main
from bench.errors import UsageError
from bench.report import ui
from bench.report.ui import HINT, check_host, compare_url, experiment_url

DATASET = "synthetic_mm_tiny"
RUNS_URL = re.compile(r"(http://\S+/#/experiments/(\w+)/runs)\s*$")
COMPARE_URL = re.compile(r"(http://\S+/#/compare-runs\?\S+)\s*$")


@dataclass
class RunningUi:
    """A `bench ui` process, the URLs it printed and the PID of the MLflow server it started."""

    process: subprocess.Popen
    runs_url: str
    compare_url: str | None  # printed when bench ui knows a leaderboard of the dataset
    server_pid: int
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def running_ui(*args: str, cwd: Path, timeout: float = 90.0) -> Iterator[RunningUi]:
    """`bench ui ARGS` once it has printed its URLs; ended (and its server with it) on exit."""
    process = subprocess.Popen([sys.executable, "-m", "bench", "ui", *args], cwd=cwd, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    server_pid = None
    try:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("Ctrl-C stops it") for line in lines):  # its last line
            assert process.poll() is None, f"bench ui exited with {process.returncode}: {''.join(lines)}"
            assert time.monotonic() < deadline, f"no URLs from bench ui in {timeout:.0f} s: {''.join(lines)}"
            time.sleep(0.2)
        server_pid = _children(process.pid)[0]
        runs = next(m.group(1) for m in map(RUNS_URL.search, lines) if m)
        compare = next((m.group(1) for m in map(COMPARE_URL.search, lines) if m), None)
        yield RunningUi(process, runs, compare, server_pid, lines)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        for pid in [server_pid] if server_pid else []:  # bench ui ends it; should it not have, by its PID
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a small store made by `bench run` (two rows) and the rows' results file."""
    folder = tmp_path_factory.mktemp("ui")
    code = main(["run", "--dataset", DATASET, "--extractor", "clinical", "oracle", "--model", "coxph",
                 "--bootstrap", "20", "--baseline", "clinical", "--baseline-model", "coxph", "--quiet",
                 "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--results", str(folder / "results.json"),
                 "--output-json", str(folder / "run.json")])  # fmt: skip
    assert code == 0
    return folder


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("bench ui started a server")

    monkeypatch.setattr(ui, "start_server", refuse)


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_host_beyond_this_machine_is_refused_before_anything_starts(
    nothing_starts: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["ui", "--host", "0.0.0.0", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = _one_line_error(capsys)
    assert "'0.0.0.0'" in err and "no authentication" in err and "--expose" in err, err
    assert not (tmp_path / "mlflow.db").exists()


def test_expose_allows_a_host_beyond_this_machine_and_loopback_needs_nothing() -> None:
    assert check_host("0.0.0.0", expose=True) is True
    assert check_host("192.168.1.20", expose=True) is True
    for host in ("127.0.0.1", "::1", "localhost", "LOCALHOST"):
        assert check_host(host, expose=False) is False
    with pytest.raises(UsageError, match="--expose"):
        check_host("::", expose=False)


def test_a_missing_store_is_one_line_saying_to_run_bench_first(
    nothing_starts: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["ui", "--tracking-uri", uri]) == 2
    err = _one_line_error(capsys)
    assert "none.db" in err and "bench run" in err, err
    assert not (tmp_path / "none.db").exists(), "bench ui never creates a store"


def test_a_port_in_use_is_one_line(nothing_starts: None, store: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{store / 'mlflow.db'}"]) == 2
    err = _one_line_error(capsys)
    assert f"port {port}" in err and "in use" in err and "--port 0" in err, err


def test_urls_are_built_as_the_mlflow_ui_builds_them() -> None:
    url = compare_url("http://127.0.0.1:5000/", ["b2", "a1"], ["7", "12", "7"])
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:5000", "/")
    route, query = parts.fragment.split("?", 1)
    assert route == "/compare-runs"
    # What the UI's getCompareRunPageRoute writes (JSON.stringify: no spaces), quotes percent-encoded as a browser
    # shows them; experiments unique and sorted as strings, as the UI's own "Compare" button lists them.
    assert query == "runs=[%22b2%22,%22a1%22]&experiments=[%2212%22,%227%22]"
    lists = dict(item.split("=", 1) for item in unquote(query).split("&"))
    assert json.loads(lists["runs"]) == ["b2", "a1"] and json.loads(lists["experiments"]) == ["12", "7"]
    assert experiment_url("http://127.0.0.1:5000", "3") == "http://127.0.0.1:5000/#/experiments/3/runs"


def test_the_installed_mlflow_ui_still_routes_these_urls() -> None:
    """The UI's own bundle: the routes and how its "Compare" button writes the comparison URL."""
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(path.read_text(errors="replace") for path in bundle.glob("main.*.js"))
    assert '"/experiments/:experimentId/runs"' in text and '"/compare-runs"' in text
    builder = r"getCompareRunPageRoute\((\w+),(\w+)\)\{const \w+=`\?runs=\$\{JSON\.stringify\(\1\)\}&experiments=\$\{JSON\.stringify\(\2\)\}`"
    assert re.search(builder, text), "MLflow's compare-runs URL changed: update bench.report.ui.compare_url"


def test_the_leaderboard_hint_points_at_its_rows_and_is_silent_without_a_store(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from bench.report.results import load_results

    results = load_results(store / "results.json")
    ran = json.loads((store / "run.json").read_text())
    ui.print_comparison_hint(results, f"sqlite:///{store / 'mlflow.db'}", port=5123)
    out = capsys.readouterr().out
    assert out.startswith(HINT + "http://127.0.0.1:5123/#/compare-runs?runs=") and out.count("\n") == 1, out
    assert len(ran["results"]) == 2, ran["results"]  # clinical and oracle
    for run in ran["results"]:
        assert f"%22{run['run_id']}%22" in out
    ui.print_comparison_hint(results, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert capsys.readouterr() == ("", "")
    assert not (tmp_path / "mlflow.db").exists(), "no store is created for a hint"


def test_bench_leaderboard_prints_the_comparison_url(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(store)  # the default store, sqlite:///mlflow.db, is the one the rows were logged to
    assert main(["leaderboard", "--from", "results.json", "--out", str(tmp_path / "page.md")]) == 0
    assert HINT in capsys.readouterr().out
    uri = f"sqlite:///{store / 'mlflow.db'}"
    assert main(["leaderboard", "--dataset", DATASET, "--tracking-uri", uri, "--out", str(tmp_path / "s.md")]) == 0
    assert HINT in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)  # no store here: the page, and no hint
    assert main(["leaderboard", "--from", str(store / "results.json"), "--out", str(tmp_path / "page.md")]) == 0
    assert HINT not in capsys.readouterr().out


def test_bench_ui_serves_the_store_prints_both_urls_and_takes_its_server_down_on_sigterm(store: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store / 'mlflow.db'}"
    experiment = MlflowClient(uri).get_experiment_by_name(DATASET).experiment_id
    ran = json.loads((store / "run.json").read_text())
    with running_ui("--port", "0", "--tracking-uri", uri, "--results", "results.json", cwd=store) as served:
        assert RUNS_URL.search(served.runs_url).group(2) == experiment
        base = served.runs_url.split("/#/")[0]
        with urllib.request.urlopen(base + "/health", timeout=10) as response:
            assert response.status == 200
        assert served.compare_url, served.lines
        query = unquote(urlsplit(served.compare_url).fragment.split("?", 1)[1])
        lists = dict(item.split("=", 1) for item in query.split("&"))
        assert sorted(json.loads(lists["runs"])) == sorted(r["run_id"] for r in ran["results"])
        assert json.loads(lists["experiments"]) == [experiment]
        assert _group_alive(served.server_pid)

        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 143
        port = int(urlsplit(base).port)
        assert not _group_alive(served.server_pid), "the server (or a worker of it) outlived bench ui"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
