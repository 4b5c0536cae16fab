"""Stages 2 and 4, the protocol: frozen splits, in-fold preprocessing, nested tuning, evaluation, runner and grid."""
