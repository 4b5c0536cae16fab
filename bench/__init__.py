"""prognosis-bench: a benchmark harness for survival prognosis from PET/CT.

The sub-packages follow the data flow (see docs/architecture.md): ``data`` (cohorts, images, masks,
the synthetic generator), ``protocol`` (splits, in-fold preprocessing, tuning, evaluation, runner,
grid), ``stats`` (metric engine, bootstrap, validity study), ``report`` (results files, leaderboard,
MLflow), ``plugins`` (registries, options, labels, weights).
"""

__version__ = "0.2.0"
