"""The `evaluate` module of llmtune's `chrf` metric; load it with `llmtune.metrics.load("chrf")`.

This folder is a regular package only so that setuptools ships `chrf.py` in the wheel; evaluate
copies `chrf.py` into its modules cache and imports that copy, never this package.
"""
