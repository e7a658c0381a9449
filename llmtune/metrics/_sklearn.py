"""What llmtune's scikit-learn metrics (accuracy, f1, precision, recall) share.

The metric files (`llmtune/metrics/<name>/<name>.py`) hold each metric's own documentation and a thin
class on top of the base classes here. They import this module as a module
(`from llmtune.metrics import _sklearn`), never the classes by name: evaluate 0.4.6 picks the first
`evaluate.EvaluationModule` subclass in the metric file's namespace, and an imported base class
would come before the metric's own class.
"""

from __future__ import annotations

import datasets
import evaluate

CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V.
          and Thirion, B. and Grisel, O. and Blondel, M. and Prettenhofer, P.
          and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

LABEL_INPUTS = """\
    predictions (`list` of `int`): predicted labels (with config_name="multilabel": a list of 0/1
        label-indicator lists per example).
    references (`list` of `int`): ground-truth labels, same shape as `predictions`.
"""
"""The `predictions`/`references` part of the inputs description of every metric here."""


def prf_inputs_description(name: str, undefined_when: str, macro_example: float) -> str:
    """The inputs description of f1, precision or recall (they take the same arguments).

    Args:
        name: the metric's name, also its output key.
        undefined_when: when the score is undefined, e.g. "no predicted positives".
        macro_example: the metric's macro average on the 3-class example, as Python prints it.

    Returns:
        The text for `evaluate.MetricInfo.inputs_description`.
    """
    return f"""
Args:
{LABEL_INPUTS}\
    labels (`list` of `int`): the labels to include when `average != "binary"`, and their order
        when `average=None`. Defaults to None (all labels seen in predictions and references).
    pos_label (`int`): the positive class when `average="binary"`. Defaults to 1.
    average (`str` or None): "binary" (default; only the `pos_label` class, binary data only),
        "micro" (global TP/FP/FN counts), "macro" (unweighted mean over labels), "weighted" (mean
        over labels weighted by their support), "samples" (multilabel only, mean over examples), or
        None (one score per label, returned as a list).
    sample_weight (`list` of `float`): per-example weights. Defaults to None.
    zero_division (`"warn"`, 0.0, 1.0 or nan): the value returned when the score is undefined
        ({undefined_when}); "warn" (default) returns 0.0 and warns.

Returns:
    {name} (`float`, or `list` of `float` with `average=None`): between 0.0 and 1.0, higher is better.

Examples:
    >>> {name} = llmtune.metrics.load("{name}")
    >>> {name}.compute(references=[0, 1, 0, 1, 0], predictions=[0, 0, 1, 1, 0])
    {{'{name}': 0.5}}
    >>> {name}.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 2, 1, 0, 0, 1], average="macro")
    {{'{name}': {macro_example!r}}}
"""


class LabelMetric(evaluate.Metric):
    """A metric of integer class predictions against references (`config_name="multilabel"` for 0/1 lists).

    A subclass sets `_description` and `_inputs_description` (its MetricInfo texts) and
    `_score_function` (the scikit-learn function, as a staticmethod), and defines `_compute`.
    """

    _description: str
    _inputs_description: str
    _score_function: staticmethod

    def _info(self) -> evaluate.MetricInfo:
        """Describe the metric and its input features for evaluate."""
        if self.config_name == "multilabel":
            features = datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            )
        else:
            features = datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            )
        function = self._score_function.__name__
        return evaluate.MetricInfo(
            description=self._description,
            citation=CITATION,
            inputs_description=self._inputs_description,
            features=features,
            reference_urls=[f"https://scikit-learn.org/stable/modules/generated/sklearn.metrics.{function}.html"],
        )


class PrfMetric(LabelMetric):
    """f1, precision or recall: the scikit-learn scores with `labels`, `pos_label` and `average`."""

    def _compute(
        self,
        predictions,
        references,
        labels=None,
        pos_label=1,
        average="binary",
        sample_weight=None,
        zero_division="warn",
    ):
        """Compute the score with scikit-learn.

        Args:
            predictions: predicted labels, one per example.
            references: ground-truth labels, one per example.
            labels: labels to include (and their order for `average=None`).
            pos_label: the positive class for `average="binary"`.
            average: "binary", "micro", "macro", "weighted", "samples" or None.
            sample_weight: optional per-example weights.
            zero_division: value for an undefined score ("warn", 0.0, 1.0 or nan).

        Returns:
            `{name: float}`, or `{name: list[float]}` (one per label) when `average` is None, where
            name is the metric's name (evaluate derives it from the class name: `F1` -> "f1").
        """
        score = self._score_function(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        # A list (not a numpy array) keeps the result JSON-serialisable for llmtune's metrics files.
        return {self.name: score.tolist() if average is None else float(score)}
