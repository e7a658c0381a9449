"""The `evaluate` module of llmtune's `rouge` metric; load it with `llmtune.metrics.load("rouge")`.

This folder is a regular package only so that setuptools ships `rouge.py` in the wheel; evaluate
copies `rouge.py` into its modules cache and imports that copy, never this package.
"""
