"""Where work items run: in this process, on a local Dask cluster, or on an existing one.

Work items are the patients of an extraction and the (row, outer fold) fits of an evaluation.
The runner hands them to an ``Executor`` as (function, arguments) and gets the results back
in completion order, without knowing where they ran:

- ``Executor``: in this process, one after another (``--workers 1``, no scheduler);
- ``DaskExecutor`` on a ``LocalCluster`` of N single-threaded worker processes (``--workers N``);
- ``DaskExecutor`` on an existing cluster (``--scheduler tcp://HOST:PORT``, ``$BENCH_DASK_SCHEDULER``
  or ``scheduler:`` in a grid config), e.g. SLURM or Kubernetes workers (docs/scaling.md).

Tasks carry file paths and options, never images; results are small (features, fold metrics).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError, UsageError

SCHEDULER_ENV = "BENCH_DASK_SCHEDULER"
CONNECT_TIMEOUT = 10  # seconds to reach a scheduler, and again to see its first worker
GPU = "GPU"  # the worker resource a device=cuda task asks for: `dask worker ... --resources GPU=1`
# One thread per worker for every native pool: N workers on N cores never oversubscribe them (features and fits
# also run under one_thread / threadpool_limits, so their numbers do not depend on this).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def on_gpu(config: Any) -> bool:
    """Whether a plugin with these options runs on a GPU (``device=cuda``, ``cuda:1``...): its tasks ask for ``GPU``."""
    return str(getattr(config, "device", "cpu")).startswith("cuda")


class Executor:
    """Runs tasks in this process, in order; the base of every executor."""

    description = "in this process"

    def map(
        self,
        fn: Callable[..., Any],
        tasks: Sequence[tuple],
        *,
        name: str,
        resources: dict[str, float] | None = None,
        lost: Callable[[int, BaseException], Any] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """``(i, fn(*tasks[i]))`` for every task, in completion order; a task that raises raises here.

        ``lost(i, exc)`` stands in for the result of a task whose workers kept dying (Dask's KilledWorker).
        """
        for i, args in enumerate(tasks):
            yield i, fn(*args)

    def share(self, value: Any) -> Any:
        """A handle to ``value`` that tasks take as an argument; sent to the workers once, not with every task."""
        return value

    def sees(self, folder: Path, marker: str) -> bool:
        """Whether every worker sees the file ``folder/marker`` that this process wrote (a shared filesystem)."""
        return True

    def check(self, modules: Sequence[str], resources: dict[str, float]) -> None:
        """Import ``modules`` where tasks run, before any work; raise ``UsageError`` when one cannot be imported or
        no worker offers ``resources``. Imported now, the tasks that use them do not pay for the import."""
        problem = _import_problem(list(modules))
        if problem:
            raise UsageError(f"cannot import {problem}; install the extras and plugin packages it needs")

    def close(self) -> None:
        pass


class DaskExecutor(Executor):
    """Tasks on a Dask cluster, through a ``distributed.Client``; only this process writes results anywhere."""

    def __init__(self, client: Any, description: str, resources: bool = True):
        self.client = client
        self.description = description
        _quiet_cancelled_waits(client)
        # Whether tasks ask for worker resources (GPU=1): on a cluster's declared GPU workers, yes; on a local
        # cluster, which declares none, its processes share this machine's devices as one process would.
        self.resources = resources

    def map(self, fn, tasks, *, name, resources=None, lost=None):
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        token = uuid.uuid4().hex[:12]  # task keys: "extract_radiomics-<token>-<i>", grouped by name on the dashboard
        futures = [
            self.client.submit(fn, *args, key=f"{name}-{token}-{i}", resources=self._asked(resources), pure=False)
            for i, args in enumerate(tasks)
        ]
        position = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in as_completed(futures, loop=self.client.loop):
                i = position[future.key]
                try:
                    result = future.result()
                except KilledWorker as exc:
                    if lost is None:
                        raise BenchError(f"task {i} of {name} killed every worker that ran it: {exc}") from exc
                    result = lost(i, exc)
                future.release()
                yield i, result
        finally:  # interrupted, or a task raised: nothing of this map keeps running on the cluster
            self.client.cancel([f for f in futures if not f.done()])

    def _asked(self, resources: dict[str, float] | None) -> dict[str, float] | None:
        return resources or None if self.resources else None

    def share(self, value):
        return self.client.scatter(value, broadcast=True, hash=False)

    def sees(self, folder, marker):
        expected = (Path(folder) / marker).read_text()
        answers = self.client.run(_reads, str(Path(folder) / marker))
        return bool(answers) and all(text == expected for text in answers.values())

    def check(self, modules, resources):
        answers = self.client.run(_import_problem, list(modules))
        for worker, problem in sorted(answers.items()):
            if problem:
                raise UsageError(
                    f"Dask worker {worker} cannot import {problem}; install the same prognosis-bench, extras and "
                    "plugin packages on every worker"
                )
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        for resource in resources if self.resources else ():
            if not any(w.get("resources", {}).get(resource) for w in workers.values()):
                raise UsageError(
                    f"no worker of {self.description} offers the resource {resource}, which device=cuda tasks need; "
                    f"start GPU workers with `dask worker SCHEDULER --nthreads 1 --resources {resource}=1`"
                )

    def close(self):
        self.client.close()


def _quiet_cancelled_waits(client: Any) -> None:
    """Drop distributed's ``AllExit`` from the client's event loop; report any other loop error as asyncio does.

    A map left early (Ctrl-C, SIGTERM, a task that raised) cancels its futures, and a wait of the client still
    pending on them ends in ``AllExit``. asyncio would print that as "Task exception was never retrieved" with a
    traceback when the task is collected, after bench's own one-line message: it is the expected end of a
    cancelled wait, not an error.
    """
    from distributed.client import AllExit

    def handler(loop: Any, context: dict) -> None:
        if not isinstance(context.get("exception"), AllExit):
            loop.default_exception_handler(context)

    client.loop.asyncio_loop.set_exception_handler(handler)


@contextlib.contextmanager
def open_executor(workers: int = 1, scheduler: str | None = None, announce: bool = True) -> Iterator[Executor]:
    """The executor for ``--workers`` and ``--scheduler``, closed after the block: a scheduler's cluster when
    given, a local cluster of ``workers`` processes when more than one, else this process.

    With ``announce``, where the work goes and the Dask dashboard's address are printed on stderr.
    """
    if scheduler is None and workers <= 1:
        yield Executor()
        return
    if scheduler is not None:
        client, description = _connect(scheduler)
        executor = DaskExecutor(client, description)
        try:
            _announce(executor, announce)
            yield executor
        finally:
            executor.close()
        return
    with local_cluster(workers) as executor:
        _announce(executor, announce)
        yield executor


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[DaskExecutor]:
    """A ``LocalCluster`` of ``workers`` single-threaded processes on 127.0.0.1 (even one), closed after the block."""
    import dask
    from distributed import Client

    # Dask's nannies give workers MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's mmap threshold at 128 KiB: every
    # larger array (a fold's bootstrap matrices) is then mapped and unmapped anew. Our workers keep glibc's adaptive
    # default. Nor do they sample their own stacks every 10 ms for the dashboard's profile page: the sampler holds the
    # interpreter lock, a fit's many short numpy calls wait for it. Together, the fitting stage took twice as long.
    quick = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
             "distributed.worker.profile.enabled": False}  # fmt: skip
    with dask.config.set(quick):
        cluster = _start_local_cluster(workers)
    try:
        client = Client(cluster, set_as_default=False)
        executor = DaskExecutor(client, f"a local Dask cluster of {workers} workers", resources=False)
        try:
            yield executor
        finally:
            executor.close()
    finally:
        cluster.close()


def _start_local_cluster(workers: int) -> Any:
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # any free port: two invocations at once must not collide
        # The scheduler runs in this process: its log lines (e.g. on Ctrl-C, "Couldn't gather keys") are not the
        # user's business; what fails is reported by bench itself.
        silence_logs=logging.CRITICAL,
        env=THREAD_ENV,
    )


def _announce(executor: DaskExecutor, announce: bool) -> None:
    if announce:
        print(f"bench: running on {executor.description}; dashboard {executor.client.dashboard_link}", file=sys.stderr)


def scheduler_from_env() -> str | None:
    """``$BENCH_DASK_SCHEDULER``, when set and not empty."""
    return os.environ.get(SCHEDULER_ENV) or None


def check_scheduler(address: str) -> None:
    """A scheduler address reads ``tcp://HOST:PORT`` (or another Dask protocol), checked before anything starts."""
    protocol, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if not rest or not host or not port.isdigit() or protocol not in {"tcp", "tls", "ws", "wss", "inproc", "ucx"}:
        raise UsageError(f"--scheduler must be a Dask scheduler address like tcp://HOST:8786, got {address!r}")


def _connect(address: str) -> tuple[Any, str]:
    from distributed import Client

    check_scheduler(address)
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UsageError(
            f"cannot reach the Dask scheduler at {address} ({_first_line(exc)}); start one with `dask scheduler` "
            f"and workers with `dask worker {address}`, or drop --scheduler"
        ) from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        client.close()
        raise UsageError(
            f"the Dask scheduler at {address} has no workers; start some with `dask worker {address} --nthreads 1`"
        ) from None
    count = len(client.scheduler_info(n_workers=-1)["workers"])
    return client, f"the Dask cluster at {address} ({count} worker{'s' if count != 1 else ''} now)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reads(path: str) -> str | None:  # on each worker
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _import_problem(modules: list[str]) -> str:  # on each worker: "" or "MODULE (ERROR)"
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure to import is the answer
            return f"{module} ({type(exc).__name__}: {_first_line(exc)})"
    return ""
