"""`llmtune evaluate TRAIN_CONFIG --model DIR`: a training config read as an evaluate config.

A training config already says how its model is scored: its data, seed, tokenizer, `metrics:`,
`mlm:` and `generation:` sections. `evaluate_view` keeps those and drops the keys that only
training reads, before overrides and validation, so line numbers and `key=value` overrides work as
for any evaluate config. Which keys are training-only is derived from the schemas (the top-level
fields of the training command's schema that `EvaluateConfig` lacks), plus the few subkeys both
share a section class for. The model is always `--model`: a training config's own
`model.name_or_path` is where training starts, not what it produced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtune.config.loader import Key, RawConfig
from llmtune.errors import UserError
from llmtune.tasks import registry

logger = logging.getLogger(__name__)

# Subkeys of sections the training and evaluate schemas share (ModelSection, TokenizerSection) that only
# training reads: EvaluateConfig refuses them. model.name_or_path/revision name the pretrained start.
TRAINING_ONLY_SUBKEYS: tuple[Key, ...] = (
    ("model", "name_or_path"),
    ("model", "revision"),
    ("model", "from_config"),
    ("model", "resize_embeddings"),
    ("tokenizer", "train"),
)


@dataclass(frozen=True)
class TrainingSource:
    """The training config an evaluate config was read from.

    Attributes:
        command: the training command the config is for (finetune, pretrain-mlm).
        task: the registry task it trains (None: its `task:` names none).
        where: how messages name that task: `task (line 3)`, or the command for a one-task command.
        ignored: the training-only keys found in it (dotted), in file order.
        output_dir: its `training.output_dir` (where the trained model is), if it has one.
    """

    command: str
    task: registry.Task | None
    where: str
    ignored: tuple[str, ...]
    output_dir: str | None


def training_only_keys(command: str) -> list[Key]:
    """The key paths of a `command` config that evaluate does not read, derived from the two schemas."""
    from llmtune.config.schema import SCHEMAS, flag_option

    schema, evaluate = SCHEMAS[command], SCHEMAS["evaluate"]
    top = [(name,) for name, field in schema.model_fields.items() if name not in evaluate.model_fields and not flag_option(field)]
    return top + list(TRAINING_ONLY_SUBKEYS)


def evaluate_view(raw: RawConfig) -> TrainingSource | None:
    """Turn a training config's raw mapping into an evaluate one, in place (before overrides and validation).

    Args:
        raw: the config as read; a training config is one with `training:` that `infer_command` gives to
            a training command (an evaluate config has `eval:` and no `training:`).

    Returns:
        What was dropped and what it trained, or None (and `raw` untouched) when `raw` is not a training config.
    """
    from llmtune.config import infer_command

    if "training" not in raw.data:
        return None
    command = infer_command(raw.data)
    if command not in registry.training_commands():
        return None
    training = raw.data.get("training")
    output_dir = training.get("output_dir") if isinstance(training, dict) else None
    task, where = _trained_task(command, raw)  # before `task:` is dropped
    ignored = []
    for key in training_only_keys(command):
        parent = raw.data
        for part in key[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and key[-1] in parent:
            del parent[key[-1]]
            ignored.append(key)
    # The line numbers of dropped keys stay in raw.lines: messages below still cite `task (line 3)`.
    for section in ("model", "tokenizer"):
        if raw.data.get(section) == {}:
            del raw.data[section]  # emptied by the view; --model fills model:, the tokenizer defaults to the model's
    ignored.sort(key=lambda key: raw.lines.get(key, 0))
    source = TrainingSource(command, task, where, tuple(".".join(key) for key in ignored), str(output_dir) if output_dir else None)
    logger.info(
        "%s is a %s config: evaluate ignores its training-only keys %s (the model is --model)",
        raw.source, command, ", ".join(source.ignored),
    )
    return source


def _trained_task(command: str, raw: RawConfig) -> tuple[registry.Task | None, str]:
    """The task a training config trains (its `task:`, else the command's default) and how to cite it."""
    from llmtune.config.schema import SCHEMAS

    field = SCHEMAS[command].model_fields.get("task")
    if field is None:
        return registry.task_of(command), f"{raw.source} (a {command} config)"
    name = raw.data.get("task", field.default)
    found = next((row for row in registry.TASKS if row.command == command and row.name == name), None)
    where = raw.where(("task",)) if ("task",) in raw.lines else f"{raw.source} (task: {name}, the default)"
    return found, where


def require_model(raw: RawConfig, source: TrainingSource) -> None:
    """After overrides: the model to evaluate must come from --model (or a model.name_or_path override).

    Raises:
        UserError: no model given, with the config's training.output_dir as the suggestion when it exists.
    """
    model = raw.data.get("model")
    if isinstance(model, dict) and model.get("name_or_path"):
        return
    hint = ""
    if source.output_dir and Path(source.output_dir).expanduser().is_dir():
        hint = f", e.g. --model {source.output_dir} (this config's training.output_dir)"
    elif source.output_dir:
        hint = f" (this config's training.output_dir {source.output_dir} does not exist yet: run llmtune {source.command} {raw.source} first)"
    raise UserError(
        f"{raw.source} is a {source.command} config: its model section is where training starts, not the trained model. "
        f"Pass --model DIR, the trained model directory{hint}."
    )


def task_problems(cfg: Any, model_config: Any) -> list[str]:
    """The model given by --model must be one the training config trains (a cross-check of its `task:`)."""
    source = cfg.trained
    found = registry.by_architecture(model_config)
    if source is None or source.task is None or found is None or found.name == source.task.name:
        return []
    architectures = ", ".join(getattr(model_config, "architectures", None) or [])
    return [
        f"{source.where}: this config trains {source.task.name} ({source.task.words}), but --model "
        f"'{cfg.model.name_or_path}' is {architectures} ({found.words}). Pass --model the output directory of this "
        f"config's run, or evaluate that model with a config for {found.trained_by.removeprefix('llmtune ')}."
    ]
