"""The progress output as a sink of the runner: one bar over every (row, fold) fit, on stderr.

Being given this sink is what turns progress on for the whole run: the runner then also lets each
extractor draw its own bar and the cluster announce where the work goes (``RowSink.shows_progress``).
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm.auto import tqdm

from bench.plugins.specs import Features, PluginSpec
from bench.protocol.runner import RowSink, RunOutcome


class ProgressSink(RowSink):
    """A bar of the folds fitted so far, named by the row each one belongs to.

    The bar appears with the first finished fold, after the extractors' own bars are done.
    """

    shows_progress = True

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file
        self.total = 0
        self.bar: tqdm | None = None

    def start(self, outcome: RunOutcome, plan: list[tuple[Features, list[PluginSpec]]]) -> None:
        rows = sum(len(models) for _, models in plan)
        self.total = rows * len(outcome.split.folds(outcome.cohort))

    def fold(self, features: Features, model: PluginSpec) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc="evaluate", unit="fold", file=self.file or sys.stderr)
        self.bar.set_postfix_str(f"{features.label} x {model.label}", refresh=False)
        self.bar.update()

    def finish(self, outcome: RunOutcome, interrupted: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
