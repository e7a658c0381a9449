"""`llmtune pretrain-mlm`: masked-language-model pretraining with Trainer, from scratch or continued.

From scratch: a WordPiece tokenizer trained on the training text and a model built from
`model.from_config` (BERT unless model_type says otherwise). Continued (domain-adaptive):
`model.name_or_path` with its own tokenizer. Training batches are masked at random every epoch;
the validation set is masked once with the run's seed, so its perplexity is comparable across runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune import lm, runs
from llmtune.tasks import registry
from llmtune.errors import UserError
from llmtune.modeling import context_length, load_model, model_positions, pad_multiple, training_device_type

if TYPE_CHECKING:
    from datasets import DatasetDict

    from llmtune.config.schema import PretrainMLMConfig

logger = logging.getLogger(__name__)


def load_texts(cfg: PretrainMLMConfig) -> DatasetDict:
    """The train and validation text splits (validation carved out of train when there is none).

    Raises:
        DataError: missing files or text column.
        DataError: no validation data.
    """
    splits = data_lib.load_splits(cfg.data, {"data.text_column": cfg.data.text_column})
    return data_lib.with_validation(splits, cfg.data, cfg.seed)


def encode(cfg: PretrainMLMConfig, splits: DatasetDict, tokenizer: Any) -> DatasetDict:
    """Tokenize (packed or line by line) and mask the validation split once, with the run's seed (`llmtune.lm.encode_masked`).

    Returns:
        `train` (unmasked; masked per batch by the collator) and `validation` (input_ids + labels),
        plus `test` when there is test data.
    """
    return lm.encode_masked(splits, tokenizer, cfg.data, cfg.mlm, cfg.seed)


TASK = registry.task("masked-lm")


def prepare_data(cfg: PretrainMLMConfig, checkpoint: str | None) -> tuple[Any, DatasetDict]:
    """Load the text, carve out validation, tokenize, and mask the evaluation splits once (`encode`).

    Returns:
        The run's tokenizer and the encoded splits (see `encode`).
    """
    splits = load_texts(cfg)
    train_texts = (str(text) for text in splits["train"][cfg.data.text_column] if text is not None)
    tokenizer = runs.run_tokenizer(cfg, checkpoint, train_texts)
    return tokenizer, encode(cfg, splits, tokenizer)


def collator(cfg: PretrainMLMConfig, model: Any, tokenizer: Any, encoded: DatasetDict) -> tuple[Any, dict[str, Any]]:
    """The masking collator (`llmtune.lm.MaskingCollator`) and no run-time TrainingArguments defaults.

    The datasets hold only what the collator needs; Trainer keeps offset_mapping/special_tokens_mask for
    masking (the registry row's remove_unused_columns: false). Training masks come from (seed, epoch,
    batch), not the global RNG, so a resumed run masks as an uninterrupted one.
    """
    multiple = pad_multiple(training_device_type(cfg.training), cfg.mlm.pad_to_multiple_of)
    masking = lm.MaskingCollator(tokenizer, cfg.mlm.probability, cfg.mlm.whole_word, multiple, batch_seed=cfg.seed)
    return masking, {}


def run(cfg: PretrainMLMConfig) -> dict[str, Any]:
    """Pretrain a masked LM, evaluate it (masked-token accuracy, perplexity) and save it.

    Args:
        cfg: the validated pretrain-mlm config (`cfg.overwrite` / `cfg.resume`: what to do with an existing
            output directory).

    Returns:
        The final metrics: eval_perplexity, eval_token_accuracy, ... (validation), test_* and train_*.

    Raises:
        UserError: bad data, unreachable model, or an output directory that must not be touched.
    """
    from transformers import set_seed

    checkpoint = runs.check_output_dir(cfg.training["output_dir"], cfg.overwrite, cfg.resume, cfg)
    set_seed(cfg.seed)

    tokenizer, encoded = TASK.function("prepare_data")(cfg, checkpoint)
    model = load_model(TASK.model_class(), cfg.model, tokenizer)
    block = context_length(tokenizer, None, cfg.data.max_length)
    positions = model_positions(model.config)
    if positions is not None and positions < block:
        # Also refused by `llmtune.config.model_checks` before the run, from config.json alone.
        raise UserError(
            f"data.max_length: {block} tokens per example, but the model has {positions} positions "
            f"(max_position_embeddings). Lower data.max_length or raise model.from_config.max_position_embeddings."
        )
    logger.info("%d training and %d validation examples of up to %d tokens", len(encoded["train"]), len(encoded["validation"]), block)

    masking, defaults = TASK.function("collator")(cfg, model, tokenizer, encoded)
    trainer = runs.make_trainer(
        cfg, model, tokenizer, encoded, checkpoint,
        training_defaults=defaults,
        trainer_class=TASK.trainer(),
        callbacks=[lm.masking_epoch(masking)],
        data_collator=masking,
        preprocess_logits_for_metrics=lm.masked_preprocess,
        compute_metrics=lm.lm_metrics,
        compute_loss_func=lm.masked_lm_loss,
    )
    metrics = runs.train_and_evaluate(trainer, checkpoint, encoded.get("test"))
    return runs.finish_run(trainer, cfg, metrics, TASK)
