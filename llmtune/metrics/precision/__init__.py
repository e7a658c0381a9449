"""The `evaluate` module of llmtune's `precision` metric; load it with `llmtune.metrics.load("precision")`.

This folder is a regular package only so that setuptools ships `precision.py` in the wheel; evaluate
copies `precision.py` into its modules cache and imports that copy, never this package.
"""
