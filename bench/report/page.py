"""A leaderboard page and its figures: what ``bench grid``, ``bench run --results`` and ``bench leaderboard`` write.

Beside ``<name>.md``:

- ``<name>.forest.svg``: every row's paired C-index difference to its baseline with its 95 % CI and
  Holm-adjusted p, in rank order;
- ``<name>.km.svg``: the Kaplan-Meier curves of the predicted risk tertiles of the best row whose features
  read no simulated truth (``Row.reads_truth``), the y-axis labelled with the cohort's endpoint (results files
  made before risk groups were kept have none);
- ``<name>.decision.svg``: the decision curves at the calibration table's horizon (net benefit against the
  threshold probability) of the best rows whose features read no simulated truth and of the baseline, with
  treat-all and treat-none (results files made before calibration was computed have none).

Everything is rendered from the results file alone and byte-identical from one rendering to the next, so
``bench leaderboard --check`` verifies the figures as it verifies the page.
"""

from __future__ import annotations

from pathlib import Path

from bench.report.calibration_table import decision_curves
from bench.report.files import stale_diff, write_atomic
from bench.report.leaderboard import paired_comparisons, ranked, render
from bench.report.results import Results, Row


def forest_path(page: Path) -> Path:
    return page.with_name(f"{page.stem}.forest.svg")


def kaplan_meier_path(page: Path) -> Path:
    return page.with_name(f"{page.stem}.km.svg")


def decision_path(page: Path) -> Path:
    return page.with_name(f"{page.stem}.decision.svg")


def figure_paths(page: Path) -> tuple[Path, ...]:
    """Every figure a page can have, whether or not this one has it."""
    return forest_path(page), kaplan_meier_path(page), decision_path(page)


def illustrated_row(results: Results) -> Row | None:
    """The best-ranked row whose features read no simulated truth (a ceiling, never the row a page illustrates)."""
    return next((r for r in ranked(results.rows) if not r.reads_truth), None)


def page_files(results: Results, page: Path, source: str | None = None) -> dict[Path, str]:
    """Every file of the page: the markdown and its figures, path -> text."""
    from bench.report import figures
    from bench.report.row_figures import kaplan_meier_title

    files: dict[Path, str] = {}
    forest = forest_figure(results)
    if forest is not None:
        files[forest_path(page)] = figures.svg_text(forest)
    best = illustrated_row(results)
    row = best if best is not None and best.risk_groups and results.outcomes is not None else None
    if row is not None:
        groups = [int(c) for c in row.risk_groups]
        figure = figures.kaplan_meier_figure(
            results.outcomes.time, results.outcomes.event, groups, kaplan_meier_title(row.key),
            results.protocol.policy.time_unit, results.protocol.policy.endpoint,
        )  # fmt: skip
        files[kaplan_meier_path(page)] = figures.svg_text(figure)
    decision = decision_figure(results)
    if decision is not None:
        files[decision_path(page)] = figures.svg_text(decision)
    links = {
        "forest": forest_path(page).name if forest is not None else None,
        "km": kaplan_meier_path(page).name if row is not None else None,
        "km_row": str(best.key) if best is not None else None,
        "decision": decision_path(page).name if decision is not None else None,
        "km_missing": "its results file predates risk groups: regenerate it for the figure"
        if best is not None and row is None
        else None,
    }
    return {page: render(results, source, links), **files}


def forest_figure(results: Results):
    """The forest plot of the page's comparisons with the baseline, best row on top; None without any."""
    from bench.report import figures

    compared = paired_comparisons(results)
    rows = [row for row in ranked(results.rows) if row.key in compared]
    if not rows:
        return None
    labels, differences, lows, highs, notes = [], [], [], [], []
    for row in rows:
        d, holm = compared[row.key]
        labels.append(str(row.key))
        differences.append(d.difference)
        lows.append(d.ci_low)
        highs.append(d.ci_high)
        notes.append(f"p {d.p_value:.3f}, Holm {holm:.3f}")
    return figures.forest_figure(
        labels, differences, lows, highs,
        f"{results.protocol.dataset}: C-index difference to the baseline ({results.baseline.describe()})".replace(
            "`", ""
        ),
        "C-index difference to the baseline, paired bootstrap 95 % CI",
        notes,
    )  # fmt: skip


def decision_figure(results: Results):
    """The decision curves of the page's calibration table; None when its results have no such table."""
    from bench.report import figures

    curves = decision_curves(results, ranked(results.rows))
    if curves is None:
        return None
    unit = results.protocol.policy.time_unit
    return figures.decision_curve_figure(
        curves.thresholds, curves.labels, curves.mean, curves.low, curves.high, curves.treat_all,
        f"{results.protocol.dataset}: decision curves at {curves.horizon:g} {unit}",
        f"threshold probability p (predicted risk at {curves.horizon:g} {unit})",
    )  # fmt: skip


def write_page(results: Results, page: Path, source: str | None = None) -> list[Path]:
    """Write the page and its figures (each atomically); a figure the page no longer has is removed."""
    files = page_files(results, page, source)
    for path, text in files.items():
        write_atomic(path, text)
    for stale in figure_paths(page):
        if stale not in files:
            stale.unlink(missing_ok=True)
    return list(files)


def stale_page(results: Results, page: Path, source: str | None = None) -> list[str]:
    """What differs between the files on disk and the page regenerated from ``results``: a diff for the
    markdown, one line for a figure (SVG diffs say nothing to a reader); empty when everything is current."""
    files = page_files(results, page, source)
    problems = []
    for path, text in files.items():
        if path.suffix == ".md":
            diff = stale_diff(text, path)
            if diff is not None:
                problems.append(diff)
        elif not path.is_file():
            problems.append(f"{path} is missing\n")
        elif path.read_text() != text:
            problems.append(f"{path} differs from the regenerated figure\n")
    for extra in figure_paths(page):
        if extra not in files and extra.exists():
            problems.append(f"{extra} is not part of the regenerated page; remove it\n")
    return problems
