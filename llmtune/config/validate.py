"""Turning schema and library errors into one list of clear problems."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from llmtune.config.loader import Key, RawConfig

# Keys llmtune adds to `training:` on top of TrainingArguments (for Trainer's EarlyStoppingCallback).
TRAINING_EXTRAS = {"early_stopping_patience": int, "early_stopping_threshold": float}

# TrainingArguments keys that transformers 5 removed, with what to use instead.
RENAMED_TRAINING_KEYS = {
    "evaluation_strategy": "use eval_strategy",
    "overwrite_output_dir": "use the --overwrite flag of the command",
    "logging_dir": "removed in transformers 5; logs go to output_dir",
    "warmup_ratio": "removed in transformers 5; use warmup_steps (a float below 1 is read as a ratio of the total steps)",
    "no_cuda": "use use_cpu: true",
}


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """Return ` Did you mean 'x'?` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `DataSection | None`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_class(arg)
        if found is not None:
            return found
    return None


def _fields_at(schema: type[BaseModel], key: Key) -> list[str]:
    """The valid key names of the section that `key` lives in (for 'did you mean')."""
    cls: type[BaseModel] | None = schema
    for part in key[:-1]:
        field = cls.model_fields.get(part) if cls else None
        cls = _section_class(field.annotation) if field else None
        if cls is None:
            return []
    return list(cls.model_fields)


def schema_problems(schema: type[BaseModel], raw: RawConfig, exc: ValidationError) -> list[str]:
    """Describe each pydantic error with its key path, line, reason and fix."""
    problems = []
    for err in exc.errors():
        key = tuple(str(part) for part in err["loc"])
        where = raw.where(key)
        kind = err["type"]
        if kind == "extra_forbidden":
            valid = _fields_at(schema, key)
            hint = suggest(key[-1], valid) or (f" Valid keys here: {', '.join(valid)}." if valid else "")
            problems.append(f"{where}: unknown key.{hint}")
        elif kind == "missing":
            problems.append(f"{where}: required key is missing; add it.")
        elif kind == "value_error":
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}.")
        else:
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r}).")
    return problems


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a hint we cannot resolve just is not type-checked
        return {}


def check_training(raw: RawConfig, training: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check `training:` against `transformers.TrainingArguments` (names, value types, its own checks).

    Args:
        raw: the raw config, for line numbers.
        training: the `training:` mapping.

    Returns:
        The mapping with values coerced to the field types (e.g. "3e-5" -> 3e-05), and the problems found.
    """
    from transformers import TrainingArguments

    from llmtune.modeling import launched_on_cpus

    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    hints = _type_hints(TrainingArguments)
    hints.update(TRAINING_EXTRAS)
    problems: list[str] = []
    coerced: dict[str, Any] = {}
    for name, value in training.items():
        where = raw.where(("training", name))
        if name in RENAMED_TRAINING_KEYS:
            problems.append(f"{where}: not a TrainingArguments field in transformers 5: {RENAMED_TRAINING_KEYS[name]}.")
            continue
        if name not in fields and name not in TRAINING_EXTRAS:
            hint = suggest(name, fields | set(TRAINING_EXTRAS)) or " See transformers.TrainingArguments for the valid keys."
            problems.append(f"{where}: unknown key: not a transformers.TrainingArguments field.{hint}")
            continue
        try:
            coerced[name] = TypeAdapter(hints[name]).validate_python(value) if name in hints else value
        except ValidationError as exc:
            problems.append(f"{where}: {exc.errors()[0]['msg']} (got {value!r}).")
        except Exception:  # noqa: BLE001 - a type pydantic cannot check (e.g. a torch class) is left to TrainingArguments
            coerced[name] = value
    if "output_dir" not in training:
        problems.append(f"{raw.where(('training',))}: training.output_dir is required: where the model and metrics are saved.")
    if problems:
        return coerced, problems
    checked = {k: v for k, v in coerced.items() if k not in TRAINING_EXTRAS}
    if "use_cpu" not in checked and launched_on_cpus():
        checked["use_cpu"] = True  # as llmtune.runs.training_arguments does: DDP on a machine without GPUs
    try:
        TrainingArguments(**checked)
    except (ValueError, TypeError) as exc:
        problems.append(f"training: transformers.TrainingArguments rejects these settings: {exc}")
    return coerced, problems


def generation_fields() -> set[str]:
    """The public field names of `transformers.GenerationConfig` in the installed version."""
    from transformers import GenerationConfig

    return {k for k in GenerationConfig().to_dict() if not k.startswith("_") and k != "transformers_version"}


def check_generation(raw: RawConfig, generation: dict[str, Any]) -> list[str]:
    """Check `generation:` against `transformers.GenerationConfig`: field names, then its own `validate(strict=True)`.

    Catches impossible combinations (num_return_sequences > num_beams without sampling, temperature
    without do_sample, ...) before any model is loaded.

    Returns:
        The problems found (empty when the settings are valid).
    """
    from transformers import GenerationConfig

    fields = generation_fields()
    problems = []
    for name in generation:
        if name not in fields:
            hint = suggest(name, fields) or " See transformers.GenerationConfig for the valid keys."
            problems.append(f"{raw.where(('generation', name))}: unknown key: not a transformers.GenerationConfig field.{hint}")
    if problems:
        return problems
    try:
        GenerationConfig(**generation).validate(strict=True)
    except (ValueError, TypeError) as exc:
        reason = " ".join(line.strip("- ") for line in str(exc).strip().splitlines() if line.strip())
        reason = reason.split(" If you're using a pretrained model")[0]
        problems.append(f"{raw.where(('generation',))}: transformers.GenerationConfig rejects these settings: {reason}")
    return problems
