"""Classification metrics with llmtune's offline evaluate modules: what finetune reports and evaluate recomputes.

Shared by `llmtune.tasks.classification` (Trainer's `compute_metrics`) and `llmtune.evaluation.classification`,
so the two report the same numbers under the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
