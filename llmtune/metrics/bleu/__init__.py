"""The `evaluate` module of llmtune's `bleu` metric; load it with `llmtune.metrics.load("bleu")`.

This folder is a regular package only so that setuptools ships `bleu.py` in the wheel; evaluate
copies `bleu.py` into its modules cache and imports that copy, never this package.
"""
