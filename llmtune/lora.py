"""LoRA through the `peft` library: wrap a loaded model for training, and save what a LoRA run leaves behind.

`runs.make_trainer` wraps the model of every training task here (`wrap`) when the config has a `peft:`
section, and `runs.finish_run` saves the adapter, the trained model's config.json and, with
`peft.merge: true`, a merged plain-transformers copy (`save_merged`). Nothing here knows a task by
name: the registry row's `peft_task_type` says which peft task type (and so which PeftModel class) fits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.errors import UserError

if TYPE_CHECKING:
    from llmtune.config.schema import PeftSection
    from llmtune.tasks.registry import Task

logger = logging.getLogger(__name__)

# Attention projections by the names transformers' model families give them, for model types peft has no
# default for: llama-style q/k/v_proj, BERT-style query/key/value, GPT-2-style fused c_attn (Conv1D),
# T5-style q/k/v, GPT-NeoX/Falcon-style fused query_key_value, and a few fused qkv spellings.
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "query", "key", "value", "c_attn", "q", "k", "v", "query_key_value", "qkv_proj", "Wqkv", "qkv")

# Where the merged copy of a LoRA run goes, inside its output directory.
MERGED_DIR = "merged"


def _adaptable(module: Any) -> bool:
    """A layer LoRA can adapt that `target_modules` may name: a Linear or transformers' Conv1D (GPT-2's projections)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def linear_names(model: Any) -> list[str]:
    """The distinct last components of the model's Linear/Conv1D module names (what `target_modules` usually names)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if name and _adaptable(module)})


def _matches(name: str, target: str) -> bool:
    # peft's rule for a list entry (tuners_utils.check_target_module_exists): the full name or a dotted suffix.
    return name == target or name.endswith(f".{target}")


def target_modules(model: Any, section: PeftSection) -> list[str] | str:
    """The `target_modules` of the run's LoraConfig, with `auto` resolved for this model.

    auto: peft's own default for the model type (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`), else
    the attention projections found among the model's Linear/Conv1D modules (`ATTENTION_NAMES`).

    Raises:
        UserError: a named module matches no module of the model, or names a layer LoRA cannot adapt, or auto
            finds no attention projection; the message lists the model's Linear module names to choose from.
    """
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    named = [(name, module) for name, module in model.named_modules() if name]
    choices = ", ".join(linear_names(model))
    model_type = getattr(model.config, "model_type", None)
    if section.target_modules == "auto":
        known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if known is not None:
            return known
        found = [t for t in ATTENTION_NAMES if any(_matches(name, t) and _adaptable(module) for name, module in named)]
        if not found:
            raise UserError(
                f"peft.target_modules: auto knows no attention projections for model type '{model_type}'. Name the "
                f"modules to adapt, e.g. peft.target_modules: [...], among this model's Linear layers: {choices}."
            )
        return found
    missing = [t for t in section.target_modules if not any(_matches(name, t) for name, _ in named)]
    unfit = [
        t for t in section.target_modules
        if t not in missing and not any(_matches(name, t) and _adaptable(module) for name, module in named)
    ]
    if missing or unfit:
        import difflib

        names = {name.rsplit(".", 1)[-1] for name, _ in named}
        problems = [
            f"{t!r} matches no module" + "".join(f" (did you mean {c!r}?)" for c in difflib.get_close_matches(t, names, n=1))
            for t in missing
        ]
        problems += [f"{t!r} is not a Linear layer LoRA can adapt" for t in unfit]
        raise UserError(
            f"peft.target_modules: in this {model_type} model, {'; '.join(problems)}. Choose among its Linear layers: "
            f"{choices}; or set peft.target_modules: auto."
        )
    return list(section.target_modules)


def _head_modules(model: Any) -> list[str]:
    """The classification head's top-level modules: what the task model adds to its base model (trained in full)."""
    base = getattr(model, "base_model_prefix", "")
    return [
        name for name, child in model.named_children()
        if name != base and any(True for _ in child.parameters())
    ]


def wrap(model: Any, section: PeftSection, task: Task, base_name: str | None = None, revision: str | None = None) -> Any:
    """Wrap `model` in a PeftModel whose LoRA adapters (and classification head) are the only trainable weights.

    Args:
        model: the loaded pretrained model of the task (`AutoModelFor...`).
        section: the config's `peft:` section.
        task: the registry row; its `peft_task_type` picks peft's task type (None: a plain PeftModel).
        base_name: the base model as the adapter's config records it (`base_model_name_or_path`): a Hub id
            or an absolute local path; None keeps what peft reads from the model.
        revision: the Hub revision of the base model, recorded in the adapter's config.

    Returns:
        The PeftModel (the base weights inside it are the loaded ones, frozen).

    Raises:
        UserError: bad `peft.target_modules` (see `target_modules`), or peft refuses the settings.
    """
    from peft import LoraConfig, get_peft_model

    targets = target_modules(model, section)
    modules_to_save = None
    if task.peft_task_type == "SEQ_CLS":
        # peft's SEQ_CLS task type already trains (and saves in the adapter) heads named classifier or score
        # (BERT, RoBERTa, GPT-2, Llama...); other heads (BART's classification_head) are named here.
        modules_to_save = [name for name in _head_modules(model) if name not in ("classifier", "score")] or None
    conv1d = isinstance(targets, list) and all(
        type(module).__name__ == "Conv1D" for name, module in model.named_modules() if any(_matches(name, t) for t in targets)
    )
    config = LoraConfig(
        task_type=task.peft_task_type,
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        # transformers' Conv1D (GPT-2) stores its weight transposed; peft would otherwise warn and flip it per layer.
        fan_in_fan_out=conv1d,
    )
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning no user can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = get_peft_model(model, config, revision=revision)
    except ValueError as exc:
        raise UserError(f"peft: peft refuses these LoRA settings: {exc}. Choose among the model's Linear layers: {', '.join(linear_names(model))}.") from exc
    if base_name is not None:
        wrapped.peft_config["default"].base_model_name_or_path = base_name
    trainable, total = wrapped.get_nb_trainable_parameters()
    logger.info("LoRA: trainable params: %s || all params: %s || trainable%%: %.4f", f"{trainable:,d}", f"{total:,d}", 100 * trainable / total)
    return wrapped


def keep_generation_config_on_base(model: Any) -> None:
    """Move a generation config set on the PeftModel (Seq2SeqTrainer sets `generation_config`) onto the base model.

    Set on the wrapper it is a plain attribute that the base model's generate() never reads (peft's
    seq2seq generate does not copy it over): evaluation would decode with the base model's defaults. On
    the base model, the wrapper still reads it (peft forwards missing attributes), and merge keeps it.
    """
    if "generation_config" in vars(model):
        model.get_base_model().generation_config = vars(model).pop("generation_config")


def base_name(name_or_path: str) -> str:
    """The base model as an adapter records it: an existing local folder as an absolute path, else the Hub id as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def parameter_counts(model: Any) -> dict[str, Any]:
    """`trainable_params`, `total_params` and `trainable_percent` of a PeftModel, for metrics.json (peft's own count)."""
    trainable, total = model.get_nb_trainable_parameters()
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": round(100 * trainable / total, 4)}


def save_model_config(model: Any, folder: Path) -> None:
    """Write the trained model's config.json (labels, the task head's architecture) and generation config beside the adapter.

    A loader builds the base model with this config (`num_labels`, `id2label`) before applying the adapter.
    """
    base = model.get_base_model()
    # What save_pretrained would record: the class trained here, not the one the base checkpoint was saved as
    # (bert-base-uncased says BertForMaskedLM; its classifier run is a BertForSequenceClassification).
    base.config.architectures = [type(base).__name__]
    base.config.save_pretrained(folder)
    generation = _generation_config(model)
    if generation is not None:
        generation.save_pretrained(folder)


def _generation_config(model: Any) -> Any:
    """The generation config training evaluated with (see `keep_generation_config_on_base`), for a model that generates."""
    base = model.get_base_model()
    return getattr(base, "generation_config", None) if base.can_generate() else None


def save_merged(model: Any, tokenizer: Any, folder: Path) -> None:
    """Fold the adapters into the base weights (`merge_and_unload`) and save a plain transformers model in `folder`.

    The merge changes `model`'s layers in place (no second copy of the weights in memory): call it after the
    adapter is saved, as the last use of the model.
    """
    merged = model.merge_and_unload()
    merged.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def adapter_card(task: Task, output_dir: Path, base: str, merged: bool) -> tuple[str, str]:
    """The model card's paragraph and "Use" snippet for a LoRA run's output directory (the adapter).

    Returns:
        (about, usage) for `runs.write_model_card`.
    """
    about = (
        f"A LoRA adapter (peft) of `{base_name(base)}`: only the adapter weights (and a classification head) are stored "
        "here, with the trained model's config.json; load it over the base model with peft."
    )
    if merged:
        about += f" `{MERGED_DIR}/` holds the same model with the adapter merged in: plain transformers loads it without peft."
    from llmtune.runs import python_string

    folder, base = python_string(output_dir), python_string(base_name(base))
    usage = f"""from peft import PeftModel
from transformers import AutoConfig, {task.auto_class}

config = AutoConfig.from_pretrained({folder})  # the trained model's labels and settings
base = {task.auto_class}.from_pretrained({base}, config=config)
model = PeftModel.from_pretrained(base, {folder}).merge_and_unload()"""
    return about, usage


def merged_card(task: Task, folder: Path, base: str) -> tuple[str, str]:
    """The model card's paragraph and "Use" snippet for `merged/` (a plain transformers model).

    Returns:
        (about, usage) for `runs.write_model_card`.
    """
    about = (
        f"`{base_name(base)}` with a LoRA adapter (the parent folder) merged into its weights: a complete transformers "
        "model that `from_pretrained` and `pipeline()` load without peft."
    )
    from llmtune.runs import python_string

    usage = f"""from transformers import {task.auto_class}

model = {task.auto_class}.from_pretrained({python_string(folder)})"""
    return about, usage
