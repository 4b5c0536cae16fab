"""What a user sees of a bench store in the MLflow UI, checked in a real browser on the URLs `bench ui` prints.

Debian's Chromium (`apt-get install chromium`, which `.ci/run` does) driven by Playwright; skipped, saying so, only
where no Chromium binary exists. With BENCH_SCREENSHOT_DIR set, the comparison view is also saved there as
compare-runs.png (the README's: `BENCH_SCREENSHOT_DIR=docs/images`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from test_ui import running_ui

from bench.testing import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DATASET = "synthetic_mm_tiny"
TIMEOUT_MS = 30_000  # for one page or element to appear: a cold MLflow UI loads a few MB of JavaScript


def as_the_ui_shows(value: float) -> str:
    """A metric as MLflow's compare view prints it (``Utils.formatMetric`` of the UI, JavaScript number strings)."""
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    scale = 1000 if abs(value) < 10 else 100 if abs(value) < 100 else 10
    shown = math.floor(value * scale + 0.5) / scale  # Math.round: halves up
    return str(int(shown)) if shown.is_integer() else repr(shown)


@pytest.fixture
def page(tmp_path: Path):
    if CHROMIUM is None:
        pytest.skip("no Chromium binary (apt-get install chromium); the MLflow UI cannot be checked in a browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.set_default_timeout(TIMEOUT_MS)
            yield tab
        finally:
            browser.close()


def _row_cells(page, header: str) -> list[str]:
    """The cells of the comparison table row headed ``header`` (params and run details), one per run."""
    row = page.locator("tr").filter(has=page.locator("th", has_text=re.compile(rf"^\s*{re.escape(header)}\s*$"))).first
    return [cell.strip() for cell in row.locator("td").all_inner_texts()]


def _metric_cells(page, metric: str) -> list[str]:
    """The values shown beside ``metric`` in the comparison view's metrics grid, left to right (one per run)."""
    return page.evaluate(
        """(metric) => {
            const name = [...document.querySelectorAll('a[title="Plot chart"]')].find(a => a.textContent === metric);
            if (!name) return [];
            const row = name.getBoundingClientRect();
            const middle = row.top + row.height / 2;
            return [...document.querySelectorAll('span')]
                .map(span => [span, span.getBoundingClientRect()])
                .filter(([span, box]) => span.children.length === 0 && box.left > row.right
                        && Math.abs(box.top + box.height / 2 - middle) < 4)
                .sort((a, b) => a[1].left - b[1].left)
                .map(([span]) => span.textContent.trim());
        }""",
        metric,
    )


def _close_assistant(page) -> None:
    """MLflow 3 opens its chat assistant beside every page; it only hides the view in screenshots."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.first.click()


def test_the_mlflow_ui_shows_the_runs_their_comparison_and_a_runs_figures(page, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    made = run_cli(
        "run", "--dataset", DATASET, "--extractor", "clinical", "oracle", "--model", "coxph", "--bootstrap", "50",
        "--baseline", "clinical", "--baseline-model", "coxph", "--tracking-uri", uri, "--quiet",
        "--results", "results.json", "--output-json", "run.json", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    rows = {r["extractor"]: r for r in json.loads((tmp_path / "run.json").read_text())["results"]}
    runs = {r["run_id"]: MlflowClient(uri).get_run(r["run_id"]).data for r in rows.values()}
    shots = tmp_path / "screenshots"

    with running_ui("--port", "0", "--tracking-uri", uri, "--results", "results.json", cwd=tmp_path) as served:
        # The experiment opens on the training runs table; the rows are child runs of the invocation's run.
        page.goto(served.runs_url)
        page.get_by_text("matching runs").wait_for()
        parent = page.get_by_role("gridcell").filter(has_text="bench run").first
        parent.get_by_role("button").first.click()  # expand the invocation: its rows are its child runs
        for row in rows.values():
            page.get_by_role("link", name=row["run_name"]).wait_for()
        page.screenshot(path=shots / "runs.png")

        # The leaderboard's rows side by side: one column per run, in the order of the URL.
        assert served.compare_url, served.lines
        page.goto(served.compare_url)
        page.get_by_text("Comparing 2 Runs").wait_for()
        names = _row_cells(page, "Run Name:")
        assert sorted(names) == sorted(r["run_name"] for r in rows.values()), names
        order = [next(r for r in rows.values() if r["run_name"] == name) for name in names]  # the columns' runs
        assert _row_cells(page, "features") == [r["extractor"] for r in order]  # clinical, oracle
        assert _row_cells(page, "model") == ["coxph", "coxph"]
        for metric in ("c_index", "c_index_vs_baseline"):
            # The baseline row has no c_index_vs_baseline: the UI shows a missing metric as NaN too.
            expected = [as_the_ui_shows(runs[r["run_id"]].metrics.get(metric, math.nan)) for r in order]
            assert _metric_cells(page, metric) == expected, metric
        assert not math.isnan(runs[rows["oracle"]["run_id"]].metrics["c_index_vs_baseline"])  # a row vs the baseline
        _close_assistant(page)
        page.get_by_text("Visualizations", exact=True).click()  # folded: the tables fill the screenshot
        page.get_by_role("switch", name="Parameters - Show diff only").click()
        page.get_by_text("features", exact=True).first.wait_for()
        page.set_viewport_size({"width": 1400, "height": 1150})  # down to c_index_vs_baseline
        page.screenshot(path=shots / "compare-runs.png")
        if os.environ.get("BENCH_SCREENSHOT_DIR"):
            folder = Path(os.environ["BENCH_SCREENSHOT_DIR"])
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shots / "compare-runs.png", folder / "compare-runs.png")

        # A row's figures are artifacts of its run, listed (and served) through the server.
        experiment = served.runs_url.split("/#/experiments/")[1].split("/")[0]
        oracle = rows["oracle"]["run_id"]
        page.goto(f"{served.runs_url.split('/#/')[0]}/#/experiments/{experiment}/runs/{oracle}/artifacts")
        page.get_by_text("metrics.json", exact=True).wait_for()
        page.get_by_text("figures", exact=True).first.click()
        page.get_by_text("kaplan_meier.png", exact=True).wait_for()
        page.get_by_text("kaplan_meier.png", exact=True).click()
        preview = page.locator("img[alt='figures/kaplan_meier.png']").first  # fetched through the server
        preview.wait_for()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
        page.screenshot(path=shots / "artifacts.png")
