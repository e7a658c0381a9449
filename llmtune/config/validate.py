"""Turning schema and library errors into one list of clear problems."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError

from llmtune.config.loader import Key, RawConfig
from llmtune.errors import redact, shown

logger = logging.getLogger(__name__)

# Keys llmtune adds to `training:` on top of TrainingArguments: early stopping (Trainer's
# EarlyStoppingCallback) and `precision` (auto: chosen for the machine, see llmtune.hardware).
TRAINING_EXTRAS = {
    "early_stopping_patience": int,
    "early_stopping_threshold": float,
    "precision": Literal["auto", "bf16", "fp16", "fp32"],
}
# What a TRAINING_EXTRAS key means when it is left out (the --resume check compares configs with these).
TRAINING_EXTRAS_DEFAULTS = {"precision": "auto"}

# TrainingArguments keys that transformers 5 removed, with what to use instead.
RENAMED_TRAINING_KEYS = {
    "evaluation_strategy": "use eval_strategy",
    "overwrite_output_dir": "use the --overwrite flag of the command",
    "logging_dir": "removed in transformers 5; logs go to output_dir",
    "warmup_ratio": "removed in transformers 5; use warmup_steps (a float below 1 is read as a ratio of the total steps)",
    "no_cuda": "use use_cpu: true",
}


# Config keys that would hold a credential, anywhere in a config: from_pretrained's names and the usual ones.
SECRET_KEY_NAMES = {"token", "hub_token", "hf_token", "use_auth_token", "auth_token", "api_key", "password"}


def is_secret_key(key: Key) -> bool:
    """Whether a config key path names a credential: a name above, or a `training:` key ending in `_token`
    (TrainingArguments' convention for its tokens, e.g. hub_token, which it redacts itself in to_dict)."""
    name = str(key[-1]).lower()
    return name in SECRET_KEY_NAMES or (key[0] == "training" and len(key) == 2 and name.endswith("_token"))


def secret_problems(raw: RawConfig) -> list[str]:
    """Find credential keys anywhere in the config, and remove them from `raw.data` so nothing can echo them.

    Tokens come from the environment only: a config is saved next to the model (llmtune.yaml), printed by
    `llmtune validate`, and pickled by Trainer into every training_args.bin.

    Returns:
        One problem per credential key (the value is never part of the message).
    """
    problems: list[str] = []

    def walk(node: Any, prefix: Key) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, prefix)
        if not isinstance(node, dict):
            return
        for name in list(node):
            key = prefix + (str(name),)
            if is_secret_key(key):
                del node[name]
                problems.append(
                    f"{raw.where(key)}: access tokens are not read from configs (a config is saved with the model and "
                    f"printed by `llmtune validate`). Remove this key and put the token in the HF_TOKEN environment "
                    f"variable (or run `hf auth login`)."
                )
            else:
                walk(node[name], key)

    walk(raw.data, ())
    return problems


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
    parts = iter(key[:-1])
    for part in parts:
        field = cls.model_fields.get(part) if cls else None
        cls = _section_class(field.annotation) if field else None
        if cls is None:
            return []
        if typing.get_origin(field.annotation) is dict:
            next(parts, None)  # a mapping of sections (search.space): the next part is the user's own key
    from llmtune.config.schema import flag_option

    return [name for name, field in cls.model_fields.items() if not flag_option(field)]


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
            problems.append(f"{where}: {redact(err['msg'].removeprefix('Value error, '))}.")
        else:
            problems.append(f"{where}: {err['msg']} (got {shown(err.get('input'))}).")
    return problems


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a hint we cannot resolve just is not type-checked
        return {}


# training.report_to integrations llmtune ships an extra for: integration -> (a module any one of which it needs, the extra).
REPORTER_EXTRAS = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard")}


def reporter_problems(raw: RawConfig, training: dict[str, Any]) -> list[str]:
    """A `training.report_to` integration whose package is not installed, with the command that installs it.

    Trainer would only fail once training starts (TensorBoardCallback raises a RuntimeError); here it is
    found before anything loads or is written.
    """
    import importlib.util

    report_to = training.get("report_to")
    named = [report_to] if isinstance(report_to, str) else list(report_to or [])
    problems = []
    for integration, (modules, extra) in REPORTER_EXTRAS.items():
        if integration in named and not any(importlib.util.find_spec(module) for module in modules):
            problems.append(
                f"{raw.where(('training', 'report_to'))}: {integration} needs the {modules[0]} package, which is not installed. "
                f'Install it with: pip install "llmtune[{extra}]" (or remove {integration} from training.report_to).'
            )
    return problems


def check_training(raw: RawConfig, training: dict[str, Any], on_this_machine: bool = True, trial: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Check `training:` against `transformers.TrainingArguments` (names, value types, its own checks) and the machine.

    Args:
        raw: the raw config, for line numbers.
        training: the `training:` mapping.
        on_this_machine: the config is about to train here, so settings this machine cannot honour
            (bf16/fp16/tf32 without a GPU) are problems. False for `llmtune validate`: configs for GPU
            machines are validated in CI without one, so those settings are only warned about.
        trial: also build a TrainingArguments of the user's keys, to report its own checks. False when the
            caller builds the run's real one (`llmtune.runs.run_setup`) right after.

    Returns:
        The mapping with values coerced to the field types (e.g. "3e-5" -> 3e-05), and the problems found.
    """
    from transformers import TrainingArguments

    from llmtune import hardware
    from llmtune.modeling import launched_on_cpus

    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    # String fields TrainingArguments lists the values of (for its argument parser) but does not check itself:
    # a misspelt train_sampling_strategy would silently give the random sampler.
    choices = {f.name: list(f.metadata["choices"]) for f in dataclasses.fields(TrainingArguments) if "choices" in f.metadata}
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
            problems.append(f"{where}: {exc.errors()[0]['msg']} (got {shown(value)}).")
        except Exception:  # noqa: BLE001 - a type pydantic cannot check (e.g. a torch class) is left to TrainingArguments
            coerced[name] = value
        if name in choices and isinstance(coerced.get(name), str) and coerced[name] not in choices[name]:
            problems.append(
                f"{where}: {shown(coerced[name])} is not one of {', '.join(choices[name])}.{suggest(coerced[name], choices[name])}"
            )
    if "output_dir" not in training:
        problems.append(f"{raw.where(('training',))}: training.output_dir is required: where the model and metrics are saved.")
    problems += training_value_problems(raw, coerced)
    problems += reporter_problems(raw, coerced)
    locate = lambda key: raw.where(("training", key))  # noqa: E731 - a one-line adapter for hardware's messages
    problems += hardware.precision_problems(coerced, locate)
    machine_problems = hardware.machine_problems(coerced, hardware.detect(use_cpu=coerced.get("use_cpu") is True), locate)
    if on_this_machine:
        problems += machine_problems
    if problems or not trial:
        return coerced, problems
    for problem in machine_problems:
        logger.warning("%s Only a warning here (a config for a GPU machine is valid); training with it on this machine stops.", problem)
    # TrainingArguments would refuse what this machine lacks; the rest of the config is still checked.
    lacking = (*hardware.GPU_PRECISION_KEYS, "tf32") if machine_problems else ()
    checked = {k: v for k, v in coerced.items() if k not in TRAINING_EXTRAS and k not in lacking}
    if "use_cpu" not in checked and launched_on_cpus():
        checked["use_cpu"] = True  # as llmtune.runs.training_arguments does: DDP on a machine without GPUs
    try:
        TrainingArguments(**checked)
    except (ValueError, TypeError) as exc:
        problems.append(f"training: transformers.TrainingArguments rejects these settings: {redact(str(exc))}")
    return coerced, problems


# TrainingArguments accepts these at 0 or below and then crashes (a batch of 0) or silently trains nothing.
POSITIVE_TRAINING_KEYS = {
    "per_device_train_batch_size": "examples per device per step",
    "per_device_eval_batch_size": "examples per device per evaluation step",
    "gradient_accumulation_steps": "batches added up per optimizer step",
}


def training_value_problems(raw: RawConfig, training: dict[str, Any]) -> list[str]:
    """Values TrainingArguments accepts but that cannot train: batch sizes below 1, no steps at all.

    Args:
        raw: the raw config, for line numbers.
        training: the `training:` mapping, values already coerced to TrainingArguments' types.

    Returns:
        The problems found.
    """
    problems = []
    for name, meaning in POSITIVE_TRAINING_KEYS.items():
        value = training.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1:
            problems.append(f"{raw.where(('training', name))}: must be at least 1 ({meaning}), got {value}. Set it to 1 or more.")
    max_steps = training.get("max_steps", -1)
    epochs = training.get("num_train_epochs", 3.0)  # TrainingArguments' default
    if isinstance(max_steps, int) and max_steps == 0:
        problems.append(
            f"{raw.where(('training', 'max_steps'))}: 0 steps trains nothing. Set a positive number of steps, or remove it "
            "(-1, the default) to train for num_train_epochs."
        )
    elif isinstance(max_steps, int) and max_steps < 0 and isinstance(epochs, (int, float)) and epochs <= 0:
        problems.append(
            f"{raw.where(('training', 'num_train_epochs'))}: {epochs} epochs and no max_steps trains nothing (the saved model "
            "would be untrained). Set num_train_epochs above 0, or a positive training.max_steps."
        )
    return problems


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
    from llmtune.generation import generation_config

    fields = generation_fields()
    problems = []
    for name in generation:
        if name not in fields:
            hint = suggest(name, fields) or " See transformers.GenerationConfig for the valid keys."
            problems.append(f"{raw.where(('generation', name))}: unknown key: not a transformers.GenerationConfig field.{hint}")
    if problems:
        return problems
    try:
        generation_config(generation)  # as the command will build it, minus the model's own defaults
    except (ValueError, TypeError) as exc:
        reason = " ".join(line.strip("- ") for line in str(exc).strip().splitlines() if line.strip())
        reason = reason.split(" If you're using a pretrained model")[0]
        problems.append(f"{raw.where(('generation',))}: transformers.GenerationConfig rejects these settings: {redact(reason)}")
    return problems
