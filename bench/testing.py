"""Helpers for testing the harness and plugins for it: a small cohort with a known hazard, the CLI in a subprocess
(``run_cli``) or forked from a server that has imported it once (``fork_cli``).

Plugin authors can use them too: ``from bench.testing import make_cohort``.
"""

from __future__ import annotations

import atexit
import errno
import gc
import importlib
import itertools
import json
import locale
import os
import queue
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort, ColumnSpec, EvaluationPolicy


def make_cohort(n_patients: int = 60, samples_per_patient: int = 1, seed: int = 0, name: str = "toy") -> Cohort:
    """A small cohort with a known linear hazard; several samples per patient when asked."""
    rng = np.random.default_rng(seed)
    n = n_patients * samples_per_patient
    patients = np.repeat([f"P{i:03d}" for i in range(n_patients)], samples_per_patient)
    age = rng.normal(60, 10, n_patients)
    stage = rng.choice(["I", "II", "III"], n_patients)
    sex = rng.choice(["F", "M"], n_patients)
    lp = 0.04 * (age - 60) + 0.6 * (stage == "III")
    truth = pd.DataFrame(
        {"lp": lp, "lp_clinical": 0.04 * (age - 60), "lp_imaging": 0.6 * (stage == "III")},
        index=[f"P{i:03d}" for i in range(n_patients)],
    )
    event_time = rng.exponential(1000 * np.exp(-lp))
    censor_time = rng.uniform(200, 2500, n_patients)
    # Several samples of one patient share the patient's covariates and outcome.
    age, stage, sex, event_time, censor_time = (
        np.repeat(v, samples_per_patient) for v in (age, stage, sex, event_time, censor_time)
    )
    clinical = pd.DataFrame(
        {"age": age, "stage": stage, "sex": sex},
        index=[f"S{i:04d}" for i in range(n)],
    )
    return Cohort(
        name=name,
        clinical=clinical,
        time=np.minimum(event_time, censor_time).round(),
        event=event_time <= censor_time,
        columns={
            "age": ColumnSpec("numeric"),
            "stage": ColumnSpec("ordinal", ("I", "II", "III")),
            "sex": ColumnSpec("categorical", ("F", "M")),
        },
        policy=EvaluationPolicy(horizons=(100.0, 300.0), tau=500.0),
        patient_ids=patients,
        truth=truth,  # the known linear predictor, as a synthetic cohort carries it
    )


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``bench ...`` in a process of its own, as a user runs it: forked from a server that imported the heavy
    libraries once (``fork_cli``), or a plain subprocess where forking could change what it checks."""
    full_env = {**os.environ, **(env or {})}
    return fork_cli(list(args), cwd=cwd, env=full_env, timeout=600)


def count_extractions(monkeypatch, extractor_cls: type) -> list[str]:
    """Record the sample id of every patient ``extractor_cls`` really extracts (cache hits are not counted)."""
    calls: list[str] = []
    real = extractor_cls.extract_patient

    def counting(self, record):
        calls.append(record.sample_id)
        return real(self, record)

    monkeypatch.setattr(extractor_cls, "extract_patient", counting)
    return calls


def subset_manifest(manifest: Path, n: int, folder: Path, name: str) -> Path:
    """The first ``n`` studies of a manifest cohort, as a cohort of their own in ``folder`` (named ``name``)."""
    import yaml

    header = yaml.safe_load(manifest.read_text())
    table = pd.read_csv(manifest.parent / header["table"], dtype=str, keep_default_na=False).head(n)
    for column in [c for c in table.columns if c in ("pet", "ct") or c.startswith("mask_")]:
        table[column] = [str(manifest.parent / v) if v else v for v in table[column]]
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "patients.csv", index=False)
    header.update(name=name, table="patients.csv")
    header.pop("truth", None)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(header, sort_keys=False))
    return folder / "manifest.yaml"


# ------------------------------------------------------------------------------------------ the CLI, forked

#: What a fork server imports once, for every forked invocation: the CLI, the modules its commands import when
#: they run (imaging I/O, MLflow's SQLite store, the survival models, radiomics). Never torch: its thread pools do
#: not survive a fork (an invocation that needs torch imports it itself, in its own process). Never matplotlib:
#: it reads ``matplotlibrc`` in the working directory when imported.
FORK_PRELOAD = (
    "bench.cli",
    "bench.signals",
    "bench.data.check",
    "bench.data.datasets",
    "bench.data.imaging.io",
    "bench.data.imaging.masks",
    "bench.data.imaging.study",
    "bench.protocol.runner",
    "bench.protocol.grid",
    "bench.protocol.splits",
    "bench.report.files",
    "bench.report.leaderboard",
    "bench.report.page",
    "bench.report.results",
    "bench.report.store",
    "bench.report.tracking",
    "bench.report.mlflow_sink",
    "bench.plugins.registry",
    "bench.plugins.specs",
    "bench.plugins.weights",
    "feature_extractors.clinical",
    "feature_extractors.radiomics",
    "survival_models.coxph",
    "survival_models.coxnet",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "sklearn.model_selection",
    "sksurv.compare",
    "sksurv.linear_model",
    "sksurv.nonparametric",
    "radiomics.featureextractor",
)

#: Environment variables an invocation may set otherwise than the fork server's environment: each is read when
#: it is used, never at import (``BENCH_*``: ``cache_root()``, ``splits_dir()``, ``data_dir()``, the Dask
#: scheduler; ``PYTEST_CURRENT_TEST``, which pytest changes as it goes, by nothing). Any other difference
#: (``PYTHON*``, a locale, thread counts, ``MLFLOW_*``...) might have been read by the interpreter or at import:
#: that invocation runs in a plain subprocess instead.
FORK_CALL_TIME_ENV = ("BENCH_", "PYTEST_CURRENT_TEST")


def fork_cli(
    args: list[str] | tuple[str, ...],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    errors: str = "strict",
    server: ForkServer | None = None,
) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` as ``subprocess.run(..., capture_output=True, text=True)`` returns it, but forked.

    Why: most of a failing invocation's cost is importing mlflow, pandas, scikit-survival, SimpleITK... (seconds
    of CPU). A fork server (``ForkServer``) pays the imports once; each invocation is then still a fresh OS
    process of its own, forked from the server: its own working directory (``cwd``), its own environment
    (``env``, the complete environment as ``subprocess.run`` takes it; None: this process's), stdin from
    /dev/null, stdout and stderr on file descriptors 1 and 2 of its own (files read back here), ``sys.argv``
    and ``sys.path[0]`` as ``-m`` sets them. It runs ``bench/__main__.py`` as ``python -m bench`` does and exits
    the way the interpreter does (non-daemon threads joined, atexit handlers, streams flushed, modules torn
    down), so the exit status is the real one: a code, or minus a signal's number.

    Where forking is unavailable (not Linux), where the server could not import its modules cleanly (its
    imports printed something, e.g. a warning, that a real process would have printed into the invocation's
    stderr; or started a thread), or where ``env`` differs from the server's in a variable outside
    ``FORK_CALL_TIME_ENV``, it runs the plain subprocess instead, so nothing checked is ever weakened.
    On ``timeout`` the process is killed and ``subprocess.TimeoutExpired`` raised, as ``subprocess.run`` does.
    """
    return (server or _default_fork_server()).run(args, cwd=cwd, env=env, timeout=timeout, errors=errors)


_DEFAULT_SERVER: ForkServer | None = None
_DEFAULT_LOCK = threading.Lock()


def _default_fork_server() -> ForkServer:
    global _DEFAULT_SERVER
    with _DEFAULT_LOCK:
        if _DEFAULT_SERVER is None:
            _DEFAULT_SERVER = ForkServer()
            atexit.register(_DEFAULT_SERVER.close)
        return _DEFAULT_SERVER


class ForkServer:
    """A process that has imported ``preload`` and forks one child per ``bench`` invocation (see ``fork_cli``).

    The server is a fresh ``python -c`` (not the test process: no pytest state, no test threads), started at
    once; its imports run in the background until the first ``run`` waits for them. It runs nothing but imports,
    so no cache, registry or MLflow global any invocation fills is ever inherited by another: each child starts
    from the state right after the imports. It is single-threaded and forks from its main thread only; requests
    come over its stdin, any number at a time (``run`` may be called from several threads), and it reports
    each child's pid and wait status on its stdout. ``close`` (or the end of this process) stops it.
    """

    def __init__(self, preload: tuple[str, ...] = FORK_PRELOAD, env: dict[str, str] | None = None):
        self.env = dict(os.environ if env is None else env)
        self.why_not = "" if sys.platform.startswith("linux") and hasattr(os, "fork") else "forking needs Linux"
        self.ready = threading.Event()
        self._pending: dict[int, queue.SimpleQueue] = {}
        self._ids = itertools.count(1)
        self._pending_lock = threading.Lock()  # the table of requests waiting for answers
        self._send_lock = threading.Lock()  # the server's stdin: one request written at a time
        self._warned = False
        self._proc: subprocess.Popen | None = None
        if self.why_not:
            self.ready.set()
            return
        # The server's stderr (open as long as the server): what its imports print, a crash's traceback.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        code = (  # without -c's own first entry (the working directory): each child puts its own there, as -m does
            "import sys; getattr(sys.flags, 'safe_path', False) or sys.path.pop(0); "
            "from bench.testing import _fork_server_main; _fork_server_main()"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=os.sep,
            env=self.env,
        )
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)
        self._reader.start()

    # -- the client side

    def run(
        self,
        args: list[str] | tuple[str, ...],
        *,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        errors: str = "strict",
    ) -> subprocess.CompletedProcess:
        """``fork_cli`` on this server."""
        command = [sys.executable, "-m", "bench", *map(str, args)]
        env = dict(os.environ if env is None else env)
        why = self.refuses(env)
        if why:
            return subprocess.run(
                command, check=False, capture_output=True, text=True, errors=errors, cwd=cwd, env=env, timeout=timeout
            )
        folder = os.path.abspath(cwd if cwd is not None else os.getcwd())
        if not os.path.isdir(folder):
            raise FileNotFoundError(errno.ENOENT, "no such directory", folder)  # as subprocess.run raises it
        deadline = None if timeout is None else time.monotonic() + timeout
        with tempfile.TemporaryDirectory(prefix="fork-cli-") as tmp:
            out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
            answers = queue.SimpleQueue()
            with self._pending_lock:
                request_id = next(self._ids)
                self._pending[request_id] = answers
            self._send(
                {
                    "op": "run",
                    "id": request_id,
                    "args": command[3:],
                    "cwd": folder,
                    "env": env,
                    "stdout": out,
                    "stderr": err,
                }
            )
            try:
                self._answer(answers)  # the child's pid: it runs
                try:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    status = self._answer(answers, left)["status"]
                except queue.Empty:
                    self._send({"op": "kill", "id": request_id})
                    self._answer(answers, 60)  # reaped: nothing writes the files any more
                    raise subprocess.TimeoutExpired(command, timeout, _read_bytes(out), _read_bytes(err)) from None
            finally:
                with self._pending_lock:
                    self._pending.pop(request_id, None)
            stdout, stderr = (_decode(_read_bytes(path), errors) for path in (out, err))
        return subprocess.CompletedProcess(command, os.waitstatus_to_exitcode(status), stdout, stderr)

    def refuses(self, env: dict[str, str]) -> str:
        """Why an invocation in ``env`` runs in a plain subprocess ("" when it is forked); waits for the imports."""
        self.ready.wait()
        if self.why_not:
            if not self._warned:
                self._warned = True
                warnings.warn(f"bench.testing.fork_cli runs plain subprocesses: {self.why_not}", stacklevel=3)
            return self.why_not
        differ = sorted(k for k in set(env) | set(self.env) if env.get(k) != self.env.get(k))
        frozen = [k for k in differ if not k.startswith(FORK_CALL_TIME_ENV)]
        return f"the environment differs in {', '.join(frozen)}" if frozen else ""

    def close(self) -> None:
        """Stop the server once its children have ended (they are not killed)."""
        if self._proc is None or self._log.closed:
            return
        with self._send_lock:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=10)
        self._proc.stdout.close()
        self._log.close()

    def _send(self, message: dict) -> None:
        try:
            with self._send_lock:
                self._proc.stdin.write(json.dumps(message).encode() + b"\n")
                self._proc.stdin.flush()
        except (OSError, ValueError) as exc:  # ValueError: closed
            raise RuntimeError(f"the fork server is gone: {self._log_text()}") from exc

    def _answer(self, answers: queue.SimpleQueue, timeout: float | None = None) -> dict:
        message = answers.get(timeout=timeout)
        if "gone" in message:
            raise RuntimeError(f"the fork server is gone: {self._log_text()}")
        return message

    def _read(self) -> None:
        """The server's answers, each to the queue of the request it answers; the server's end to them all."""
        for line in self._proc.stdout:
            message = json.loads(line)
            if "ready" in message:
                if message["threads"] > 1:
                    self.why_not = f"the fork server's imports started {message['threads'] - 1} thread(s)"
                elif os.fstat(self._log.fileno()).st_size:
                    self.why_not = f"the fork server's imports printed: {self._log_text()}"
                self.ready.set()
                continue
            with self._pending_lock:
                answers = self._pending.get(message["id"])
            if answers is not None:
                answers.put(message)
        if not self.ready.is_set():
            self.why_not = f"the fork server did not start: {self._log_text()}"
            self.ready.set()
        with self._pending_lock:
            for answers in self._pending.values():
                answers.put({"gone": True})

    def _log_text(self) -> str:
        size = os.fstat(self._log.fileno()).st_size
        tail = os.pread(self._log.fileno(), 3000, max(0, size - 3000))
        return tail.decode(errors="replace").strip() or "(nothing on its stderr)"


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def _decode(data: bytes, errors: str) -> str:
    """As ``subprocess.run(text=True)`` decodes a stream: the locale's encoding, universal newlines."""
    text = data.decode(locale.getpreferredencoding(False), errors)
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- the server side (runs in the server process, and in each child until it becomes the invocation)


def _fork_server_main() -> None:
    """Import the modules named in ``sys.argv``, then fork a child per request until stdin ends."""
    answers = os.dup(1)  # the answers' pipe; fd 1 joins fd 2 (the client's log), so that any stray output shows
    os.dup2(2, 1)
    for name in sys.argv[1:]:
        importlib.import_module(name)
    sys.stdout.flush()
    sys.stderr.flush()
    # The imports' objects never change again: kept out of the children's garbage collections, which would
    # otherwise copy every page of them (and take a second to exit); what an invocation creates is collected.
    gc.freeze()
    _write(answers, {"ready": True, "threads": threading.active_count()})
    request = _serve(answers)
    if request is not None:
        _become(request)  # never returns: the invocation ends the child's interpreter with its exit status


def _serve(answers: int) -> dict | None:
    """The server's loop: None when stdin has ended and every child has been reaped; in a child, its request."""
    children: dict[int, tuple[int, int | None]] = {}  # pid -> (request id, pidfd or None: polled)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    pending, reading = b"", True
    while reading or children:
        polled = any(fd is None for _id, fd in children.values())
        for key, _ in selector.select(0.05 if polled else None):
            if key.fd != 0:  # a pidfd: that child has ended
                _reap(answers, children, selector, key.data, os.waitpid(key.data, 0)[1])
                continue
            chunk = os.read(0, 1 << 16)
            if not chunk:
                reading = False
                selector.unregister(0)
                continue
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                if request["op"] == "kill":
                    for pid, (request_id, _fd) in children.items():
                        if request_id == request["id"]:
                            os.kill(pid, signal.SIGKILL)  # not reaped yet, so the pid is still this child's
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    for _id, fd in children.values():
                        if fd is not None:
                            os.close(fd)
                    selector.close()
                    os.close(answers)
                    return request
                try:
                    pidfd = os.pidfd_open(pid)
                except (AttributeError, OSError):  # Python < 3.9 or Linux < 5.3: polled instead
                    pidfd = None
                children[pid] = (request["id"], pidfd)
                if pidfd is not None:
                    selector.register(pidfd, selectors.EVENT_READ, pid)
                _write(answers, {"id": request["id"], "pid": pid})
        for pid in [p for p, (_id, fd) in children.items() if fd is None]:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _reap(answers, children, selector, pid, status)
    selector.close()
    return None


def _reap(answers: int, children: dict, selector: selectors.BaseSelector, pid: int, status: int) -> None:
    """Report an ended child's wait status to the client."""
    request_id, pidfd = children.pop(pid)
    if pidfd is not None:
        selector.unregister(pidfd)
        os.close(pidfd)
    _write(answers, {"id": request_id, "status": status})


def _write(fd: int, message: dict) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


def _become(request: dict) -> None:
    """In the forked child: become ``python -m bench ARGS`` in the request's folder, environment and files."""
    import runpy

    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)  # inheritable, as a process's standard streams are; sys.stdout and sys.stderr write here
        os.close(opened)
    os.chdir(request["cwd"])
    os.environ.clear()  # unsetenv and putenv too: what the invocation's own subprocesses inherit
    os.environ.update(request["env"])
    # Signal handlers: the interpreter's own (SIGINT raises KeyboardInterrupt, SIGPIPE ignored...), since the server
    # sets none; the invocation's SIGTERM handling is bench's own (bench.signals).
    if not getattr(sys.flags, "safe_path", False):
        sys.path.insert(0, os.getcwd())  # what -m puts first: the working directory
    if "numpy" in sys.modules:
        np.random.seed()  # a fresh process's global generator is seeded afresh (``random`` reseeds itself at fork)
    sys.argv = ["-m", *request["args"]]
    runpy._run_module_as_main("bench")  # what `python -m bench` itself calls; bench's __main__ ends in sys.exit
