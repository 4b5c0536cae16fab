"""Plugins: entry-point registries, option parsing and constraints, resolved specs, and row identity (labels)."""
