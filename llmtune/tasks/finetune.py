"""`llmtune finetune`: dispatches on `task:` to the module that wires transformers for it."""

from __future__ import annotations

from importlib import import_module
from typing import Any

TASK_MODULES = {
    "classification": "llmtune.tasks.classification",
    "causal-lm": "llmtune.tasks.causal_lm",
    "seq2seq": "llmtune.tasks.seq2seq",
}


def run(cfg: Any, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Fine-tune as `cfg.task` says; see the task modules for details."""
    return import_module(TASK_MODULES[cfg.task]).run(cfg, overwrite=overwrite, resume=resume)
