"""`llmtune evaluate` of a sequence classifier: accuracy, F1/precision/recall, loss, per-class report, confusion matrix."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune.errors import DataError
from llmtune.evaluation.common import PREFIX, Context, load_eval_split, load_model

if TYPE_CHECKING:
    from datasets import DatasetDict

    from llmtune.config.schema import EvalDataSection

logger = logging.getLogger(__name__)


def _label_ids(model_config: Any, data: EvalDataSection) -> Callable[[DatasetDict], DatasetDict]:
    """A `prepare` step mapping the label column onto the model's label ids (names or integer ids)."""
    from datasets import ClassLabel

    names = [model_config.id2label[i] for i in range(model_config.num_labels)]
    by_name = {str(name): i for i, name in enumerate(names)}

    def to_id(value: Any, role: str, row: int) -> int:
        if str(value) in by_name:
            return by_name[str(value)]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() and 0 <= value < len(names):
            return int(value)
        raise DataError(
            f"{data_lib.where(data, role, row)}: label {value!r} in '{data.label_column}' is not one the model "
            f"knows (its labels: {', '.join(names)})."
        )

    def prepare(splits: DatasetDict) -> DatasetDict:
        data_lib.require_columns(splits, {"data.text_column": data.text_column, "data.text_pair_column": data.text_pair_column, "data.label_column": data.label_column})
        for role in list(splits):
            ids = [to_id(value, role, row) for row, value in enumerate(splits[role][data.label_column])]
            ds = splits[role].add_column("labels", ids)
            splits[role] = ds.cast_column("labels", ClassLabel(names=names))
        return splits

    return prepare


def metric_names(model_config: Any, metrics: list[str] | None = None) -> list[str]:
    """eval_loss, eval_accuracy and F1/precision/recall (binary, or macro plus weighted for more labels).

    Args:
        model_config: the model's config (its number of labels decides binary or macro averages).
        metrics: report only these (of accuracy, f1, precision, recall) besides eval_loss; None = all.
    """
    from llmtune.metrics.classification import AVERAGED, metric_kwargs

    chosen = ["accuracy", *AVERAGED] if metrics is None else [name for name in ["accuracy", *AVERAGED] if name in metrics]
    reported = [reported for name in chosen for reported, _ in metric_kwargs(name, model_config.num_labels)]
    return [PREFIX + name for name in ["loss", *reported]]


def classification_info(names: list[str]) -> dict[str, dict[str, Any]]:
    """The definition and implementation of each eval_ classification metric, for labels `names` (in id order)."""
    from llmtune.metrics.classification import AVERAGED, metric_kwargs

    info: dict[str, dict[str, Any]] = {
        "eval_loss": {"definition": "mean cross-entropy (natural log) of the reference label under the model's softmax"},
        "eval_accuracy": {"definition": "fraction of examples whose most probable label is the reference", "implementation": "sklearn.metrics.accuracy_score"},
    }
    averages = {
        "binary": f"of the positive class (label id 1, '{names[1]}')",
        "macro": "unweighted mean over classes",
        "weighted": "mean over classes weighted by their number of reference examples",
    }
    for name in AVERAGED:
        for reported, kwargs in metric_kwargs(name, len(names)):
            info[PREFIX + reported] = {
                "definition": f"{name} {averages[kwargs['average']]}",
                "implementation": f"sklearn.metrics.{name}_score",
                **kwargs,
                "zero_division": 0,
            }
    return info


def evaluate(ctx: Context) -> dict[str, Any]:
    """Accuracy, F1/precision/recall, loss, per-class report and confusion matrix of a sequence classifier."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

    from transformers import EvalPrediction

    from llmtune.inference import class_probabilities
    from llmtune.metrics.classification import build_compute_metrics
    from llmtune.plots import confusion_matrix as draw_confusion_matrix
    from llmtune.tasks import registry

    cfg, data = ctx.cfg, ctx.data
    model, tokenizer = load_model("classification", cfg)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    split = cfg.eval.split
    splits = load_eval_split(data, split, ctx.seed, prepare=_label_ids(model.config, data))
    encoded = data_lib.tokenize_texts(splits, tokenizer, data)[split]
    references = np.asarray(encoded["labels"])
    probabilities = class_probabilities(model, tokenizer, encoded.remove_columns("labels").to_list(), cfg.eval.batch_size)
    predictions = probabilities.argmax(axis=-1)

    # Every metric a classification task can report, as Trainer's compute_metrics computes them in training.
    scores = build_compute_metrics(list(registry.task("classification").metrics), len(names))(
        EvalPrediction(predictions=probabilities, label_ids=references)
    )
    picked = probabilities[np.arange(len(references)), references]
    metrics = {"eval_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean())}
    metrics.update({PREFIX + k: v for k, v in scores.items()})
    ids = list(range(len(names)))
    report = classification_report(references, predictions, labels=ids, target_names=names, output_dict=True, zero_division=0)
    matrix = confusion_matrix(references, predictions, labels=ids).tolist()
    result = {
        **metrics,
        "num_examples": len(references),
        "metrics_info": classification_info(names),
        "per_class": {name: report[name] for name in names},
        "confusion_matrix": {"labels": names, "rows": "reference label", "columns": "predicted label", "matrix": matrix},
    }
    if ctx.output_dir is not None:
        result["files"] = [str(draw_confusion_matrix(matrix, names, ctx.output_dir / "confusion_matrix.png"))]
    return result
