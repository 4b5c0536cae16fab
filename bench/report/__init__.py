"""Stage 6, reporting: results files (the source), the leaderboard rendered from them, MLflow tracking (a sink)."""
