"""The protocol emits, the report records: the runner hands every row to the sinks it is given, and
``bench.protocol`` imports neither ``bench.report`` nor MLflow."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest

from bench.errors import ModelError, RowsFailedError
from bench.plugins.labels import Baseline
from bench.protocol.runner import CombinationResult, FailedRow, RowSink, RunOutcome, RunRequest, run
from bench.report.results import load_results
from bench.report.progress_sink import ProgressSink
from bench.report.results_sink import ResultsSink
from survival_models.coxnet import CoxNet

PROTOCOL = Path(__file__).resolve().parents[1] / "bench" / "protocol"


class ListSink(RowSink):
    """Collects what the runner hands on, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def check(self, request: RunRequest) -> None:
        self.events.append(("check", request.dataset))

    def start(self, outcome: RunOutcome, plan: list) -> None:
        self.events.append(("start", [f.label for f, _ in plan]))

    def fold(self, features, model) -> None:
        self.events.append(("fold", f"{features.label} x {model.label}"))

    def row(self, result: CombinationResult) -> None:
        self.events.append(("row", result))

    def failed(self, failure: FailedRow) -> None:
        self.events.append(("failed", failure))

    def finish(self, outcome: RunOutcome, interrupted: bool) -> None:
        self.events.append(("finish", interrupted))


def test_every_row_finished_or_failed_reaches_the_sinks_in_plan_order_and_no_store_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fit(self, X, y):
        if self.config.alpha == 0.1:
            raise ModelError("the path diverged")
        return real_fit(self, X, y)

    real_fit = CoxNet.fit
    monkeypatch.setattr(CoxNet, "fit", fit)
    monkeypatch.chdir(tmp_path)  # the default store, sqlite:///mlflow.db, would be made here
    store = tmp_path / "given.db"
    sink = ListSink()
    saved = ResultsSink(Baseline(), "test", tmp_path / "results.json")
    request = RunRequest(
        "gbsg2",
        rows=(("clinical", ("coxph", "coxnet:alpha=0.1", "coxnet:alpha=0.5")),),
        bootstrap=5,
        tracking_uri=f"sqlite:///{store}",
    )
    outcome = run(request, sinks=[sink, saved])

    kinds = [kind for kind, _ in sink.events if kind != "fold"]
    assert kinds == ["check", "start", "row", "failed", "row", "finish"]
    folds = [what for kind, what in sink.events if kind == "fold"]
    n_folds = len(outcome.split.folds(outcome.cohort))
    assert n_folds > 1 and len(folds) == 3 * n_folds, "every fold of every row, failed ones included"
    assert {f: folds.count(f) for f in folds} == {
        "clinical x coxph": n_folds, "clinical x coxnet[alpha=0.1]": n_folds, "clinical x coxnet[alpha=0.5]": n_folds
    }  # fmt: skip
    assert all(kind != "fold" for kind, _ in sink.events[sink.events.index(("row", outcome.results[-1])):]), \
        "a row is handed on after all of its folds"  # fmt: skip
    rows = [what for kind, what in sink.events if kind in ("row", "failed")]
    assert [r.model.label for r in rows] == ["coxph", "coxnet[alpha=0.1]", "coxnet[alpha=0.5]"]
    assert rows[0] is outcome.results[0] and rows[2] is outcome.results[1]
    assert isinstance(rows[1], FailedRow) and rows[1].error is outcome.failures[0]
    assert "row clinical x coxnet[alpha=0.1]: the path diverged" in str(rows[1].error)
    assert sink.events[-1] == ("finish", False)
    assert outcome.parent_run_id == "" and all(r.run_id == "" for r in outcome.results)  # nothing recorded them
    assert not store.exists() and not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    # the results file holds the rows that finished, as they read back
    written = load_results(tmp_path / "results.json")
    assert saved.written == [tmp_path / "results.json"]
    assert sorted(str(r.key) for r in written.rows) == ["clinical x coxnet[alpha=0.5]", "clinical x coxph"]
    with pytest.raises(RowsFailedError):
        outcome.check()


def test_a_run_stopped_by_an_error_finishes_its_sinks_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fit(self, X, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(CoxNet, "fit", fit)
    sink = ListSink()
    saved = ResultsSink(Baseline(), "test", tmp_path / "results.json")
    with pytest.raises(KeyboardInterrupt):
        run(RunRequest("gbsg2", models=("coxnet:alpha=0.1",), bootstrap=0), sinks=[sink, saved])
    assert [kind for kind, _ in sink.events] == ["check", "start", "finish"]  # no fold finished
    assert sink.events[-1] == ("finish", True)
    assert saved.results is None and not (tmp_path / "results.json").exists(), "an interrupted run writes nothing"


def test_the_progress_bar_is_a_sink_and_the_run_is_silent_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = RunRequest("gbsg2", models=("coxph", "coxnet:alpha=0.5"), bootstrap=0)
    run(request, sinks=[ListSink()])
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == "", "no progress sink, no output"

    shown = io.StringIO()
    outcome = run(request, sinks=[ProgressSink(shown)])
    n_folds = len(outcome.split.folds(outcome.cohort))
    last = shown.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("evaluate: 100%") and f" {2 * n_folds}/{2 * n_folds} " in last, last
    assert any(f"{row}]" in last for row in ("clinical x coxph", "clinical x coxnet[alpha=0.5]")), "names its row"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import is (top level, TYPE_CHECKING, a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path.name}: relative import; name the module")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant):  # fmt: skip
            names.add(str(node.args[0].value))
    return names


def test_the_protocol_imports_neither_the_report_nor_mlflow() -> None:
    files = sorted(PROTOCOL.glob("*.py"))
    assert {p.name for p in files} >= {"runner.py", "grid.py", "evaluation.py"}
    higher = {
        f"{path.name}: {name}"
        for path in files
        for name in _imports(path)
        if name.split(".")[0] == "mlflow" or name == "bench.report" or name.startswith("bench.report.")
        or name in ("bench.commands", "bench.cli")
    }  # fmt: skip
    assert not higher, sorted(higher)


def test_the_import_check_sees_imports_in_type_checking_blocks_and_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.report.results import Results\n"
        "def f():\n    import mlflow.tracking\n"
    )
    assert {"bench.report.results", "mlflow.tracking"} <= _imports(probe)
