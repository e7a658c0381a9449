"""`llmtune finetune` with `task: classification`: a sequence classifier trained with Trainer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune import runs
from llmtune.modeling import load_model, pad_multiple, training_device_type

if TYPE_CHECKING:
    from llmtune.config.schema import FinetuneConfig

logger = logging.getLogger(__name__)

AVERAGED = ("f1", "precision", "recall")


def metric_kwargs(name: str, num_labels: int) -> list[tuple[str, dict[str, Any]]]:
    """The (reported name, compute kwargs) pairs for one metric.

    Binary tasks report the positive class (label 1); multiclass tasks report the macro average
    (every class counts the same) as `f1` and the support-weighted average as `f1_weighted`.
    """
    if name not in AVERAGED:
        return [(name, {})]
    if num_labels == 2:
        return [(name, {"average": "binary", "pos_label": 1})]
    return [(name, {"average": "macro"}), (f"{name}_weighted", {"average": "weighted"})]


def build_compute_metrics(names: list[str], num_labels: int) -> Callable[[Any], dict[str, float]]:
    """A Trainer `compute_metrics` computing each metric with llmtune's offline evaluate modules."""
    from llmtune import metrics as metrics_lib

    modules = {name: metrics_lib.load(name) for name in names}

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predictions = logits.argmax(axis=-1)
        results: dict[str, float] = {}
        for name, module in modules.items():
            for reported, kwargs in metric_kwargs(name, num_labels):
                if name in AVERAGED:
                    kwargs = {**kwargs, "zero_division": 0}
                value = module.compute(predictions=predictions, references=labels, **kwargs)
                results[reported] = float(value[name]) if name in value else float(next(iter(value.values())))
        return results

    return compute


def run(cfg: FinetuneConfig, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Fine-tune a sequence classifier, evaluate it and save it.

    Args:
        cfg: the validated finetune config.
        overwrite: replace a non-empty output directory (once the new run is complete).
        resume: continue from the last complete checkpoint (of an interrupted or a completed run).

    Returns:
        The final metrics: eval_* (validation), test_* (when there is test data) and train_*.

    Raises:
        UserError: bad data, unreachable model, or an output directory that must not be touched.
    """
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, set_seed

    from llmtune.metrics import SHIPPED

    checkpoint = runs.check_output_dir(cfg.training["output_dir"], overwrite, resume, cfg)
    unknown = [m for m in cfg.metrics if m not in SHIPPED]
    if unknown:
        logger.warning("metrics %s are not shipped with llmtune; loading them from the Hub", unknown)
    set_seed(cfg.seed)

    columns = {"data.text_column": cfg.data.text_column, "data.text_pair_column": cfg.data.text_pair_column, "data.label_column": cfg.data.label_column}
    splits = data_lib.load_splits(cfg.data, columns)
    splits, label_names = data_lib.encode_labels(splits, cfg.data)
    splits = data_lib.with_validation(splits, cfg.data, cfg.seed, stratify_by="labels")

    text_columns = [c for c in (cfg.data.text_column, cfg.data.text_pair_column) if c]
    train_texts = (str(text) for column in text_columns for text in splits["train"][column])
    tokenizer = runs.run_tokenizer(cfg, checkpoint, train_texts)
    encoded = data_lib.tokenize_texts(splits, tokenizer, cfg.data)
    model = load_model(
        AutoModelForSequenceClassification,
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

    # Rows of similar length share a batch (less padding; training.train_sampling_strategy: random undoes
    # it), and batches are rounded up to a multiple of 8 only on a GPU, where that selects tensor-core kernels.
    from llmtune.batching import GROUP_BY_LENGTH, LengthGroupedTrainer

    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple(training_device_type(cfg.training)))
    trainer = runs.make_trainer(
        cfg, model, tokenizer, encoded, checkpoint,
        training_defaults={"train_sampling_strategy": GROUP_BY_LENGTH},
        trainer_class=LengthGroupedTrainer,
        data_collator=collator,
        compute_metrics=build_compute_metrics(cfg.metrics, len(label_names)),
    )
    metrics = runs.train_and_evaluate(trainer, checkpoint, encoded.get("test"))
    return runs.finish_run(trainer, cfg, metrics, "finetune", "text-classification")
