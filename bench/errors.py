"""Every error the harness raises on purpose.

The CLI prints the message as one line and exits with ``exit_code``; a traceback
is shown only with ``--debug``. Messages quote the bad value and say what to do.

Exit codes: 2 for anything the user can fix in the input or the command line (a name,
an option, a manifest, an image, a split, a weights file, a plugin that cannot be
imported); 1 for a run that failed although its input was good (a learner or an
extraction crashed); 3 for a bug in bench itself (``bench.cli.main``).
"""

from __future__ import annotations

import dataclasses
from typing import Any


class BenchError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code = 1  # a run that failed on good input; bad input or usage is 2


class BadInputError(BenchError):
    """Anything the user fixes in the input or the command line: exit code 2."""

    exit_code = 2


class UsageError(BadInputError):
    """A bad name or option on the command line (argparse's exit code)."""


class UnknownNameError(UsageError):
    """A registry key that does not exist."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        self.name = name
        self.choices = choices
        listed = ", ".join(choices) if choices else "(none installed)"
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {listed}")


class PluginLoadError(BadInputError):
    """A plugin is registered but its module cannot be imported."""


class SplitError(BadInputError):
    """A split file is missing, tampered with, or made for another cohort."""


class DataError(BadInputError):
    """A cohort or its inputs are unusable."""


class InputError(DataError):
    """A user's input file or manifest entry is bad: the message names the patient and the file."""


class ExtractionError(BenchError):
    """Feature extraction failed for some patients (the message lists them)."""


class ExtractionInputError(InputError, ExtractionError):
    """Extraction failed for some patients, every one because of bad input (a file, an option): exit 2, not 1."""


class WeightsError(BadInputError):
    """Pretrained weights could not be found or loaded (the message names the file and where to get it)."""


class ModelError(BenchError):
    """A learner failed to fit or predict.

    A learner says what went wrong (``reason``) and, when it can, who failed (``ModelError.of``);
    the harness adds where (``place``), so that the message reads
    "model 'coxnet' (alpha=0.01, ...) failed to fit in fold r0f3 of row radiomics x coxnet: <reason>".
    Raised with a bare message and never placed, it reads as that message.
    """

    def __init__(
        self,
        reason: str,
        *,
        model: str | None = None,
        action: str = "failed",
        fold: str | None = None,
        row: str | None = None,
    ):
        self.reason = reason
        self.model = model  # "model 'coxnet' (alpha=0.01, l1_ratio=0.5)"
        self.action = action  # "failed to fit", "failed to predict", "could not be tuned"
        self.fold = fold
        self.row = row
        super().__init__(self._message())

    @classmethod
    def of(cls, model: Any, action: str, reason: str) -> ModelError:
        """The error of a model instance (its ``name`` and config), e.g. ``of(self, "failed to fit", ...)``."""
        return cls(reason, model=describe_model(model), action=action)

    def place(
        self, *, model: str | None = None, action: str | None = None, fold: str | None = None, row: str | None = None
    ) -> ModelError:
        """Add what the harness knows; what is already set is kept. Returns ``self``, to be re-raised."""
        if self.model is None and model is not None:
            self.model, self.action = model, action or self.action
        self.fold = self.fold or fold
        self.row = self.row or row
        self.args = (self._message(),)
        return self

    def _message(self) -> str:
        if self.model is None and self.fold is None and self.row is None:
            return self.reason
        where = (f" in fold {self.fold}" if self.fold else "") + (f" of row {self.row}" if self.row else "")
        reason = " ".join(self.reason.split())  # one line, whatever the library's message looked like
        return f"{self.model or 'the model'} {self.action}{where}: {reason}"


class RowsFailedError(BenchError):
    """Some rows' learners failed; the other rows were evaluated and recorded all the same."""

    def __init__(self, failures: list[ModelError], finished: int):
        self.failures = list(failures)
        self.finished = finished
        total = finished + len(self.failures)
        listed = "; ".join(str(f) for f in self.failures)
        super().__init__(f"{len(self.failures)} of {total} rows failed, {finished} recorded: {listed}")


def describe_model(model: Any) -> str:
    """``model 'coxnet' (alpha=0.01, l1_ratio=0.5, ...)``: the name and every option, as typed on the command line."""
    config = getattr(model, "config", None)
    options = []
    if dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            options.append(f"{f.name}={'/'.join(map(str, value)) if isinstance(value, tuple) else value}")
    name = getattr(model, "name", type(model).__name__)
    return f"model {name!r}" + (f" ({', '.join(options)})" if options else "")
