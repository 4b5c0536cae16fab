"""Leaderboard rendering; the generated leaderboards live beside this file as ``<dataset>.md``."""
