"""MLflow tracking: one experiment per dataset, a parent run per invocation, a child run per combination.

A combination whose learner failed is a FAILED child run with the error as its ``bench.error`` tag;
the parent run of an invocation with any failed combination ends FAILED too.

Several invocations may share one local SQLite store: creating the store and an experiment happen under
an inter-process lock. A parent run records which process opened it (host, PID, start time), so that an
invocation that was killed (SIGKILL, a lost machine) and could not close its runs is found and marked
FAILED by the next invocation on the same host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.cache import tools_dir
from bench.errors import BenchError, UsageError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
KIND_TAG = "bench.kind"
ERROR_TAG = "bench.error"  # on a failed combination's run: what failed, in which fold
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # MLflow's description of an experiment or a run (shown in the UI)
FINGERPRINT_TAG = "bench.fingerprint"  # on a combination's run: the cohort's content fingerprint (full sha256)
# On a parent run: the process that opened it. The start time (/proc/<pid>/stat field 22, clock ticks after boot)
# tells that process from a later one that was given the same PID.
HOST_TAG, PID_TAG, PROCESS_START_TAG = "bench.host", "bench.pid", "bench.process_start"
# Stores MLflow can track to (a database, a tracking server); "+driver" and the file store aside.
# Metrics logged as mean and CI only, without SE and per-fold values: the net benefit at every horizon and threshold
# (three metrics each) would otherwise be most of a run's metric rows, and the page reads none of those extras.
BRIEF_METRICS = ("net_benefit_",)
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc", "file")


def _quiet_mlflow() -> None:
    # Schema migrations of a new SQLite store log dozens of INFO lines; users need none of them.
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_store(tracking_uri: str | None):
    """An MLflow client of a store checked to work (default: ``sqlite:///mlflow.db`` in the working directory).

    Checked before any work: the scheme, and for SQLite that the file is a database and its folder writable.
    A store that cannot be opened is a ``UsageError`` of one line naming the URI. A new SQLite store is created
    (and an old one opened) under an inter-process lock, so invocations started together do not race.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    _check_uri(uri, db)
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()  # after the import: mlflow sets up its own loggers when imported
    if db is not None:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - a second of imports, kept out of the lock
    try:
        with _store_lock(uri):
            if db is not None:
                _new_sqlite_store(db)
            return MlflowClient(tracking_uri=uri)  # opens the store: SQLite's schema is migrated and verified here
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot open MLflow store {uri!r}: {reason[:1000]}; check --tracking-uri") from exc


def check_tracking_uri(tracking_uri: str | None) -> None:
    """What can be seen wrong with a tracking URI without importing MLflow or touching the store (a
    ``UsageError`` naming it): checked first, before the cohort is loaded; ``open_store`` checks the rest."""
    uri = tracking_uri or DEFAULT_TRACKING_URI
    _check_uri(uri, sqlite_path(uri))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI; None for other stores and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _check_uri(uri: str, db: Path | None) -> None:
    """A ``UsageError`` naming ``uri`` for what can be seen wrong without opening it."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme and scheme.split("+", 1)[0].lower() not in SCHEMES:
        raise UsageError(
            f"tracking URI {uri!r} has an unknown scheme {scheme + '://'!r}; give sqlite:///PATH.db (a local file), "
            "http(s)://HOST:PORT (an MLflow server) or a postgresql://, mysql:// or mssql:// database"
        )
    if scheme.lower() in ("http", "https"):
        _check_server(uri)
    if db is None:
        return
    if db.is_dir():
        raise UsageError(f"tracking URI {uri!r} names a folder; give a file in it, e.g. sqlite:///{db / 'mlflow.db'}")
    if db.exists():
        try:
            with db.open("rb") as handle:
                header = handle.read(16)
        except OSError as exc:
            raise UsageError(f"tracking URI {uri!r}: cannot read {str(db)!r} ({exc.strerror})") from exc
        if header and header != b"SQLite format 3\x00":  # an empty file is a new, empty database
            raise UsageError(
                f"tracking URI {uri!r} names {str(db)!r}, which is not an SQLite database; "
                "give a new file name (bench creates the store) or an existing MLflow store"
            )
        if not os.access(db, os.W_OK) or not os.access(db.parent, os.W_OK):  # SQLite writes a journal beside it
            raise UsageError(f"MLflow store {str(db)!r} of tracking URI {uri!r} is not writable; give a writable one")
        return
    folder = db.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot create MLflow store {str(db)!r} of tracking URI {uri!r}: {str(folder)!r} is not a writable "
            "folder; give a store in a writable folder"
        )


def _check_server(uri: str, timeout: float = 10.0) -> None:
    """An MLflow server answers its health endpoint (a ``UsageError`` otherwise, before any work)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} from /health"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise UsageError(
        f"cannot reach the MLflow server of tracking URI {uri!r} ({reason}); start it "
        "(mlflow server --host 127.0.0.1) or fix --tracking-uri"
    )


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold an inter-process lock on a local SQLite store (nothing for other stores).

    MLflow checks, then creates, both the tables of a new store and an experiment by name: invocations
    started together on one store would do both twice. The lock file is in the tools cache, named by the
    store's resolved path, so nothing is left beside the user's store.
    """
    db = sqlite_path(uri)
    handle = None
    if db is not None:
        try:
            import fcntl

            folder = tools_dir() / "locks"
            folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:32]
            handle = open(folder / f"mlflow-{name}.lock", "a")  # noqa: SIM115 - closed below, which unlocks it
        except (ImportError, OSError):
            handle = None  # no fcntl (Windows) or a read-only home: unlocked, as MLflow itself is
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _new_sqlite_store(db: Path) -> None:
    """Create a missing SQLite store as a copy of an empty, migrated one made once per MLflow version.

    MLflow builds a new store by running every schema migration (seconds, each time). The copy is
    the same database, appears atomically (a store that another process creates meanwhile wins, never
    one half-migrated), and only the default experiment's artifact folder is set for this directory.
    """
    import sqlite3
    import time

    import mlflow
    from mlflow.tracking import MlflowClient

    if db.exists():
        return
    template = tools_dir() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            building = template.with_name(f".{template.name}.{os.getpid()}.tmp")
            MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments()  # runs the migrations
            os.replace(building, template)
        db.parent.mkdir(parents=True, exist_ok=True)
        copy = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, copy)
        with sqlite3.connect(copy) as connection:
            now = int(time.time() * 1000)
            connection.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                "WHERE experiment_id = 0",
                (str(Path("mlruns").resolve() / "0"), now, now),
            )
        try:
            os.link(copy, db)  # fails if the store appeared meanwhile: that one is kept
        except FileExistsError:
            pass
        finally:
            copy.unlink(missing_ok=True)
    except OSError:
        return  # a read-only cache or folder: MLflow creates the store itself (or says why it cannot)


def experiment_id(mlflow_client, dataset: str, create: bool) -> str | None:
    experiment = mlflow_client.get_experiment_by_name(dataset)
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        return None
    with _store_lock(mlflow_client.tracking_uri):  # another invocation may be creating it right now
        experiment = mlflow_client.get_experiment_by_name(dataset)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow_client.create_experiment(dataset, artifact_location=_artifact_location(mlflow_client, dataset))


def _describe_experiment(mlflow_client, experiment: str, description: str) -> None:
    """Open the experiment on MLflow 3's training runs table (not the GenAI overview) and describe it.

    Under the store's lock: invocations started together would otherwise insert the same tag twice.
    """
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **({NOTE_TAG: description} if description else {})}
    if all(mlflow_client.get_experiment(experiment).tags.get(k) == v for k, v in wanted.items()):
        return
    with _store_lock(mlflow_client.tracking_uri):
        tags = mlflow_client.get_experiment(experiment).tags
        for key, value in wanted.items():
            if tags.get(key) != value:
                mlflow_client.set_experiment_tag(experiment, key, value)


def _artifact_location(mlflow_client, dataset: str) -> str | None:
    """Artifacts beside a local SQLite store, so the store folder holds everything."""
    db = sqlite_path(mlflow_client.tracking_uri)
    if db is not None:
        return (db.resolve().parent / "mlartifacts" / dataset).as_uri()
    return None


def close_abandoned_runs(mlflow_client) -> list[str]:
    """Mark FAILED the parent runs left RUNNING by a process of this host that has ended, and their running children.

    A process killed with SIGKILL (or by a lost machine) cannot close its runs. Runs of other hosts are left
    alone: whether their process lives cannot be seen from here. Returns the parent run ids it closed.
    """
    from mlflow.entities import ViewType

    host = socket.gethostname()
    experiments, token = [], None
    while True:
        page = mlflow_client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        experiments += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    if not experiments:
        return []
    running = mlflow_client.search_runs(
        experiments,
        filter_string=f"tags.`{KIND_TAG}` = 'invocation' and attributes.status = 'RUNNING' "
        f"and tags.`{HOST_TAG}` = '{host}'",
        max_results=1000,
    )
    closed = []
    for run in running:
        tags = run.data.tags
        if not tags.get(PID_TAG, "").isdigit() or not _process_ended(int(tags[PID_TAG]), tags.get(PROCESS_START_TAG)):
            continue
        reason = f"process {tags[PID_TAG]} on host {host} ended without closing this run"
        children = mlflow_client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and attributes.status = 'RUNNING'",
        )
        for child in children:
            mlflow_client.set_tag(child.info.run_id, ERROR_TAG, reason)
            mlflow_client.set_terminated(child.info.run_id, "FAILED")
        mlflow_client.set_tag(run.info.run_id, ERROR_TAG, reason)
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        closed.append(run.info.run_id)
    return closed


def _process_tags(pid: int) -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PROCESS_START_TAG: _process_start(pid)}


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks after boot); "" where /proc cannot tell, or it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces: fields 3, 4, ...
    return fields[19] if len(fields) > 19 and fields[0] not in ("Z", "X") else ""  # a zombie has ended


def _process_ended(pid: int, started: str | None) -> bool:
    """Whether the process that recorded ``pid`` and ``started`` is gone (its PID may now be another's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a process of another user holds the PID: compare start times
    return bool(started) and _process_start(pid) != started


class Tracker:
    """Opens the parent run of one invocation and adds a child run per combination."""

    def __init__(
        self,
        store: Any,
        dataset: str,
        parent_params: dict[str, Any],
        description: str = "",
        data: dict[str, str] | None = None,
        run_name: str = "bench run",
    ):
        """``store``: a client from ``open_store``, or a tracking URI (None: the default), opened here.

        ``description`` (the dataset, split and evaluation policy) becomes the experiment's description.
        ``data`` (name, digest, source_type, source, schema, profile) is the cohort as an MLflow dataset,
        logged as the evaluation input of the parent run and of every child run.
        """
        self._data = data
        self.client = open_store(store) if store is None or isinstance(store, str) else store
        try:
            self.experiment_id = experiment_id(self.client, dataset, create=True)
            _describe_experiment(self.client, self.experiment_id, description)
            close_abandoned_runs(self.client)
        except Exception as exc:
            raise BenchError(f"cannot open MLflow store {self.client.tracking_uri!r}: {exc}") from exc
        tags = {KIND_TAG: "invocation", **_process_tags(os.getpid())}
        parent = self.client.create_run(self.experiment_id, tags=tags, run_name=run_name)
        self.parent_run_id = parent.info.run_id
        self._open_child: str | None = None  # a child run being recorded: ``finish`` fails it if it is left open
        self._log_params(self.parent_run_id, parent_params)
        self._log_data(self.parent_run_id)

    def log_combination(
        self,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        metrics: dict[str, dict],
        artifacts: dict[str, str | bytes],
        scalars: dict[str, float] | None = None,
        histories: dict[str, list[tuple[int, float]]] | None = None,
    ) -> str:
        """Record one finished combination; returns its run id.

        ``scalars`` are single-valued metrics; ``histories`` metrics over steps (MLflow draws them as curves);
        ``artifacts`` maps a relative path (``figures/x.png`` goes in a folder) to text or bytes.
        """
        from mlflow.entities import Metric

        run = self._child(run_name, params, tags)
        run_id, timestamp = run.info.run_id, run.info.start_time
        self._log_data(run_id)
        batch = []
        for name, value in (scalars or {}).items():
            batch.append(Metric(name, _finite_or_nan(value), timestamp, 0))
        for name, points in (histories or {}).items():
            batch += [Metric(name, float(value), timestamp, int(step)) for step, value in points]
        for name, summary in metrics.items():
            brief = name.startswith(BRIEF_METRICS)
            for field in ("mean", "ci_low", "ci_high") if brief else ("mean", "se", "ci_low", "ci_high"):
                key = name if field == "mean" else f"{name}_{field}"
                batch.append(Metric(key, _finite_or_nan(summary[field]), timestamp, 0))
            for step, value in enumerate([] if brief else summary["per_fold"]):
                batch.append(Metric(f"{name}_fold", _finite_or_nan(value), timestamp, step))
        for start in range(0, len(batch), 900):
            self.client.log_batch(run_id, metrics=batch[start : start + 900])
        with tempfile.TemporaryDirectory() as tmp:
            for filename, content in artifacts.items():
                path = Path(tmp) / filename
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
            self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, "FINISHED")
        self._open_child = None
        return run_id

    def annotate(self, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Add single-valued metrics and tags to a recorded run (what is known only once every row is done)."""
        from mlflow.entities import Metric, RunTag

        timestamp = self.client.get_run(run_id).info.start_time
        batch = [Metric(k, _finite_or_nan(v), timestamp, 0) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_failure(self, run_name: str, params: dict[str, Any], tags: dict[str, str], error: str) -> str:
        """Record a combination whose learner failed: a FAILED child run with the error as a tag."""
        run_id = self._child(run_name, params, {**tags, ERROR_TAG: error[:5000]}).info.run_id
        self.client.set_terminated(run_id, "FAILED")
        self._open_child = None
        return run_id

    def finish(self, status: str = "FINISHED") -> None:
        if self._open_child is not None:  # interrupted while a combination was being recorded
            self.client.set_terminated(self._open_child, "FAILED")
        self.client.set_terminated(self.parent_run_id, status)

    def _child(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> Any:
        run = self.client.create_run(
            self.experiment_id,
            tags={KIND_TAG: "combination", "mlflow.parentRunId": self.parent_run_id, **tags},
            run_name=run_name,
        )
        self._open_child = run.info.run_id
        self._log_params(run.info.run_id, params)
        return run

    def _log_data(self, run_id: str) -> None:
        """The cohort as the run's evaluation dataset (the runs table's Dataset column)."""
        if not self._data:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        entry = DatasetInput(Dataset(**self._data), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "evaluation")])
        # MLflow looks the dataset up, then inserts it: invocations started together would insert it twice
        with _store_lock(self.client.tracking_uri):
            self.client.log_inputs(run_id, datasets=[entry])

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 90):
            self.client.log_batch(run_id, params=items[start : start + 90])


def _finite_or_nan(value: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
