"""Every error the harness raises on purpose.

The CLI prints the message as one line and exits with ``exit_code``; a traceback
is shown only with ``--debug``. Messages quote the bad value and say what to do.
"""

from __future__ import annotations


class BenchError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code = 1


class UsageError(BenchError):
    """A bad name or option on the command line (argparse's exit code)."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A registry key that does not exist."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        self.name = name
        self.choices = choices
        listed = ", ".join(choices) if choices else "(none installed)"
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {listed}")


class PluginLoadError(BenchError):
    """A plugin is registered but its module cannot be imported."""


class SplitError(BenchError):
    """A split file is missing, tampered with, or made for another cohort."""


class DataError(BenchError):
    """A cohort or its inputs are unusable."""


class InputError(DataError):
    """A user's input file or manifest entry is bad: the message names the patient and the file."""

    exit_code = 2


class ExtractionError(BenchError):
    """Feature extraction failed for some patients (the message lists them)."""


class WeightsError(BenchError):
    """Pretrained weights could not be found or loaded (the message names the file and where to get it)."""


class ModelError(BenchError):
    """A learner failed to fit or predict."""
