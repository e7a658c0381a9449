"""`llmtune finetune` with `task: causal-lm`: next-token prediction (GPT-2 and any AutoModelForCausalLM) with Trainer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune import runs
from llmtune.tasks import registry
from llmtune.errors import UserError
from llmtune.lm import IGNORE_INDEX, causal_preprocess, lm_metrics
from llmtune.modeling import load_model, pad_multiple, training_device_type

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from llmtune.config.schema import FinetuneConfig

logger = logging.getLogger(__name__)


class CausalLMCollator:
    """Pad a batch and use the inputs as labels, with -100 on padding only.

    `DataCollatorForLanguageModeling(mlm=False)` masks every token equal to the pad id. GPT-2 has no
    pad token, so pad = EOS, and that collator would also stop scoring the real EOS tokens that end
    each document, so the model never learns where text ends. The attention mask tells them apart.
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = 8):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        features = [{k: v for k, v in ex.items() if k in ("input_ids", "attention_mask")} for ex in examples]
        batch = self.tokenizer.pad(features, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return batch


def paragraphs(ds: Dataset, column: str) -> Dataset:
    """Regroup a .txt file's lines into paragraphs (blank-line separated), keeping the line breaks.

    A .txt file loads one row per line with the newline dropped; appending EOS to each line would
    teach the model to stop after every line and never to write one. A paragraph (a speech, a
    section) is the document instead, as with datasets' `sample_by="paragraph"`. The regrouping is a
    `map` over the whole file in one batch (a paragraph may span any number of lines), so it is cached
    like the steps after it and a second run re-tokenizes nothing.
    """
    return ds.map(_group_paragraphs, batched=True, batch_size=None, fn_kwargs={"column": column}, remove_columns=ds.column_names, desc="paragraphs")


def _group_paragraphs(batch: dict[str, list], column: str) -> dict[str, list]:
    docs: list[str] = []
    current: list[str] = []
    for line in batch[column]:
        line = "" if line is None else str(line)
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return {column: docs}


def flattening_collator(model: Any) -> Any:
    """transformers' `DataCollatorWithFlattening`, with `use_cache=False` in every batch when the model takes it.

    A batch's rows go end to end in one row, position_ids restarting at 0 for each, the first label of each
    row -100, no padding. transformers' masking code only looks for such packed rows when there is no KV
    cache; GPT-2 (and others) create one whenever `use_cache` is on, which is their config default, in
    training too. Without `use_cache=False` every row would silently attend to the rows before it.
    """
    import inspect

    from transformers import DataCollatorWithFlattening

    takes_cache = "use_cache" in inspect.signature(model.forward).parameters

    class FlatteningCollator(DataCollatorWithFlattening):
        def __call__(self, features: list[dict[str, Any]], return_tensors: str | None = None, separator_id: int | None = None) -> dict[str, Any]:
            batch = super().__call__(features, return_tensors, separator_id)
            if takes_cache:
                batch["use_cache"] = False
            return batch

    return FlatteningCollator(return_tensors="pt")


def flattening_problem(model: Any, collator: Any) -> str | None:
    """Why padding-free batches from `collator` (see `flattening_collator`) would be wrong for `model`; None when right.

    The rule, checked against transformers 5.23: with rows flattened into one, position_ids restarting per row
    and no attention_mask, the boundaries are respected by (a) the flash-attention kernels, which read the
    sequence starts from position_ids, and (b) the sdpa, eager and flex paths of models that build their mask
    with `transformers.masking_utils` (`create_causal_mask` and kin find the packed rows from position_ids,
    `find_packed_sequence_indices`, when no KV cache is passed). The model's forward must take `position_ids`.
    Models that build their masks by hand, or carry state along the sequence (Mamba, RWKV), would let every row
    see the rows before it; for them, llmtune pads instead.

    The rule is then confirmed on the model itself: two short rows are run apart and as one `collator` batch
    (eval mode, no gradient). The flattened logits must match the separate ones, while the same batch with
    positions that do not restart (what a model ignoring the boundaries computes) must not.

    Returns:
        None, or a short reason for the log.
    """
    import inspect
    import sys

    from transformers import masking_utils

    if "position_ids" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward takes no position_ids"
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    if not attention.startswith("flash_attention"):
        builders = ("create_causal_mask", "create_sliding_window_causal_mask")
        modules = {sys.modules.get(type(m).__module__) for m in model.modules()}
        if not any(getattr(mod, name, None) is getattr(masking_utils, name) for mod in modules for name in builders):
            return f"{type(model).__name__} builds its attention mask without transformers.masking_utils"
    return _probe_flattening(model, collator)


def _probe_flattening(model: Any, collator: Any) -> str | None:
    import torch

    vocab = int(getattr(model.config, "vocab_size", 0) or 0) or 2
    rows = [[i % vocab for i in range(3, 6)], [i % vocab for i in range(7, 12)]]
    device = next(model.parameters()).device
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in collator([{"input_ids": r} for r in rows]).items() if k != "labels"}
    no_restart = {**batch, "position_ids": torch.arange(batch["input_ids"].shape[1], device=device).unsqueeze(0)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            apart = torch.cat([model(input_ids=torch.tensor([r], device=device)).logits[0] for r in rows]).float()
            together = model(**batch).logits[0].float()
            leaky = model(**no_restart).logits[0].float()
    finally:
        model.train(was_training)
    error = (together - apart).abs().max().item()
    wrong = (leaky - apart).abs().max().item()
    if error > 1e-3 * max(wrong, 1e-6) and error > 1e-5:
        return f"{type(model).__name__} ({getattr(model.config, '_attn_implementation', None)} attention) lets flattened rows see each other"
    return None


TASK = registry.task("causal-lm")


def load_texts(cfg: FinetuneConfig) -> DatasetDict:
    """Load the text (a .txt file's lines regrouped into paragraphs when packing) and carve out validation.

    Raises:
        DataError: missing files or column.
    """
    splits = data_lib.load_splits(cfg.data, {"data.text_column": cfg.data.text_column})
    if cfg.data.packing:
        files = {"train": cfg.data.train_file, "validation": cfg.data.validation_file, "test": cfg.data.test_file}
        for role, path in files.items():
            if isinstance(path, str) and data_lib.file_format(path, cfg.data.format) == ".txt":
                splits[role] = paragraphs(splits[role], cfg.data.text_column)
    return data_lib.with_validation(splits, cfg.data, cfg.seed)


def prepare_data(cfg: FinetuneConfig, checkpoint: str | None) -> tuple[Any, DatasetDict]:
    """Load the text (`load_texts`) and tokenize it.

    Returns:
        The run's tokenizer (its pad token set, EOS if it had none) and the tokenized splits with labels:
        fixed-length blocks (packing) or one row per text.

    Raises:
        DataError: missing files or column. UserError: a tokenizer without an EOS token.
    """
    splits = load_texts(cfg)

    train_texts = (str(t) for t in splits["train"][cfg.data.text_column] if t is not None)
    tokenizer = runs.run_tokenizer(cfg, checkpoint, train_texts)
    if tokenizer.eos_token is None:
        raise UserError("tokenizer: it has no EOS token, which a causal LM needs to end documents; use a GPT-style tokenizer.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none; the collator keeps real EOS tokens scored
    return tokenizer, data_lib.tokenize_for_lm(splits, tokenizer, cfg.data, packing=cfg.data.packing, add_eos=True, labels=True)


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    """Train a causal language model, report token-weighted validation perplexity and save it.

    Args:
        cfg: the validated finetune config with `task: causal-lm` (`cfg.overwrite` / `cfg.resume`: what to do
            with an existing output directory).

    Returns:
        The final metrics: eval_perplexity, eval_loss, ... (validation), test_* (with test data) and train_*.

    Raises:
        UserError: bad data, unreachable model, or an output directory that must not be touched.
    """
    from transformers import set_seed

    checkpoint = runs.check_output_dir(cfg.training["output_dir"], cfg.overwrite, cfg.resume, cfg)
    set_seed(cfg.seed)

    tokenizer, encoded = TASK.function("prepare_data")(cfg, checkpoint)
    model = load_model(TASK.model_class(), cfg.model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    logger.info(
        "causal-lm: %d training and %d validation %s of up to %d tokens",
        len(encoded["train"]),
        len(encoded["validation"]),
        "blocks" if cfg.data.packing else "rows",
        cfg.data.max_length,
    )
    collator, defaults = TASK.function("collator")(cfg, model, tokenizer, encoded)
    trainer = runs.make_trainer(
        cfg, model, tokenizer, encoded, checkpoint,
        training_defaults=defaults,
        # Only the padded fallback groups by length; LengthGroupedTrainer makes that grouping seeded and
        # resumable (transformers' own is neither). Every other strategy is transformers' own.
        trainer_class=TASK.trainer(),
        data_collator=collator,
        compute_metrics=lm_metrics,
        preprocess_logits_for_metrics=causal_preprocess,
    )
    metrics = runs.train_and_evaluate(trainer, checkpoint, encoded.get("test"))
    return runs.finish_run(trainer, cfg, metrics, TASK)


def batching(cfg: FinetuneConfig, model: Any, tokenizer: Any, encoded: Any) -> tuple[Any, dict[str, Any]]:
    """The collator and TrainingArguments defaults for the run's data; sets the splits' format in place.

    - packing (default): fixed-length blocks with their labels, read as torch tensors, so a batch is a
      stack of rows (`default_data_collator`): no per-step padding, one shape for every step.
    - packing: false, on a model where `flattening_problem` finds none: padding-free batches
      (`DataCollatorWithFlattening`: the rows end to end, positions restarting per row, -100 on each row's
      first label), so no compute is spent on padding.
    - otherwise: rows padded per batch (`CausalLMCollator`), batches grouped by length
      (`train_sampling_strategy: group_by_length`) so little is padding; `training:` may override it.
    """
    from transformers import default_data_collator

    if cfg.data.packing:
        for role in list(encoded):
            encoded[role] = encoded[role].with_format("torch")
        return default_data_collator, {}
    collator = flattening_collator(model)
    problem = flattening_problem(model, collator)
    if problem is None:
        logger.info("causal-lm: padding-free batches (rows flattened, positions restarting per row)")
        return collator, {}
    logger.info("causal-lm: rows padded per batch and grouped by length (%s)", problem)
    return CausalLMCollator(tokenizer, pad_multiple(training_device_type(cfg.training))), {"train_sampling_strategy": "group_by_length"}
