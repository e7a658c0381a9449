"""`llmtune finetune`: dispatches on `task:` to the task module the registry names for it."""

from __future__ import annotations

from typing import Any

from llmtune.tasks import registry


def run(cfg: Any) -> dict[str, Any]:
    """Fine-tune as `cfg.task` says; see the task modules (`llmtune.tasks.registry.TASKS`) for details."""
    return registry.task(cfg.task).load().run(cfg)
