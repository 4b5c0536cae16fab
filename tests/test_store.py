"""The MLflow store under stress, with real processes: invocations started together, bad URIs, SIGTERM, SIGKILL.

Every ``bench`` here is a real process of its own (a subprocess, or forked by ``fork_cli`` where only its start
is saved); the store is read back with ``sqlite3``,
independently of the code that wrote it.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.report.tracking import ERROR_TAG
from bench.testing import fork_cli, run_cli

GBSG2 = ("run", "--dataset", "gbsg2", "--extractor", "clinical", "--model", "coxph", "--quiet")


def _bench(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: what it started can be found (and killed) afterwards
    )


def _runs(db: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """run id -> (status, tags), read with sqlite3 (a writer may hold the database for a moment)."""
    with sqlite3.connect(db, timeout=30) as connection:
        runs = {run_id: (status, {}) for run_id, status in connection.execute("SELECT run_uuid, status FROM runs")}
        for run_id, key, value in connection.execute("SELECT run_uuid, key, value FROM tags"):
            runs[run_id][1][key] = value
    return runs


def _kind(runs: dict, kind: str) -> dict[str, tuple[str, dict[str, str]]]:
    return {run_id: run for run_id, run in runs.items() if run[1].get("bench.kind") == kind}


def _group_alive(pgid: int, wait: float = 5.0) -> list[str]:
    """Command lines of the processes still in process group ``pgid`` after up to ``wait`` seconds, zombies aside."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # fields 3, 4, 5 (the process group), ...
                if int(fields[2]) == pgid and fields[0] != "Z":
                    alive.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
            except (OSError, IndexError):
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.mark.slow
def test_four_invocations_started_together_on_a_new_store_record_every_run(tmp_path: Path, splits_dir: Path) -> None:
    env = {"BENCH_CACHE_DIR": str(tmp_path / "cache")}
    for trial in range(2):
        store = tmp_path / f"trial{trial}" / "mlflow.db"  # a new store (and folder) each time
        # Four processes forked at once from a server that has imported bench: without the seconds of imports
        # between their starts, they reach the new store within milliseconds of each other.
        with ThreadPoolExecutor(4) as pool:
            started = [
                pool.submit(fork_cli, [*GBSG2, "--bootstrap", "0", "--seed", str(seed), "--tracking-uri",
                                       f"sqlite:///{store}"], cwd=tmp_path, env={**os.environ, **env}, timeout=300)
                for seed in range(4)
            ]  # fmt: skip
            for done in started:
                result = done.result()
                assert result.returncode == 0, f"trial {trial}: {result.stderr}"
                assert "database is locked" not in result.stderr
        runs = _runs(store)
        parents, children = _kind(runs, "invocation"), _kind(runs, "combination")
        assert len(parents) == 4 and len(children) == 4, f"trial {trial}: {len(parents)} parents, {len(children)}"
        assert {status for status, _ in runs.values()} == {"FINISHED"}
        assert {tags["mlflow.parentRunId"] for _, tags in children.values()} == set(parents)
        with sqlite3.connect(store) as connection:
            assert connection.execute("SELECT COUNT(*) FROM experiments WHERE name = 'gbsg2'").fetchone() == (1,)


@pytest.mark.parametrize("case", ["unknown scheme", "text file"])
def test_a_bad_tracking_uri_is_one_line_before_any_work(case: str, tmp_path: Path, splits_dir: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("these are my notes, not a database\n")
    uri = "foo://bar" if case == "unknown scheme" else f"sqlite:///{text}"
    result = run_cli(*GBSG2, "--tracking-uri", uri, cwd=tmp_path, env={"BENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert uri in result.stderr and "Traceback" not in result.stderr
    assert text.read_text() == "these are my notes, not a database\n"


def test_sigterm_during_extraction_fails_the_run_and_leaves_no_temporary_file(
    tmp_path: Path, splits_dir: Path, synthetic_data: Path
) -> None:
    cache = tmp_path / "cache"
    store = tmp_path / "mlflow.db"
    env = {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_CACHE_DIR": str(cache)}
    process = _bench(
        "run", "--dataset", "synthetic_mm_tiny", "--extractor", "radiomics", "--model", "coxph", "--bootstrap", "0",
        "--workers", "2", "--quiet", "--tracking-uri", f"sqlite:///{store}", cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not list(cache.rglob("*.npz")):  # a patient is done: the workers are extracting the others
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "extraction did not start"
            time.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 143, err
    assert took < 20, f"exited {took:.0f} s after SIGTERM"
    assert err.strip() == "bench: terminated (SIGTERM); any run in progress is marked FAILED"
    assert _group_alive(process.pid) == [], "processes that bench started outlived it"
    assert len(list(cache.rglob("*.npz"))) < 24, "extraction finished before the signal: the test proves nothing"
    parents = _kind(_runs(store), "invocation")
    assert [status for status, _ in parents.values()] == ["FAILED"]
    assert [p for p in tmp_path.rglob("*") if ".tmp" in p.name] == []


def test_a_killed_invocations_runs_are_failed_by_the_next_one(tmp_path: Path, splits_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    env = {"BENCH_CACHE_DIR": str(tmp_path / "cache")}
    process = _bench(*GBSG2, "--bootstrap", "500", "--tracking-uri", uri, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:  # until its parent run is in the store
            try:
                killed = _kind(_runs(store), "invocation") if store.exists() else {}
            except sqlite3.DatabaseError:  # the store is being created
                killed = {}
            if killed:
                break
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the invocation never opened its run"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    [(killed_id, (status, tags))] = killed.items()
    assert status == "RUNNING" and tags["bench.pid"] == str(process.pid)
    host = socket.gethostname()
    assert tags["bench.host"] == host

    mlflow = MlflowClient(tracking_uri=uri)
    gbsg2 = mlflow.get_experiment_by_name("gbsg2").experiment_id
    other = mlflow.create_experiment("elsewhere", artifact_location=(tmp_path / "elsewhere").as_uri())
    # As if the kill had come while a combination was being recorded; and three invocations that must be judged
    # by their own process: one on another host, one alive (this test), one whose PID now belongs to another.
    child = mlflow.create_run(gbsg2, tags={"bench.kind": "combination", "mlflow.parentRunId": killed_id})
    started = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]  # field 22
    me = {"bench.pid": str(os.getpid()), "bench.process_start": started}
    parents = {
        "other host": {"bench.host": "another-host", "bench.pid": str(process.pid), "bench.process_start": "1"},
        "alive": {"bench.host": host, **me},
        "pid reused": {"bench.host": host, **me, "bench.process_start": "1"},
    }
    made = {name: mlflow.create_run(other, tags={"bench.kind": "invocation", **t}).info.run_id
            for name, t in parents.items()}  # fmt: skip

    result = run_cli(*GBSG2, "--bootstrap", "0", "--tracking-uri", uri, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    runs = _runs(store)
    reason = f"process {process.pid} on host {host} ended without closing this run"
    assert runs[killed_id][0] == "FAILED" and runs[killed_id][1][ERROR_TAG] == reason
    assert runs[child.info.run_id][0] == "FAILED" and runs[child.info.run_id][1][ERROR_TAG] == reason
    assert {name: runs[run_id][0] for name, run_id in made.items()} == {
        "other host": "RUNNING",
        "alive": "RUNNING",
        "pid reused": "FAILED",
    }
    statuses = sorted(
        status for run_id, (status, _) in _kind(runs, "invocation").items() if run_id not in made.values()
    )
    assert statuses == ["FAILED", "FINISHED"]  # the killed invocation and the one that closed its runs
