"""Stage 5, statistics: the metric engine, bootstrap summaries and paired differences, the validity study."""
