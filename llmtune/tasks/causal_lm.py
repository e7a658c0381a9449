"""`llmtune finetune` with `task: causal-lm`: next-token prediction (GPT-2 and any AutoModelForCausalLM) with Trainer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune import runs
from llmtune.errors import UserError
from llmtune.lm import IGNORE_INDEX, causal_preprocess, lm_metrics
from llmtune.modeling import load_model

if TYPE_CHECKING:
    from datasets import Dataset

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
    section) is the document instead, as with datasets' `sample_by="paragraph"`.
    """
    from datasets import Dataset

    docs: list[str] = []
    current: list[str] = []
    for line in ds[column]:
        line = "" if line is None else str(line)
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return Dataset.from_dict({column: docs})


def run(cfg: FinetuneConfig, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train a causal language model, report token-weighted validation perplexity and save it.

    Args:
        cfg: the validated finetune config with `task: causal-lm`.
        overwrite: replace a non-empty output directory (once the new run is complete).
        resume: continue from the last complete checkpoint (of an interrupted or a completed run).

    Returns:
        The final metrics: eval_perplexity, eval_loss, ... (validation), test_* (with test data) and train_*.

    Raises:
        UserError: bad data, unreachable model, or an output directory that must not be touched.
    """
    from transformers import AutoModelForCausalLM, set_seed

    checkpoint = runs.check_output_dir(cfg.training["output_dir"], overwrite, resume, cfg)
    set_seed(cfg.seed)

    splits = data_lib.load_splits(cfg.data, {"data.text_column": cfg.data.text_column})
    if cfg.data.packing:
        files = {"train": cfg.data.train_file, "validation": cfg.data.validation_file, "test": cfg.data.test_file}
        for role, path in files.items():
            if path and Path(path).suffix.lower() == ".txt":
                splits[role] = paragraphs(splits[role], cfg.data.text_column)
    splits = data_lib.with_validation(splits, cfg.data, cfg.seed)

    train_texts = (str(t) for t in splits["train"][cfg.data.text_column] if t is not None)
    tokenizer = runs.run_tokenizer(cfg, checkpoint, train_texts)
    if tokenizer.eos_token is None:
        raise UserError("tokenizer: it has no EOS token, which a causal LM needs to end documents; use a GPT-style tokenizer.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none; the collator keeps real EOS tokens scored
    encoded = data_lib.tokenize_for_lm(splits, tokenizer, cfg.data, packing=cfg.data.packing, add_eos=True)
    model = load_model(AutoModelForCausalLM, cfg.model, tokenizer)
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

    trainer = runs.make_trainer(
        cfg, model, tokenizer, encoded, checkpoint,
        data_collator=CausalLMCollator(tokenizer),
        compute_metrics=lm_metrics,
        preprocess_logits_for_metrics=causal_preprocess,
    )
    metrics = runs.train_and_evaluate(trainer, checkpoint, encoded.get("test"))
    return runs.finish_run(trainer, cfg, metrics, "finetune", "text-generation")
