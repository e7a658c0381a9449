"""The `evaluate` module of llmtune's `f1` metric; load it with `llmtune.metrics.load("f1")`.

This folder is a regular package only so that setuptools ships `f1.py` in the wheel; evaluate
copies `f1.py` into its modules cache and imports that copy, never this package.
"""
