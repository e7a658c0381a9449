"""The `evaluate` module of llmtune's `accuracy` metric; load it with `llmtune.metrics.load("accuracy")`.

This folder is a regular package only so that setuptools ships `accuracy.py` in the wheel; evaluate
copies `accuracy.py` into its modules cache and imports that copy, never this package.
"""
