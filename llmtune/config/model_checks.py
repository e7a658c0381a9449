"""Checks that need the model's config: does the model fit the command, the data and the tokenizer?

They read `config.json` only (`AutoConfig.from_pretrained`, or `AutoConfig.for_model` for
`model.from_config`), never weights, and a tokenizer's files only when `tokenizer.name_or_path` is set.
`load_config` runs them for every command, so `llmtune validate` and the commands themselves stop
before any work with the same message. A Hub id that cannot be reached (offline) skips them with a
note on stderr: the run itself then reports the unreachable model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmtune.config.loader import RawConfig
from llmtune.errors import redact
from llmtune.config.validate import suggest
from llmtune.modeling import is_seq2seq_lm, meta_model
from llmtune.tasks import registry

logger = logging.getLogger(__name__)

# Generation also takes an encoder-decoder language model (llmtune.modeling.is_seq2seq_lm).
SEQ2SEQ_TOO = " or an encoder-decoder language model (T5, BART, Marian: *ForConditionalGeneration, *MTModel)"


def model_problems(command: str, cfg: BaseModel, raw: RawConfig) -> list[str]:
    """Check that the model fits the command, `data.max_length` and the tokenizer, from config files only.

    Args:
        command: the command the config is for (a key of `SCHEMAS`).
        cfg: the schema-validated config.
        raw: the raw config, for line numbers.

    Returns:
        One line per problem (key path, line, reason and fix); empty when all is well or the model's
        config cannot be reached (then a note goes to the log).
    """
    model = getattr(cfg, "model", None)
    if not isinstance(model, BaseModel):
        return []  # no model, or predict's --model (checked, naming the option, when predict loads it)
    config, problems = _model_config(model, raw)
    if config is None:
        return problems
    if command in registry.training_commands():
        problems += _head_problems(command, cfg, config, raw)
        problems += _length_problems(cfg, config, raw)
        problems += _peft_problems(command, cfg, config, raw)
    elif command == "generate" and not is_seq2seq_lm(config):
        needed = registry.by_inference("generate").name
        problems += _kind_problems(needed, model, config, raw, ("model", "name_or_path"), "generate", SEQ2SEQ_TOO)
    elif command == "evaluate" and cfg.eval.kind == "generation" and is_seq2seq_lm(config):
        pass  # an encoder-decoder LM generates too (AutoModelForSeq2SeqLM)
    elif command == "evaluate" and cfg.eval.kind != "auto":
        other = " or set eval.kind: auto (the kind the model's architecture implies)"
        other = (SEQ2SEQ_TOO + "," if cfg.eval.kind == "generation" else "") + other
        needed = registry.evaluation(cfg.eval.kind).model_task
        problems += _kind_problems(needed, model, config, raw, ("eval", "kind"), f"eval.kind {cfg.eval.kind}", other)
    if command == "evaluate" and cfg.trained is not None:
        from llmtune.config.training_view import task_problems

        problems += task_problems(cfg, config)
    if model.from_config is not None:
        problems += _shape_problems(model.from_config, config, raw)
    problems += _vocabulary_problems(command, cfg, config, raw)
    return problems


def _model_config(model: Any, raw: RawConfig) -> tuple[Any, list[str]]:
    """The model's transformers config, built from `model.from_config` or read from `model.name_or_path`.

    Returns:
        (config, problems); config is None when it cannot be had (problems say why, or a note was logged).
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model.from_config is not None:
        fields = dict(model.from_config)
        model_type = fields.pop("model_type")
        where = raw.where(("model", "from_config", "model_type"))
        if model_type not in CONFIG_MAPPING_NAMES:
            hint = suggest(str(model_type), CONFIG_MAPPING_NAMES) or " Use a transformers model type such as bert or gpt2."
            return None, [f"{where}: '{model_type}' is not a transformers model type.{hint}"]
        try:
            return AutoConfig.for_model(model_type, **fields), []
        except Exception as exc:  # noqa: BLE001 - each config class raises its own kinds (ValueError, strict-dataclass errors)
            reason = redact(" ".join(str(exc).split()))
            return None, [f"{raw.where(('model', 'from_config'))}: transformers' {model_type} config rejects these fields: {reason}"]
    name = model.name_or_path
    try:
        return AutoConfig.from_pretrained(name, revision=model.revision, trust_remote_code=model.trust_remote_code), []
    except (OSError, ValueError) as exc:
        if Path(name).expanduser().exists():
            detail = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
            return None, [
                f"{raw.where(('model', 'name_or_path'))}: cannot read the config.json of '{name}': {detail}. "
                "Point it at a Hugging Face model directory (config.json, weights, tokenizer files)."
            ]
        logger.warning(
            "model.name_or_path: '%s' is not a local directory and its config could not be fetched (offline?); "
            "the checks that need the model's config were skipped.",
            name,
        )
        return None, []


def _head_problems(command: str, cfg: Any, config: Any, raw: RawConfig) -> list[str]:
    """The command/task builds a head (AutoModelFor...) this model type must support."""
    task = registry.task_of(command, cfg)
    supported, what = task.model_types(), task.words
    if config.model_type in supported:
        return []
    source = ("model", "from_config", "model_type") if cfg.model.from_config is not None else ("model", "name_or_path")
    named = f" with task: {cfg.task}" if hasattr(cfg, "task") else ""
    examples = ", ".join(t for t in ("bert", "roberta", "gpt2", "llama", "t5", "bart", "marian") if t in supported)
    return [
        f"{raw.where(source)}: model type '{config.model_type}' cannot be trained as {what} ({command}{named}); "
        f"transformers has no such head for it. Use a model type that has one (e.g. {examples})."
    ]


def _peft_problems(command: str, cfg: Any, config: Any, raw: RawConfig) -> list[str]:
    """`peft.target_modules` must name Linear layers of the model (auto: must find some), checked on a weightless model.

    The task's model is built on PyTorch's meta device (shapes only, no memory, no weights read), so
    `llmtune validate` lists the model's module names as the run itself would.
    """
    if getattr(cfg, "peft", None) is None or config.model_type not in registry.task_of(command, cfg).model_types():
        return []
    from llmtune import lora
    from llmtune.errors import UserError

    try:
        model = meta_model(registry.task_of(command, cfg).model_class(), config, cfg.model.trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built here is still checked when the run loads it
        logger.info("peft.target_modules not checked before the run (the model could not be built without weights: %s)", exc)
        return []
    try:
        lora.target_modules(model, cfg.peft)
    except UserError as exc:
        return [f"{raw.where(('peft', 'target_modules'))}: {str(exc).removeprefix('peft.target_modules: ')}"]
    return []


def _positions(config: Any) -> tuple[str, int] | None:
    """The config key holding the model's number of positions, and its value."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            # Configs alias a few names (GPT-2: max_position_embeddings -> n_positions); name the one users write.
            return getattr(config, "attribute_map", {}).get(name, name), value
    return None


def _length_problems(cfg: Any, config: Any, raw: RawConfig) -> list[str]:
    """`data.max_length` must fit the model's position embeddings.

    From scratch, a longer block crashes in the embedding lookup; over a pretrained model it used to be
    capped silently by the tokenizer. Both are refused: the user asked for a length the model cannot take.
    """
    found = _positions(config)
    # task: seq2seq truncates sources and targets separately; the encoder and decoder share the positions limit.
    keys = ("max_source_length", "max_target_length") if getattr(cfg, "task", None) == "seq2seq" else ("max_length",)
    if found is None:
        return []
    name, positions = found
    problems = []
    for key in keys:
        length = getattr(cfg.data, key)
        if length <= positions:
            continue
        default = "" if key in cfg.data.model_fields_set else " (the default)"
        fix = f"Set data.{key}: {positions} or less"
        fix += f", or raise model.from_config.{name}." if cfg.model.from_config is not None else " (the model cannot attend further)."
        problems.append(f"{raw.where(('data', key))}: {length} tokens{default}, but the model has only {positions} positions ({name}). {fix}")
    return problems


def _shape_problems(fields: dict[str, Any], config: Any, raw: RawConfig) -> list[str]:
    """A model built from scratch needs hidden_size divisible by num_attention_heads (each head gets an equal slice)."""
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if "head_dim" in fields or not isinstance(hidden, int) or not isinstance(heads, int) or heads <= 0 or hidden % heads == 0:
        return []
    aliases = getattr(config, "attribute_map", {})
    hidden_key, heads_key = aliases.get("hidden_size", "hidden_size"), aliases.get("num_attention_heads", "num_attention_heads")
    return [
        f"{raw.where(('model', 'from_config', hidden_key))}: {hidden_key} {hidden} is not divisible by {heads_key} {heads} "
        f"(each attention head gets hidden/heads dimensions). Use e.g. {hidden_key}: {-(-hidden // heads) * heads} "
        f"or a {heads_key} that divides {hidden}."
    ]


def _tokenizer_size(cfg: Any, raw: RawConfig) -> tuple[int | None, tuple[str, ...] | None]:
    """How many ids the run's tokenizer can produce, and the key that sets it (None: the model's own tokenizer)."""
    tokenizer = cfg.tokenizer
    if tokenizer.train is not None:
        return tokenizer.train.vocab_size, ("tokenizer", "train", "vocab_size")
    if tokenizer.name_or_path is None:
        return None, None
    from transformers import AutoTokenizer

    try:
        return len(AutoTokenizer.from_pretrained(tokenizer.name_or_path)), ("tokenizer", "name_or_path")
    except (OSError, ValueError) as exc:
        if Path(tokenizer.name_or_path).expanduser().exists():
            detail = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
            raise _TokenizerUnreadable(f"{raw.where(('tokenizer', 'name_or_path'))}: cannot load '{tokenizer.name_or_path}': {detail}.") from exc
        logger.warning("tokenizer.name_or_path: '%s' could not be loaded (offline?); its size was not checked against the model.", tokenizer.name_or_path)
        return None, None


class _TokenizerUnreadable(Exception):
    """A local tokenizer directory that does not load: a problem to report, not a note."""


def _vocabulary_problems(command: str, cfg: Any, config: Any, raw: RawConfig) -> list[str]:
    """The tokenizer's ids must all have an embedding row, and a pretrained model keeps the vocabulary it learned.

    `model.resize_embeddings: true` (training commands only) allows a pretrained model to get a new or larger
    vocabulary: the embedding matrix is resized and the new rows start random.
    """
    model, tokenizer = cfg.model, cfg.tokenizer
    training = command in registry.training_commands()
    resize = training and model.resize_embeddings
    if model.name_or_path is not None and tokenizer.train is not None and training and not resize:
        return [
            f"{raw.where(('tokenizer', 'train'))}: a newly trained vocabulary over the pretrained model "
            f"'{model.name_or_path}': its token ids would pick embedding rows learned for other tokens. Remove "
            "tokenizer.train to use the model's own tokenizer, or set model.resize_embeddings: true to re-learn the "
            "embeddings for a new vocabulary on purpose."
        ]
    try:
        size, key = _tokenizer_size(cfg, raw)
    except _TokenizerUnreadable as exc:
        return [str(exc)]
    vocab = model.from_config.get("vocab_size") if model.from_config is not None else getattr(config, "vocab_size", None)
    if size is None or not isinstance(vocab, int) or size <= vocab:
        return []
    what = f"tokenizer.train.vocab_size {size}" if key[1] == "train" else f"the tokenizer '{tokenizer.name_or_path}' ({size} tokens)"
    if model.from_config is not None:
        return [
            f"{raw.where(('model', 'from_config', 'vocab_size'))}: {vocab} embedding rows, fewer than {what}: ids past "
            f"{vocab - 1} have no embedding. Remove model.from_config.vocab_size (it then follows the tokenizer) or raise it to {size}."
        ]
    if resize:
        return []
    fix = "Use the model's own tokenizer (remove tokenizer.name_or_path)"
    fix += ", or set model.resize_embeddings: true to add randomly initialised rows on purpose." if training else "; inference cannot add embedding rows."
    return [
        f"{raw.where(key)}: {what} is larger than the {vocab} embedding rows of '{model.name_or_path}': ids past {vocab - 1} "
        f"have no trained embedding. {fix}"
    ]


def _kind_problems(needed: str, model: Any, config: Any, raw: RawConfig, key: tuple[str, ...], use: str, other: str) -> list[str]:
    """An inference use needs a model with the right head (a classifier's head cannot generate text)."""
    from llmtune.modeling import architecture_kind

    wanted = registry.task(needed)
    kind = architecture_kind(config)
    architectures = ", ".join(getattr(config, "architectures", None) or []) or f"model type {config.model_type}"
    if kind is None and wanted.inference == "generate" and config.model_type not in wanted.model_types():
        # No architectures saved: a model type without a text-generation head cannot generate at all.
        kind = f"not {wanted.words}"
    elif kind is None or kind == needed:
        return []
    described = registry.task(kind).words if kind in registry.task_names() else kind
    return [
        f"{raw.where(key)}: {use} needs {wanted.words}, but '{model.name_or_path}' is {architectures} ({described}); "
        f"its missing head would be newly initialised and give meaningless output. Use {wanted.words} "
        f"(e.g. an output directory of {wanted.trained_by}){other}."
    ]
