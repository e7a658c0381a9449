"""llmtune: train and use transformer language models from a YAML config."""

__version__ = "0.1.0"
