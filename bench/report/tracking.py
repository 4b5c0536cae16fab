"""MLflow tracking: one experiment per dataset, a parent run per invocation, a child run per combination.

A combination whose learner failed is a FAILED child run with the error as its ``bench.error`` tag;
the parent run of an invocation with any failed combination ends FAILED too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.cache import tools_dir
from bench.errors import BenchError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
KIND_TAG = "bench.kind"
ERROR_TAG = "bench.error"  # on a failed combination's run: what failed, in which fold


def _quiet_mlflow() -> None:
    # Schema migrations of a new SQLite store log dozens of INFO lines; users need none of them.
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(tracking_uri: str | None):
    """An MLflow client for ``tracking_uri`` (default: ``sqlite:///mlflow.db`` in the working directory)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()  # after the import: mlflow sets up its own loggers when imported
    uri = tracking_uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        _new_sqlite_store(Path(uri[len("sqlite:///") :]))
    return MlflowClient(tracking_uri=uri)


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
    return mlflow_client.create_experiment(dataset, artifact_location=_artifact_location(mlflow_client, dataset))


def _artifact_location(mlflow_client, dataset: str) -> str | None:
    """Artifacts beside a local SQLite store, so the store folder holds everything."""
    uri = mlflow_client.tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).resolve()
        return (db.parent / "mlartifacts" / dataset).as_uri()
    return None


class Tracker:
    """Opens the parent run of one invocation and adds a child run per combination."""

    def __init__(self, tracking_uri: str | None, dataset: str, parent_params: dict[str, Any]):
        self.client = client(tracking_uri)
        try:
            self.experiment_id = experiment_id(self.client, dataset, create=True)
        except Exception as exc:
            raise BenchError(f"cannot open MLflow store {self.client.tracking_uri!r}: {exc}") from exc
        parent = self.client.create_run(self.experiment_id, tags={KIND_TAG: "invocation"}, run_name="bench run")
        self.parent_run_id = parent.info.run_id
        self._log_params(self.parent_run_id, parent_params)

    def log_combination(
        self,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        metrics: dict[str, dict],
        artifacts: dict[str, str],
        scalars: dict[str, float] | None = None,
    ) -> str:
        """Record one finished combination; returns its run id. ``scalars`` are single-valued metrics."""
        from mlflow.entities import Metric

        run = self._child(run_name, params, tags)
        run_id, timestamp = run.info.run_id, run.info.start_time
        batch = []
        for name, value in (scalars or {}).items():
            batch.append(Metric(name, _finite_or_nan(value), timestamp, 0))
        for name, summary in metrics.items():
            for field in ("mean", "se", "ci_low", "ci_high"):
                key = name if field == "mean" else f"{name}_{field}"
                batch.append(Metric(key, _finite_or_nan(summary[field]), timestamp, 0))
            for step, value in enumerate(summary["per_fold"]):
                batch.append(Metric(f"{name}_fold", _finite_or_nan(value), timestamp, step))
        for start in range(0, len(batch), 900):
            self.client.log_batch(run_id, metrics=batch[start : start + 900])
        with tempfile.TemporaryDirectory() as tmp:
            for filename, text in artifacts.items():
                path = Path(tmp) / filename
                path.write_text(text)
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def log_failure(self, run_name: str, params: dict[str, Any], tags: dict[str, str], error: str) -> str:
        """Record a combination whose learner failed: a FAILED child run with the error as a tag."""
        run_id = self._child(run_name, params, {**tags, ERROR_TAG: error[:5000]}).info.run_id
        self.client.set_terminated(run_id, "FAILED")
        return run_id

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status)

    def _child(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> Any:
        run = self.client.create_run(
            self.experiment_id,
            tags={KIND_TAG: "combination", "mlflow.parentRunId": self.parent_run_id, **tags},
            run_name=run_name,
        )
        self._log_params(run.info.run_id, params)
        return run

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 90):
            self.client.log_batch(run_id, params=items[start : start + 90])


def _finite_or_nan(value: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
