"""prognosis-bench: a benchmark harness for survival prognosis from PET/CT."""

__version__ = "0.1.0"
