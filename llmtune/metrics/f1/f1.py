"""F1 metric backed by scikit-learn, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output as the Hub's `evaluate-metric/f1`, plus
`zero_division` (passed to scikit-learn), and `average=None` returns a plain list of per-class scores.
Keep this file self-contained: evaluate copies only this file into its modules cache, and it picks
the first `evaluate.EvaluationModule` subclass it finds in the module, so subclass `evaluate.Metric`
through `import evaluate` (a `from evaluate import Metric` would be picked instead of `F1`).
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = """\
The F1 score is the harmonic mean of precision and recall:
F1 = 2 * (precision * recall) / (precision + recall).
Computed with scikit-learn's `f1_score`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels (with config_name="multilabel": a list of 0/1
        label-indicator lists per example).
    references (`list` of `int`): ground-truth labels, same shape as `predictions`.
    labels (`list` of `int`): the labels to include when `average != "binary"`, and their order
        when `average=None`. Defaults to None (all labels seen in predictions and references).
    pos_label (`int`): the positive class when `average="binary"`. Defaults to 1.
    average (`str` or None): "binary" (default; only the `pos_label` class, binary data only),
        "micro" (global TP/FP/FN counts), "macro" (unweighted mean over labels), "weighted" (mean
        over labels weighted by their support), "samples" (multilabel only, mean over examples), or
        None (one score per label, returned as a list).
    sample_weight (`list` of `float`): per-example weights. Defaults to None.
    zero_division (`"warn"`, 0.0, 1.0 or nan): the value returned when the score is undefined
        (no true and no predicted positives); "warn" (default) returns 0.0 and warns.

Returns:
    f1 (`float`, or `list` of `float` with `average=None`): between 0.0 and 1.0, higher is better.

Examples:
    >>> f1 = llmtune.metrics.load("f1")
    >>> f1.compute(references=[0, 1, 0, 1, 0], predictions=[0, 0, 1, 1, 0])
    {'f1': 0.5}
    >>> f1.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 2, 1, 0, 0, 1], average="macro")
    {'f1': 0.26666666666666666}
"""

_CITATION = """\
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


class F1(evaluate.Metric):
    """F1 of integer class predictions against references (`config_name="multilabel"` for 0/1 lists)."""

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
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

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
        """Compute the F1 score with scikit-learn.

        Args:
            predictions: predicted labels, one per example.
            references: ground-truth labels, one per example.
            labels: labels to include (and their order for `average=None`).
            pos_label: the positive class for `average="binary"`.
            average: "binary", "micro", "macro", "weighted", "samples" or None.
            sample_weight: optional per-example weights.
            zero_division: value for an undefined score ("warn", 0.0, 1.0 or nan).

        Returns:
            `{"f1": float}`, or `{"f1": list[float]}` (one per label) when `average` is None.
        """
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        # A list (not a numpy array) keeps the result JSON-serialisable for llmtune's metrics files.
        return {"f1": score.tolist() if average is None else float(score)}
