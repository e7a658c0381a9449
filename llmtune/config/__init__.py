"""Config loading: YAML file + `key.path=value` overrides -> validated schema object.

Usage:
    cfg = load_config("finetune", "configs/classification/sst2-quickstart.yaml", ["training.learning_rate=3e-5"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llmtune.config.loader import RawConfig, apply_overrides, dump_yaml, read_yaml
from llmtune.config.schema import SCHEMAS
from llmtune.config.validate import check_generation, check_training, schema_problems, secret_problems
from llmtune.errors import ConfigError, UserError

__all__ = ["load_config", "save_config", "infer_command", "read_yaml", "RawConfig", "SCHEMAS"]

# Input paths read from a config file resolve against that file's folder. Files are always resolved;
# model/tokenizer names only when the resolved folder exists, since they may also be Hub ids.
FILE_KEYS = (("data", "train_file"), ("data", "validation_file"), ("data", "test_file"))
# task: seq2seq's parallel text files: data.train_file: {source: train.en, target: train.fr}.
FILE_KEYS += tuple((*key, side) for key in FILE_KEYS for side in ("source", "target"))
NAME_OR_PATH_KEYS = (("model", "name_or_path"), ("tokenizer", "name_or_path"))


def _get(data: dict[str, Any], key: tuple[str, ...]) -> Any:
    for part in key:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _set(data: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    for part in key[:-1]:
        data = data[part]
    data[key[-1]] = value


def _resolve_paths(raw: RawConfig) -> None:
    """Make the file's relative input paths relative to its folder (before overrides, which stay CWD-relative)."""
    if raw.source is None:
        return
    base = raw.source.parent
    for key in FILE_KEYS + NAME_OR_PATH_KEYS:
        value = _get(raw.data, key)
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        candidate = (base / value).resolve()
        if key in FILE_KEYS or candidate.exists():
            _set(raw.data, key, str(candidate))


def load_config(
    command: str,
    path: str | Path | None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    check_model: bool = True,
    on_this_machine: bool = True,
    flags: dict[str, Any] | None = None,
) -> BaseModel:
    """Load, override and validate the config of one command.

    Args:
        command: a key of `SCHEMAS` (finetune, pretrain-mlm, ...).
        path: the YAML file, or None to start from `base` alone.
        overrides: `key.path=value` strings, applied after the file and before validation.
        base: a starting mapping when there is no file (e.g. built from command-line flags).
        check_model: also check the model against the command, data.max_length and the tokenizer
            (`llmtune.config.model_checks`; reads config.json, never weights).
        on_this_machine: the config will train on this machine, so settings it cannot honour (bf16 without
            a GPU) are errors; False (`llmtune validate`) makes them warnings.
        flags: values of the command's command-line options (schema fields made with `schema.flag`, e.g.
            overwrite, resume), set after the file and overrides, which may not set them.

    Returns:
        The validated schema object; `training` values are coerced to TrainingArguments' types.

    Raises:
        UserError: the file is missing, not UTF-8 or not valid YAML.
        ConfigError: every problem found, listed together (including duplicate keys and access tokens).
    """
    if command not in SCHEMAS:
        raise UserError(f"unknown command '{command}'; configs exist for: {', '.join(SCHEMAS)}.")
    raw = read_yaml(path) if path is not None else RawConfig(dict(base or {}))
    _resolve_paths(raw)
    trained = None
    if command == "evaluate":
        from llmtune.config.training_view import evaluate_view, require_model

        trained = evaluate_view(raw)  # a training config: its training-only keys dropped, before the overrides
    apply_overrides(raw, list(overrides or []))
    if trained is not None:
        require_model(raw, trained)
    schema = SCHEMAS[command]
    source = str(raw.source) if raw.source else None
    # First, so a token never reaches a message, the resolved config or a saved file.
    problems = secret_problems(raw) + _flag_problems(schema, raw)
    raw.data.update(flags or {})
    try:
        cfg = schema.model_validate(raw.data)
    except ValidationError as exc:
        problems += schema_problems(schema, raw, exc)
        training = raw.data.get("training")
        if isinstance(training, dict) and "training" in schema.model_fields:
            problems += check_training(raw, training, on_this_machine)[1]
        generation = raw.data.get("generation")
        if isinstance(generation, dict) and "generation" in schema.model_fields:
            problems += check_generation(raw, generation)
        raise ConfigError(problems, source=source) from None
    if trained is not None:
        cfg._trained = trained
    if "training" in schema.model_fields:
        # On the machine that trains, the run's own TrainingArguments (user keys over the task's and the
        # machine's defaults) is built here, once: a conflict with llmtune's defaults fails validation.
        cfg.training, training_problems = check_training(raw, cfg.training, on_this_machine, trial=not on_this_machine)
        problems += training_problems
        if on_this_machine and not training_problems:
            problems += _set_up_run(cfg)
    if "generation" in schema.model_fields:
        problems += check_generation(raw, cfg.generation)
    if check_model:
        from llmtune.config.model_checks import model_problems

        problems += model_problems(command, cfg, raw)
    if problems:
        raise ConfigError(problems, source=source)
    return cfg


def _set_up_run(cfg: BaseModel) -> list[str]:
    """Build the run's TrainingArguments (`llmtune.runs.run_setup`) onto `cfg`; its refusal is a problem.

    With --resume, the checkpoint it will continue is looked up now (nothing is deleted): under
    `precision: auto` its run's precision is kept where this machine can continue it.
    """
    from llmtune import runs

    checkpoint = runs.resume_checkpoint(cfg.training["output_dir"]) if cfg.resume else None
    try:
        cfg._setup = runs.run_setup(cfg, checkpoint)
    except UserError as exc:
        return [str(exc)]
    return []


def _flag_problems(schema: type[BaseModel], raw: RawConfig) -> list[str]:
    """Command-line options written as config keys (`overwrite: true`): each is reported and dropped from `raw.data`.

    They are options of one invocation, not of the run: a saved llmtune.yaml that said `overwrite: true`
    would replace its own output directory when run again.
    """
    from llmtune.config.schema import flag_option

    problems = []
    for name, field in schema.model_fields.items():
        option = flag_option(field)
        if option and name in raw.data:
            problems.append(f"{raw.where((name,))}: this is the {option} option of the command, not a config key; remove it and pass {option} instead.")
            del raw.data[name]
    return problems


def save_config(cfg: BaseModel, path: Path) -> None:
    """Write the resolved config (overrides and defaults applied) as YAML."""
    dump_yaml(cfg.model_dump(mode="json"), path)


def infer_command(data: dict[str, Any]) -> str:
    """Guess which command a config is for from its top-level keys (for `llmtune validate`).

    Raises:
        UserError: the keys fit no command; pass `--for COMMAND`.
    """
    if "eval" in data and "evaluate" in SCHEMAS:  # before mlm/generation, which evaluate configs may have too
        return "evaluate"
    if "mlm" in data and "pretrain-mlm" in SCHEMAS:
        return "pretrain-mlm"
    if "training" in data:
        return "finetune"
    for key, command in (("prompts", "generate"), ("generation", "generate"), ("eval", "evaluate")):
        if key in data and command in SCHEMAS:
            return command
    raise UserError(f"cannot tell which command this config is for; pass --for with one of: {', '.join(SCHEMAS)}.")
