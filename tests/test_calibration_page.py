"""The page's calibration and clinical-utility table, its decision curves and the rows' MLflow figures (issue 25).

One real run (gbsg2, coxph and rsf, B = 20) is recorded by the results file and MLflow sinks at once; every page
and figure below is rendered from what they wrote. Expected cells are written from the results file's JSON here,
not by the page's own helpers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.plugins.specs import baseline_from_text
from bench.protocol.runner import RunRequest, run
from bench.report.mlflow_sink import MlflowSink
from bench.report.page import decision_path, page_files, stale_page, write_page
from bench.report.results import load_results
from bench.report.results_sink import ResultsSink
from bench.testing import run_cli

REPO = Path(__file__).resolve().parents[1]
FORMAT_1 = Path(__file__).resolve().parent / "fixtures" / "format1" / "gbsg2.json"
BOARDS = REPO / "leaderboards"
SOURCE = "bench run --dataset gbsg2 --model coxph rsf --bootstrap 20 --baseline-model coxph --results gbsg2.json"
H = 1095  # gbsg2's middle horizon: the table's by default
HEADER = (
    "| rank | extractor | model | O/E [95 % CI] | slope [95 % CI] | ICI [95 % CI] | D-cal p | "
    "net benefit at p = 0.1 [95 % CI] | vs treat-all at p = 0.1 [95 % CI] | "
    "net benefit at p = 0.2 [95 % CI] | vs treat-all at p = 0.2 [95 % CI] |"
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The run's results file and page (written by ``ResultsSink``) and its MLflow store."""
    folder = tmp_path_factory.mktemp("gbsg2")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    baseline = baseline_from_text("clinical", "coxph")
    saved = ResultsSink(baseline, SOURCE, folder / "gbsg2.md", page=True)
    outcome = run(RunRequest("gbsg2", models=("coxph", "rsf"), bootstrap=20, tracking_uri=tracking_uri), baseline,
                  sinks=[MlflowSink(tracking_uri), saved])  # fmt: skip
    outcome.check()
    return {"folder": folder, "page": folder / "gbsg2.md", "results": folder / "gbsg2.json",
            "tracking_uri": tracking_uri, "outcome": outcome}  # fmt: skip


def _ci(m: dict, signed: bool = False) -> str:
    def text(x: float) -> str:
        written = f"{x:+.3f}" if signed else f"{x:.3f}"
        return "0.000" if written.lstrip("+-") == "0.000" else written

    return f"{text(m['mean'])} [{text(m['ci_low'])}, {text(m['ci_high'])}]"


def _section(page: str) -> list[str]:
    start = page.index(f"## Calibration and clinical utility at {H} days")
    return page[start:].split("\n## ")[0].splitlines()


def test_the_table_has_one_line_per_row_in_the_main_tables_order_with_the_results_numbers(recorded: dict) -> None:
    body = json.loads(recorded["results"].read_text())
    page = recorded["page"].read_text()
    section = _section(page)
    assert section[2] == HEADER and section[3] == "|---:|---|---|---|---|---|---:|---|---|---|---|"
    ranked = sorted(body["rows"], key=lambda r: -r["metrics"]["c_index"]["mean"])
    for rank, row in enumerate(ranked, start=1):
        m = row["metrics"]
        expected = [
            str(rank), row["extractor"], row["model"], _ci(m[f"oe_{H}"]), _ci(m[f"cal_slope_{H}"]),
            _ci(m[f"ici_{H}"]), f"{m['dcal_p']['mean']:.3f}",
            _ci(m[f"net_benefit_{H}_0.1"]), _ci(m[f"net_benefit_gain_{H}_0.1"], signed=True),
            _ci(m[f"net_benefit_{H}_0.2"]), _ci(m[f"net_benefit_gain_{H}_0.2"], signed=True),
        ]  # fmt: skip
        assert section[3 + rank] == "| " + " | ".join(expected) + " |"
    assert section[4 + len(ranked)] == "", "one line per row"
    main = [line.split(" | ")[1:3] for line in page.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert main[:2] == main[2:], "the main table's order"
    assert body["format"] == "prognosis-bench-results/2"
    assert body["protocol"]["policy"]["table_thresholds"] == [0.1, 0.2]
    assert body["protocol"]["policy"]["calibration_horizon"] is None


def test_the_treat_all_line_and_the_decision_figure_are_under_the_table(recorded: dict) -> None:
    body = json.loads(recorded["results"].read_text())
    section = "\n".join(_section(recorded["page"].read_text()))
    everyone = body["rows"][0]["metrics"]
    assert all(row["metrics"][f"net_benefit_all_{H}_0.2"] == everyone[f"net_benefit_all_{H}_0.2"]
               for row in body["rows"]), "treat-all is the same for every row"  # fmt: skip
    treat_all = [_ci(everyone[f"net_benefit_all_{H}_{p}"]) for p in (0.1, 0.2)]
    assert (f"Treat-all (everyone treated): net benefit {treat_all[0]} at p = 0.1 and {treat_all[1]} at p = 0.2, "
            "the same for every row; treat-none: 0.") in section  # fmt: skip
    assert "slope below 1: predictions too extreme" in section and "positive `vs treat-all`" in section
    assert f"![Decision curves at {H} days](gbsg2.decision.svg)" in section
    top = recorded["page"].read_text().split("| protocol")[0]
    assert "[decision curves of the best rows](gbsg2.decision.svg)" in top, "linked with the other figures too"
    assert recorded["page"].with_name("gbsg2.decision.svg").read_text().startswith("<?xml")


def test_the_decision_figure_regenerates_byte_for_byte_in_another_process(recorded: dict, tmp_path: Path) -> None:
    (tmp_path / "matplotlibrc").write_text("font.family: serif\nsvg.hashsalt: other\nlines.linewidth: 5\n")
    env = {"MPLCONFIGDIR": str(tmp_path / "mpl")}
    made = run_cli("leaderboard", "--from", str(recorded["results"]), "--out", str(tmp_path / "again.md"),
                   cwd=tmp_path, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "again.decision.svg" in made.stdout
    committed = recorded["page"].with_name("gbsg2.decision.svg").read_bytes()
    assert (tmp_path / "again.decision.svg").read_bytes() == committed


def test_check_reports_an_altered_or_missing_decision_figure_and_an_altered_table(
    recorded: dict, tmp_path: Path
) -> None:
    for path in recorded["folder"].glob("gbsg2.*"):
        shutil.copy(path, tmp_path / path.name)
    results, page = load_results(tmp_path / "gbsg2.json"), tmp_path / "gbsg2.md"
    figure = decision_path(page)
    assert stale_page(results, page) == []
    original = figure.read_text()
    figure.write_text(original.replace("<path ", "<path stroke-width='2' ", 1))
    assert stale_page(results, page) == [f"{figure} differs from the regenerated figure\n"]
    figure.unlink()
    assert stale_page(results, page) == [f"{figure} is missing\n"]
    figure.write_text(original)
    text = page.read_text()
    row = next(line for line in _section(text) if line.startswith("| 1 |"))
    page.write_text(text.replace(row, row.replace("| 1 |", "| 9 |"), 1))
    (problem,) = stale_page(results, page)
    assert f"-{row.replace('| 1 |', '| 9 |')}" in problem and f"+{row}" in problem


def test_a_format_1_file_renders_without_the_table_and_says_why(tmp_path: Path) -> None:
    """A format-1 file (written before calibration was computed; tests/fixtures/format1/gbsg2.json is two
    rows of the gbsg2 page as committed before) reads as it was written: no table, no decision figure, one line
    saying why."""
    shutil.copy(FORMAT_1, tmp_path / "gbsg2.json")
    results = load_results(tmp_path / "gbsg2.json")
    assert results.format == 1 and results.protocol.policy.table_thresholds == (0.1, 0.2)
    files = page_files(results, tmp_path / "gbsg2.md", results.source)
    assert decision_path(tmp_path / "gbsg2.md") not in files
    page = files[tmp_path / "gbsg2.md"]
    assert "## Calibration and clinical utility" not in page
    assert ("Calibration and clinical utility: not in this results file (format 1, written before they were "
            "computed); regenerate it with the command above.") in page.splitlines()  # fmt: skip
    write_page(results, tmp_path / "gbsg2.md", results.source)
    assert stale_page(results, tmp_path / "gbsg2.md", results.source) == []
    decision_path(tmp_path / "gbsg2.md").write_text("<svg/>")
    assert stale_page(results, tmp_path / "gbsg2.md", results.source) == [
        f"{decision_path(tmp_path / 'gbsg2.md')} is not part of the regenerated page; remove it\n"
    ]
    write_page(results, tmp_path / "gbsg2.md", results.source)
    assert not decision_path(tmp_path / "gbsg2.md").exists(), "a figure the page no longer has is removed"


def test_rows_without_the_metrics_get_a_line_saying_why_and_no_table(recorded: dict, tmp_path: Path) -> None:
    body = json.loads(recorded["results"].read_text())
    for row in body["rows"]:
        row["metrics"] = {m: v for m, v in row["metrics"].items() if not m.startswith(("oe_", "cal_", "ici_",
                          "dcal_", "net_benefit"))}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(body))
    results = load_results(tmp_path / "old.json")
    written = write_page(results, tmp_path / "old.md")
    page = (tmp_path / "old.md").read_text()
    assert decision_path(tmp_path / "old.md") not in written and "| O/E" not in page
    assert ("Calibration and clinical utility: not in these results for 2 of 2 rows (clinical x coxph, clinical x rsf: "
            "computed before they were); regenerate them with the command above.") in page


def test_n_a_cells_are_explained_under_their_own_table(recorded: dict, tmp_path: Path) -> None:
    body = json.loads(recorded["results"].read_text())
    row = next(r for r in body["rows"] if r["model"] == "rsf")
    row["metrics"][f"cal_slope_{H}"] = {"mean": None, "se": None, "ci_low": None, "ci_high": None}
    row["reasons"][f"cal_slope_{H}"] = "the Cox fit did not converge"
    row["reasons"]["net_benefit_365_0.5"] = "not followed until 365"  # not in the table: no note
    (tmp_path / "na.json").write_text(json.dumps(body))
    write_page(load_results(tmp_path / "na.json"), tmp_path / "na.md")
    page = (tmp_path / "na.md").read_text()
    assert "Metrics shown as n/a" not in page, "the main table's notes name none of the calibration metrics"
    notes = page.split("Calibration and clinical utility shown as n/a:\n\n")[1].split("\n\n")[0]
    assert notes == f"- clinical x rsf, cal_slope_{H}: n/a because the Cox fit did not converge"
    line = next(line for line in _section(page) if "| rsf |" in line)
    assert line.split(" | ")[4] == "n/a"


def test_the_policy_block_says_which_horizon_and_thresholds_the_table_shows(recorded: dict, tmp_path: Path) -> None:
    body = json.loads(recorded["results"].read_text())
    body["protocol"]["policy"].update({"table_thresholds": [0.05, 0.3], "calibration_horizon": 365})
    (tmp_path / "other.json").write_text(json.dumps(body))
    results = load_results(tmp_path / "other.json")
    assert results.protocol.policy.calibration_at == 365
    assert json.loads(results.to_text())["protocol"]["policy"]["table_thresholds"] == [0.05, 0.3]
    page = page_files(results, tmp_path / "other.md")[tmp_path / "other.md"]
    assert "## Calibration and clinical utility at 365 days" in page
    assert "| net benefit at p = 0.05 [95 % CI] | vs treat-all at p = 0.05 [95 % CI] |" in page
    rsf = next(r for r in body["rows"] if r["model"] == "rsf")["metrics"]
    line = next(line for line in page.split("## Calibration")[1].splitlines() if "| rsf |" in line)
    assert line.split(" | ")[9] == _ci(rsf["net_benefit_365_0.3"])


def test_the_decision_curves_show_the_best_rows_that_read_no_truth_and_the_baseline() -> None:
    from bench.report.calibration_table import decision_rows
    from bench.report.leaderboard import ranked
    from bench.report.results import Results

    results = Results.from_json(json.loads((BOARDS / "synthetic_mm.json").read_text()))
    order = ranked(results.rows)
    readers = [row for row in order if row.reads_truth]
    assert readers and readers[0] is order[0], "the oracle leads the page"
    shown = decision_rows(results, order)
    best = [row for row in order if not row.reads_truth][:3]
    base = results.find(results.baseline.key_for(best[0].key))
    assert shown == best + ([base] if base not in best else [])
    assert not any(row.reads_truth for row in shown)


def test_each_mlflow_run_has_the_metrics_and_a_decision_curve(recorded: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(recorded["tracking_uri"])
    outcome = recorded["outcome"]
    for result in outcome.results:
        logged = client.get_run(result.run_id).data.metrics
        for name in (f"oe_{H}", f"cal_slope_{H}", f"ici_{H}", "dcal_p", f"net_benefit_{H}_0.1",
                     f"net_benefit_all_{H}_0.1", f"net_benefit_gain_{H}_0.2", "net_benefit_1825_0.5"):  # fmt: skip
            assert logged[name] == pytest.approx(result.evaluation.metrics[name].mean, nan_ok=True), name
            assert f"{name}_ci_low" in logged
        figures = {a.path for a in client.list_artifacts(result.run_id, "figures")}
        assert {"figures/decision_curve.png", "figures/calibration.png"} <= figures
        folder = recorded["folder"] / result.run_id
        folder.mkdir()
        png = Path(client.download_artifacts(result.run_id, "figures/decision_curve.png", str(folder)))
        assert png.read_bytes().startswith(b"\x89PNG")


def test_the_calibration_panels_name_the_rows_slope_and_ici(recorded: dict) -> None:
    from bench.report.row_figures import calibration_note

    evaluation = recorded["outcome"].results[0].evaluation
    slope, ici = evaluation.metrics[f"cal_slope_{H}"].mean, evaluation.metrics[f"ici_{H}"].mean
    assert calibration_note(evaluation, H) == f"slope {slope:.2f}, ICI {ici:.3f}"
