"""A small grid on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1.

The grid (``synthetic_mm_tiny``: radiomics and clinical rows, Cox and CoxNet) runs once in this
process's way (no scheduler) as the reference, then through ``--scheduler``: its page, results
file and figures must be the same bytes. The scheduler runs with a preload that records what
every task carries (``tests/fixtures/dask_task_recorder.py``): paths and options, never an image.
The workers log each patient they compute (``DASK_LOGGING__BENCH=info``), so the tests can count
extractions; a worker killed in the middle of extraction loses nothing, and a client killed in
the middle leaves every finished patient cached for the next run.

A third worker in a mount namespace of its own, where the cache folder is an empty tmpfs, stands for
a machine without the client's filesystem: no worker writes the cache then, entries come back.
The tests share one cluster and run in file order: the one that kills a worker comes last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")
PATIENTS = 24  # synthetic_mm_tiny
CONFIG = """\
dataset: synthetic_mm_tiny
seed: 0
bootstrap: 20
extractors:
  rad: radiomics:feature_classes=firstorder/glcm
models: ["coxph:alpha=1", coxnet]
rows: [clinical, rad]
baseline: {extractor: clinical, model: "coxph:alpha=1"}
leaderboard: board.md
"""
OUTPUTS = ("board.md", "board.json", "board.forest.svg", "board.km.svg", "board.decision.svg")
COMPUTED = re.compile(r"bench\.extract - INFO - radiomics: computed (\S+) in [\d.]+ s, (cached|sent to the client)")


class Cluster:
    """A scheduler and two workers, each a process of its own, ended by PID; logs in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.record = folder / "tasks.jsonl"
        scheduler_file = folder / "scheduler.json"
        env = {**os.environ, "BENCH_TASK_RECORD": str(self.record)}
        preload = REPO / "tests" / "fixtures" / "dask_task_recorder.py"
        self.scheduler = self._start(
            "scheduler", [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                          "--scheduler-file", str(scheduler_file), "--preload", str(preload)], env)  # fmt: skip
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert self.scheduler.poll() is None, self.log("scheduler")
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)  # written, perhaps not yet complete
        self.address = json.loads(scheduler_file.read_text())["address"]
        worker_env = {**os.environ, "DASK_LOGGING__BENCH": "info"}
        self.workers = [
            self._start(f"worker{i}", [str(DASK), "worker", self.address, "--nthreads", "1", "--no-nanny",
                                       "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"], worker_env)
            for i in range(2)
        ]  # fmt: skip

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def computed(self, *names: str) -> Counter:
        """How many times each sample was computed, over the named workers' whole logs (default: the two)."""
        names = names or ("worker0", "worker1")
        return Counter(m.group(1) for name in names for m in COMPUTED.finditer(self.log(name)))

    def add_isolated_worker(self, hidden: Path) -> subprocess.Popen:
        """A third worker that sees an empty folder at ``hidden`` (a tmpfs mounted over it in a mount namespace of
        its own): a worker on another machine, without the client's filesystem."""
        hidden.mkdir(parents=True, exist_ok=True)
        command = (f"mount -t tmpfs none {hidden} && exec {DASK} worker {self.address} --nthreads 1 --no-nanny "
                   "--no-dashboard --host 127.0.0.1 --name isolated")  # fmt: skip
        env = {**os.environ, "DASK_LOGGING__BENCH": "info", "BENCH_CACHE_DIR": str(hidden)}
        return self._start("isolated", ["unshare", "--mount", "--propagation", "private", "sh", "-c", command], env)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("dask-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def data_env(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    splits = tmp_path_factory.mktemp("splits")
    (splits / "synthetic_mm_tiny").mkdir()
    (splits / "synthetic_mm_tiny" / "cv5.json").write_bytes((REPO / "splits/synthetic_mm_tiny/cv5.json").read_bytes())
    return {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_SPLITS_DIR": str(splits)}


def _grid(folder: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.yaml").write_text(CONFIG)
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "grid", "--config", "grid.yaml", "--quiet", "--tracking-uri",
         f"sqlite:///{folder / 'mlflow.db'}", *extra],
        cwd=folder, env={**os.environ, **env, "BENCH_CACHE_DIR": str(folder / "cache")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _finish(process: subprocess.Popen, timeout: float = 400) -> str:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err[-3000:]
    return err


def _same_outputs(folder: Path, reference: Path) -> None:
    for name in OUTPUTS:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs from the reference"


@pytest.fixture(scope="module")
def reference(data_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid run in this process's way, without a cluster."""
    folder = tmp_path_factory.mktemp("in-process")
    _finish(_grid(folder, data_env))
    return folder


def _entries(folder: Path) -> int:
    return len([p for p in (folder / "cache" / "features").rglob("*.npz") if not p.name.startswith(".")])


def _can_isolate() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def test_a_grid_on_a_dask_scheduler_gives_the_same_bytes_and_no_task_carries_an_image(
    cluster: Cluster, reference: Path, data_env: dict[str, str], tmp_path: Path
) -> None:
    """With a third worker that does not see this cache (when the machine allows one), no worker writes it: each
    entry comes back and is written here. Without it, the two workers write their entries themselves."""
    from distributed import Client

    names = ["worker0", "worker1"]
    isolated = cluster.add_isolated_worker(tmp_path / "cache") if _can_isolate() else None
    try:
        if isolated is not None:
            names.append("isolated")
            with Client(cluster.address, set_as_default=False, timeout=30) as client:
                client.wait_for_workers(3, timeout=60)
        marks = {name: len(cluster.log(name)) for name in names}
        _finish(_grid(tmp_path, data_env, "--scheduler", cluster.address))
    finally:
        if isolated is not None:
            os.kill(isolated.pid, signal.SIGKILL)
            isolated.wait()
    _same_outputs(tmp_path, reference)
    lines = [m for name, start in marks.items() for m in COMPUTED.finditer(cluster.log(name)[start:])]
    assert sorted(Counter(m.group(1) for m in lines).values()) == [1] * PATIENTS  # every patient once, on workers
    assert all(COMPUTED.search(cluster.log(name)[marks[name] :]) for name in names), "a worker did nothing"
    route = "sent to the client" if isolated is not None else "cached"
    assert Counter(m.group(2) for m in lines) == {route: PATIENTS}
    assert _entries(tmp_path) == PATIENTS

    tasks = [json.loads(line) for line in cluster.record.read_text().splitlines()]
    kinds = Counter(t["key"].split("-")[0] for t in tasks)
    assert kinds["extract_radiomics"] == PATIENTS
    assert kinds["fit"] == 2 * 2 * 5  # rows x models x folds: every (row, fold) fit is a task
    for task in tasks:
        assert all(len(shape) <= 1 and (not shape or shape[0] <= 64) for shape in task["arrays"]), task
        assert not any(t.startswith(("SimpleITK.", "torch.")) for t in task["types"]), task
        assert task["bytes"] < 20_000, task  # paths and options: an image would be megabytes
        assert sum(task["depends"].values()) < 2_000_000, task  # the scattered cohort and feature blocks
    extraction = next(t for t in tasks if t["key"].startswith("extract_radiomics"))
    assert "pathlib.PosixPath" in extraction["types"]  # a patient's task names its files


def _run(folder: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    """``bench run`` of the grid's radiomics row alone: the same extraction, one fit."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--dataset", "synthetic_mm_tiny", "--extractor",
         "radiomics:feature_classes=firstorder/glcm", "--model", "coxph:alpha=1", "--bootstrap", "0", "--quiet",
         "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", *extra],
        cwd=folder, env={**os.environ, **env, "BENCH_CACHE_DIR": str(folder / "cache")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def test_a_client_killed_mid_extraction_leaves_finished_patients_cached_for_the_rerun(
    cluster: Cluster, data_env: dict[str, str], tmp_path: Path
) -> None:
    before = cluster.computed()
    process = _run(tmp_path, data_env, "--scheduler", cluster.address)
    deadline = time.monotonic() + 300
    while _entries(tmp_path) < 3:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "extraction did not start"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(2)  # a patient still running when its client died finishes, and is cached
    assert _entries(tmp_path) < PATIENTS, "extraction finished before the kill: the test proves nothing"
    first = cluster.computed() - before
    _finish(_run(tmp_path, data_env, "--scheduler", cluster.address))
    again = cluster.computed() - before - first
    assert not set(again) & set(first), "a patient finished before the kill was computed again"
    assert sorted((first + again).values()) == [1] * PATIENTS, (first, again)
    assert _entries(tmp_path) == PATIENTS


def test_the_cluster_is_checked_before_any_work(cluster: Cluster) -> None:
    from distributed import Client

    from bench.errors import UsageError
    from bench.executor import GPU, DaskExecutor

    client = Client(cluster.address, set_as_default=False, timeout=30)
    client.wait_for_workers(2, timeout=60)
    executor = DaskExecutor(client, f"the Dask cluster at {cluster.address}")
    try:
        executor.check(["feature_extractors.radiomics", "bench.protocol.fitting"], {})  # what the grid needs: fine
        with pytest.raises(
            UsageError,
            match=r"Dask worker tcp://127\.0\.0\.1:\d+ cannot import my_plugin_xyz "
            r"\(ModuleNotFoundError: .*install the same prognosis-bench",
        ):
            executor.check(["bench", "my_plugin_xyz"], {})
        with pytest.raises(
            UsageError,
            match=f"no worker of the Dask cluster at {cluster.address} offers the resource GPU.*--resources GPU=1",
        ):
            executor.check(["bench"], {GPU: 1})
    finally:
        executor.close()


def test_a_patient_that_fails_on_a_worker_is_named_and_the_others_are_cached(
    cluster: Cluster, synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd
    from distributed import Client

    from bench.cache import FeatureCache
    from bench.data.manifest import manifest_cohort, read_manifest
    from bench.errors import ExtractionInputError
    from bench.executor import DaskExecutor
    from bench.testing import subset_manifest
    from feature_extractors.radiomics import RadiomicsConfig, RadiomicsExtractor

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))  # the workers derive masks into it too
    manifest = subset_manifest(synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml", 6, tmp_path, "six")
    table = pd.read_csv(manifest.parent / "patients.csv", dtype=str)
    damaged = tmp_path / "MM0003-pet.nii.gz"
    whole = Path(table.loc[2, "pet"]).read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])
    table.loc[2, "pet"] = str(damaged)
    table.to_csv(manifest.parent / "patients.csv", index=False)
    cohort = manifest_cohort(read_manifest(manifest), str(manifest))
    cache = FeatureCache(tmp_path / "cache" / "features")
    extractor = RadiomicsExtractor(RadiomicsConfig(feature_classes=("firstorder",)))
    with Client(cluster.address, set_as_default=False, timeout=30) as client:
        with pytest.raises(ExtractionInputError) as failed:
            extractor.extract(cohort, progress=False, cache=cache, executor=DaskExecutor(client, "a test cluster"))
    message = str(failed.value)
    assert message.startswith("extractor 'radiomics' failed for 1 of 6 patients: MM0003 ("), message
    assert str(damaged) in message and "; the others are cached" in message
    assert failed.value.exit_code == 2
    assert cache.info()[0] == 5


def test_a_cancelled_wait_is_not_reported_but_other_event_loop_errors_are(cluster: Cluster, caplog) -> None:
    """After Ctrl-C or SIGTERM, a wait of the client on cancelled futures ends in distributed's AllExit; asyncio
    printed it under bench's one-line message as "Task exception was never retrieved" with a traceback."""
    import logging
    import threading

    from distributed import Client
    from distributed.client import AllExit

    from bench.executor import DaskExecutor

    with Client(cluster.address, set_as_default=False, timeout=30) as client:
        DaskExecutor(client, "a test cluster")
        loop = client.loop.asyncio_loop
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for exc in (AllExit(), ValueError("real trouble")):
                reported = threading.Event()

                def report(exc: BaseException = exc, reported: threading.Event = reported) -> None:
                    loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": exc})
                    reported.set()

                loop.call_soon_threadsafe(report)
                assert reported.wait(10)
    errors = [r for r in caplog.records if r.name == "asyncio"]
    assert len(errors) == 1 and "real trouble" in repr(errors[0].exc_info), [r.getMessage() for r in errors]


def test_a_worker_killed_mid_extraction_loses_nothing(
    cluster: Cluster, reference: Path, data_env: dict[str, str], tmp_path: Path
) -> None:
    before, before_victim = cluster.computed(), cluster.computed("worker0")
    process = _grid(tmp_path, data_env, "--scheduler", cluster.address)
    victim = cluster.workers[0]
    deadline = time.monotonic() + 300
    while not _victim_busy(cluster, before_victim):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "worker 0 computed nothing"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    done_at_kill = sum((cluster.computed() - before).values())
    assert done_at_kill < PATIENTS, "extraction finished before the kill: the test proves nothing"
    _finish(process)
    _same_outputs(tmp_path, reference)
    computed = cluster.computed() - before
    assert sorted(computed.values()) == [1] * PATIENTS, computed  # once each: the dead worker's finished ones cached
    assert _entries(tmp_path) == PATIENTS  # written by the workers: they see this cache


def _victim_busy(cluster: Cluster, before: Counter) -> bool:
    """Worker 0 has computed at least two patients of this run (``before``: its own counts before the run; the
    same patients were computed by earlier tests, on either worker)."""
    return sum((cluster.computed("worker0") - before).values()) >= 2
