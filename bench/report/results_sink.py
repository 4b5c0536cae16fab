"""The results file (and a grid's page) as a sink of the runner: written once the run ends.

Only the rows that finished are written, even when others failed, and never an empty file; a run that
stopped on an error or an interruption writes nothing (the previous file stays as it was).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.plugins.labels import Baseline, RowKey
from bench.protocol.runner import RowSink, RunOutcome
from bench.report.page import write_page
from bench.report.results import Results, save_results


class ResultsSink(RowSink):
    """Builds the run's ``Results`` at its end (``results``) and writes them to ``path`` when given.

    ``path`` may be a function of the finished outcome (a grid's default page is named after the cohort);
    with ``page``, the page and its figures are rendered beside the results file (``written``); ``published``
    gives rows the values a paper published for them (a grid config's).
    """

    def __init__(self, baseline: Baseline, source: str, path: Path | Callable[[RunOutcome], Path] | None = None,
                 page: bool = False, published: dict[RowKey, dict[str, Any]] | None = None) -> None:  # fmt: skip
        self.baseline, self.source, self.path, self.page = baseline, source, path, page
        self.published = published or {}
        self.results: Results | None = None
        self.written: list[Path] = []

    def finish(self, outcome: RunOutcome, interrupted: bool) -> None:
        if interrupted:
            return
        self.results = Results.from_outcome(outcome, self.baseline, self.source, self.published)
        path = self.path(outcome) if callable(self.path) else self.path
        if path is None or not self.results.rows:
            return
        if self.page:
            self.written = [save_results(path.with_suffix(".json"), self.results), *write_page(self.results, path)]
        else:
            self.written = [save_results(path, self.results)]
