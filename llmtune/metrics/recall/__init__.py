"""The `evaluate` module of llmtune's `recall` metric; load it with `llmtune.metrics.load("recall")`.

This folder is a regular package only so that setuptools ships `recall.py` in the wheel; evaluate
copies `recall.py` into its modules cache and imports that copy, never this package.
"""
