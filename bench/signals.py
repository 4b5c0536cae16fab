"""SIGTERM ends ``bench`` the way Ctrl-C does, so that a stopped invocation cleans up after itself.

Python's default on SIGTERM (``kill``, a scheduler's time limit, ``docker stop``) is to die at once: no
``finally`` block runs, the invocation's MLflow runs stay RUNNING and temporary files stay. Within
``sigterm_as_interrupt`` SIGTERM raises ``Terminated`` instead, a ``KeyboardInterrupt``, so every clean-up
written for Ctrl-C runs for it too; the CLI then exits with ``EXIT_CODE``.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell reports for a process that SIGTERM ended


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread (once); the old handler is restored after.

    Worker processes (feature extraction) are ended with SIGTERM first: the parent's clean-up waits for its
    pool, which would otherwise finish every queued patient. A second SIGTERM is ignored, so that it does not
    interrupt the clean-up the first one started.
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
        for child in multiprocessing.active_children():
            child.terminate()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
