"""``bench ui``: the MLflow UI on a bench store, opened on a dataset's runs and on a leaderboard's rows side by side.

The URLs are built as the MLflow UI (3.x) builds them itself: the runs table of an experiment is
``#/experiments/<id>/runs``; the comparison view is ``#/compare-runs?runs=[...]&experiments=[...]``, each list
JSON (``JSON.stringify``: no spaces), experiment ids unique and sorted (``getCompareRunPageRoute`` in the UI's
bundle, ``mlflow/server/js/build``). The quotes are percent-encoded, as a browser shows them in its address bar;
the compare page decodes them before it parses the lists.

The server is a child process in a session of its own: ``bench ui`` ends the whole group (terminate, then kill)
on Ctrl-C, SIGTERM or an error, and on Linux the server is also told to end if ``bench ui`` dies (SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from bench.errors import BenchError, UsageError
from bench.report.tracking import DEFAULT_TRACKING_URI, check_tracking_uri, sqlite_path

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_PORT = 5000  # MLflow's own
STARTUP_TIMEOUT_S = 60.0  # a start imports MLflow twice (its CLI, then the app): about 10 s, more on a busy machine
STOP_GRACE_S = 10.0  # after SIGTERM, before SIGKILL
HINT = "compare these rows in the MLflow UI (bench ui): "
SERVER_HINT = "compare these rows in the MLflow UI: "  # a store that is a tracking server is its own UI


def experiment_url(base: str, experiment_id: str) -> str:
    """The training runs table of an experiment in the MLflow UI at ``base`` (``http://127.0.0.1:5000``)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


def compare_url(base: str, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> str:
    """The MLflow UI's comparison view of ``run_ids`` (in that order, one column each)."""
    experiments = sorted({str(e) for e in experiment_ids})  # as the UI's own "Compare" button lists them
    return f"{base.rstrip('/')}/#/compare-runs?runs={_json_list(run_ids)}&experiments={_json_list(experiments)}"


def _json_list(ids: Sequence[str]) -> str:
    return quote(json.dumps([str(i) for i in ids], separators=(",", ":")), safe="[],")


def leaderboard_run_ids(mlflow_client, results) -> tuple[str | None, list[str]]:
    """The experiment of ``results``' dataset and the run id of each of its rows that the store holds, in row order.

    A row's run is the latest finished combination run named as the row (names are deterministic per
    configuration, data, split and seed); a row without one is left out. (None, []) without the experiment.
    """
    from bench.report.store import finished_runs
    from bench.report.tracking import experiment_id

    experiment = experiment_id(mlflow_client, results.protocol.dataset, create=False)
    if experiment is None:
        return None, []
    latest: dict[str, tuple[int, str]] = {}
    for run in finished_runs(mlflow_client, experiment):
        if run.run_name not in latest or run.started > latest[run.run_name][0]:
            latest[run.run_name] = (run.started, run.run_id)
    return experiment, [latest[row.run_name][1] for row in results.rows if row.run_name in latest]


def print_comparison_hint(
    results, tracking_uri: str | None, port: int = DEFAULT_PORT, file: IO[str] | None = None
) -> None:
    """One line with the comparison URL of ``results``' rows, when the store holds a run of every row; else nothing.

    Never an error: the hint follows work that is done (a page written), and a store that is missing, foreign
    or unreadable only means there is nothing to point at. A missing SQLite store is not created.
    """
    uri = tracking_uri or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    if not results.rows or (db is not None and not db.is_file()):
        return
    server = uri.lower().startswith(("http://", "https://"))
    try:
        from bench.report.tracking import open_store

        experiment, run_ids = leaderboard_run_ids(open_store(uri), results)
    except Exception:  # noqa: BLE001 - see the docstring: nothing to point at
        return
    if experiment is None or len(run_ids) != len(results.rows):
        return
    url = compare_url(uri if server else local_url("127.0.0.1", port), run_ids, [experiment])  # what bench ui serves
    print((SERVER_HINT if server else HINT) + url, file=file or sys.stdout)


def check_host(host: str, expose: bool) -> bool:
    """Whether serving on ``host`` reaches beyond this machine; refused (``UsageError``) unless ``expose``."""
    if host.strip().lower() in LOOPBACK_HOSTS:
        return False
    if not expose:
        raise UsageError(
            f"--host {host!r} would serve the MLflow UI beyond this machine, and the MLflow server has no "
            "authentication (anyone who reaches it can read, change and delete every run); keep the default "
            "--host 127.0.0.1, or add --expose to serve it beyond this machine all the same"
        )
    return True


def local_url(host: str, port: int) -> str:
    """How this machine reaches a server bound to ``host``:``port`` (a wildcard address is reached on loopback)."""
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{reach}]:{port}" if ":" in reach else f"http://{reach}:{port}"


def check_store(tracking_uri: str | None) -> str:
    """The tracking URI ``bench ui`` serves, checked to name an existing store (a ``UsageError`` otherwise)."""
    uri = tracking_uri or DEFAULT_TRACKING_URI
    if uri.lower().startswith(("http://", "https://")):
        raise UsageError(f"tracking URI {uri!r} is an MLflow server already: open {uri} in a browser")
    check_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UsageError(
            f"no MLflow store {str(db)!r} (tracking URI {uri!r}); make one with `bench run --tracking-uri {uri}` "
            "first, or give the store's --tracking-uri"
        )
    return uri


def free_port(host: str, port: int) -> int:
    """``port`` once checked to be free on ``host`` (a ``UsageError`` otherwise); for 0, a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a closed port is free
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise UsageError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
        except OSError as exc:
            if port == 0:
                raise UsageError(f"cannot bind to --host {host!r} ({exc.strerror})") from None
            raise UsageError(
                f"port {port} on {host} is in use ({exc.strerror}), perhaps by another MLflow UI; give another "
                "--port, or --port 0 for a free one"
            ) from None
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running ``mlflow server`` child process and where it answers."""

    process: subprocess.Popen
    url: str
    log: IO[bytes]  # its stdout and stderr

    def last_line(self) -> str:
        self.log.flush()
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Terminate the server's process group, kill what is left after ``grace`` seconds, and wait until it is gone."""
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(self.process, signal.SIGKILL)  # a worker or helper of the server that outlived it
        self.process.wait()
        deadline = time.monotonic() + grace  # the killed ones, reparented, are gone once init has reaped them
        while _signal_group(self.process, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.log.close()


def _signal_group(process: subprocess.Popen, signum: int) -> bool:
    """Send ``signum`` to the process group the server leads (its own session: it and its helpers only).

    False when the group has no process left.
    """
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a zombie of the group, on some systems
    return True


def start_server(uri: str, host: str, port: int, timeout: float = STARTUP_TIMEOUT_S) -> Server:
    """Start ``mlflow server`` on ``uri`` and wait until it answers ``/health``; a ``BenchError`` if it does not.

    Runs logged by bench keep their artifacts beside a SQLite store (``mlartifacts/<dataset>``, a ``file://``
    location the server reads directly); the artifact root served for anything created through the UI is the
    same folder.
    """
    db = sqlite_path(uri)
    artifacts = (db.resolve().parent if db is not None else Path.cwd()) / "mlartifacts"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
               "--port", str(port), "--workers", "1", "--artifacts-destination", str(artifacts)]  # fmt: skip
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Server.stop
    child_setup = _end_with_parent()
    # MLflow's job runner (seven more processes) serves GenAI judges and scorers, nothing a bench run uses; without
    # it the server is two processes and starts in about two thirds of the time.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    options = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": log, "start_new_session": True, "env": env}
    process = subprocess.Popen(command, **options, preexec_fn=child_setup)  # noqa: PLW1509 - see _end_with_parent
    server = Server(process, local_url(host, port), log)
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _end_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec to get SIGTERM when ``bench ui`` dies, however it dies (Linux only).

    Looked up here, in the parent: the child calls into libc only, no import and no lock that a thread of
    the parent could have held at fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None  # no prctl in this libc: Ctrl-C and SIGTERM still end the server
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise BenchError(f"the MLflow server exited (code {code}) before it answered: {server.last_line()}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        time.sleep(0.25)
    raise BenchError(
        f"the MLflow server did not answer {server.url}/health within {timeout:.0f} s; its last line: "
        f"{server.last_line()}"
    )


def serve(
    tracking_uri: str | None,
    host: str,
    port: int,
    expose: bool,
    dataset: str | None,
    results_path: Path | None,
    default_dataset: str,
) -> int:
    """``bench ui``: check everything, start the server, print where to look, and serve until interrupted."""
    from bench.report.leaderboard import leaderboard_path
    from bench.report.results import load_results
    from bench.report.tracking import experiment_id, open_store

    exposed = check_host(host, expose)
    uri = check_store(tracking_uri)
    results = load_results(results_path) if results_path is not None else None
    if results is not None and dataset is not None and results.protocol.dataset != dataset:
        raise UsageError(f"{results_path} holds results for dataset {results.protocol.dataset!r}, not {dataset!r}")
    dataset = dataset or (results.protocol.dataset if results is not None else default_dataset)
    default_results = leaderboard_path(dataset).with_suffix(".json")
    if results is None and default_results.is_file():
        results, results_path = load_results(default_results), default_results
    port = free_port(host, port)
    mlflow_client = open_store(uri)
    experiment = experiment_id(mlflow_client, dataset, create=False)
    run_ids = leaderboard_run_ids(mlflow_client, results)[1] if results is not None and experiment else []

    if exposed:
        print(f"bench ui: warning: serving the MLflow UI on {host}, beyond this machine, without authentication",
              file=sys.stderr)  # fmt: skip
    server = start_server(uri, host, port)
    try:
        print(f"MLflow UI of {uri} at {server.url}")
        if experiment is None:
            print(f"no experiment {dataset!r} in {uri}; every experiment: {server.url}/#/experiments")
        else:
            print(f"runs of {dataset}: {experiment_url(server.url, experiment)}")
        if run_ids:
            missing = len(results.rows) - len(run_ids)
            note = f"; {missing} of its rows have no finished run here" if missing else ""
            print(f"the {len(run_ids)} rows of {results_path}{note}: {compare_url(server.url, run_ids, [experiment])}")
        elif results is not None:
            print(f"no row of {results_path} has a finished run in {uri}; nothing to compare")
        print("Ctrl-C stops it")
        sys.stdout.flush()
        code = server.process.wait()  # until Ctrl-C or SIGTERM, which raise here (see bench.signals)
        raise BenchError(f"the MLflow server stopped (code {code}): {server.last_line()}")
    finally:
        server.stop()
