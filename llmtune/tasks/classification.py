"""`llmtune finetune` with `task: classification`: a sequence classifier trained with Trainer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune import runs
from llmtune.metrics.classification import build_compute_metrics
from llmtune.tasks import registry
from llmtune.modeling import load_model, pad_multiple, training_device_type

if TYPE_CHECKING:
    from datasets import DatasetDict

    from llmtune.config.schema import FinetuneConfig

logger = logging.getLogger(__name__)

TASK = registry.task("classification")


def load_data(cfg: FinetuneConfig) -> DatasetDict:
    """Load the splits, number the labels and carve out validation (stratified): the rows before tokenizing.

    Returns:
        The splits (train, validation, maybe test) with their text columns and a `labels` ClassLabel column
        whose names are the label names in id order.

    Raises:
        DataError: missing files or columns, bad labels.
    """
    columns = {"data.text_column": cfg.data.text_column, "data.text_pair_column": cfg.data.text_pair_column, "data.label_column": cfg.data.label_column}
    splits = data_lib.load_splits(cfg.data, columns)
    splits, _ = data_lib.encode_labels(splits, cfg.data)
    return data_lib.with_validation(splits, cfg.data, cfg.seed, stratify_by="labels")


def prepare_data(cfg: FinetuneConfig, checkpoint: str | None) -> tuple[Any, DatasetDict]:
    """Load the splits (`load_data`) and tokenize them.

    Returns:
        The run's tokenizer and the tokenized splits (train, validation, maybe test), with a `labels`
        ClassLabel column whose names are the label names in id order.

    Raises:
        DataError: missing files or columns, bad labels.
    """
    splits = load_data(cfg)

    text_columns = [c for c in (cfg.data.text_column, cfg.data.text_pair_column) if c]
    train_texts = (str(text) for column in text_columns for text in splits["train"][column])
    tokenizer = runs.run_tokenizer(cfg, checkpoint, train_texts)
    return tokenizer, data_lib.tokenize_texts(splits, tokenizer, cfg.data)


def collator(cfg: FinetuneConfig, model: Any, tokenizer: Any, encoded: DatasetDict) -> tuple[Any, dict[str, Any]]:
    """Dynamic padding, rounded up to a multiple of 8 only on a GPU, where that selects tensor-core kernels.

    Rows of similar length share a batch (the registry row's train_sampling_strategy: group_by_length, with
    `LengthGroupedTrainer`; training.train_sampling_strategy: random undoes it).

    Returns:
        The collator and no run-time TrainingArguments defaults.
    """
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple(training_device_type(cfg.training))), {}


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune a sequence classifier, evaluate it and save it.

    Args:
        cfg: the validated finetune config (`cfg.overwrite` / `cfg.resume`: what to do with an existing output directory).

    Returns:
        The final metrics: eval_* (validation), test_* (when there is test data) and train_*.

    Raises:
        UserError: bad data, unreachable model, or an output directory that must not be touched.
    """
    from transformers import set_seed

    from llmtune.metrics import SHIPPED

    checkpoint = runs.check_output_dir(cfg.training["output_dir"], cfg.overwrite, cfg.resume, cfg)
    unknown = [m for m in cfg.metrics if m not in SHIPPED]
    if unknown:
        logger.warning("metrics %s are not shipped with llmtune; loading them from the Hub", unknown)
    set_seed(cfg.seed)

    tokenizer, encoded = TASK.function("prepare_data")(cfg, checkpoint)
    label_names = list(encoded["train"].features["labels"].names)
    model = load_model(
        TASK.model_class(),
        cfg.model,
        tokenizer,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    if model.config.problem_type is None and len(label_names) > 1:
        # What the model would set on its first batch (integer labels, several classes); set up front, a
        # compiled model (training.torch_compile) is not recompiled for the changed config after step 1.
        model.config.problem_type = "single_label_classification"
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    # A sequence classifier's loss is the batch mean (transformers' ForSequenceClassificationLoss ignores
    # num_items_in_batch), yet its forward takes **kwargs, so Trainer would treat it as a sum normalised over
    # the global batch: multiply it by the number of processes (a doubled loss and gradient under 2-process
    # DDP) and skip the division by gradient_accumulation_steps. Trainer reads this attribute to know better.
    model.accepts_loss_kwargs = False

    padding, defaults = TASK.function("collator")(cfg, model, tokenizer, encoded)
    trainer = runs.make_trainer(
        cfg, model, tokenizer, encoded, checkpoint,
        training_defaults=defaults,
        trainer_class=TASK.trainer(),
        data_collator=padding,
        compute_metrics=build_compute_metrics(cfg.metrics, len(label_names)),
    )
    metrics = runs.train_and_evaluate(trainer, checkpoint, encoded.get("test"))
    return runs.finish_run(trainer, cfg, metrics, TASK)
