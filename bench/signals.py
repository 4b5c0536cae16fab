"""SIGTERM ends ``bench`` the way Ctrl-C does, so that a stopped invocation cleans up after itself.

Python's default on SIGTERM (``kill``, a scheduler's time limit, ``docker stop``) is to die at once: no
``finally`` block runs, the invocation's MLflow runs stay RUNNING and temporary files stay. Within
``sigterm_as_interrupt`` SIGTERM raises ``Terminated`` instead, a ``KeyboardInterrupt``, so every clean-up
written for Ctrl-C runs for it too; the CLI then exits with ``EXIT_CODE``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell reports for a process that SIGTERM ended


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread (once); the old handler is restored after.

    Worker processes (feature extraction) are ended with SIGTERM first: the parent's clean-up waits for its
    pool, which would otherwise finish every queued patient. They die at once, so the cache files they were
    writing are removed for them. A second SIGTERM is ignored, so that it does not interrupt the clean-up the
    first one started.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread; embedded callers keep theirs
        return
    fired = False

    def terminate(signum: int, frame: object) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        workers = multiprocessing.active_children()
        _stop(workers)
        _remove_partial_files({os.getpid(), *(w.pid for w in workers)})
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(workers: list[multiprocessing.process.BaseProcess], timeout: float = 10.0) -> None:
    """SIGTERM to each worker, then wait until all have ended (not reaped: their pool does that)."""
    for worker in workers:
        worker.terminate()
    pending = [w.sentinel for w in workers]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        ready = multiprocessing.connection.wait(pending, timeout=deadline - time.monotonic())
        pending = [s for s in pending if s not in ready]


def _remove_partial_files(pids: set[int]) -> None:
    """Remove the cache files that ``pids`` were writing (``.NAME.PID.tmp.EXT``, as ``FeatureCache.put`` names them).

    Only this process's own writers could clean up after themselves; a worker killed mid-write cannot. Its PID
    in the name makes the file its own, so this removes nothing another process is writing.
    """
    from bench.cache import cache_root

    partial = re.compile(r"^\..+\.(\d+)\.tmp(\.|$)")
    for folder, _dirs, files in os.walk(cache_root()):
        for name in files:
            match = partial.match(name)
            if match and int(match.group(1)) in pids:
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass  # gone already, or not ours to remove
