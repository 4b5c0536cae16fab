"""Survival-learner plugins: one file per learner; the file name is the registry key."""
