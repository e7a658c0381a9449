"""Accuracy metric backed by scikit-learn, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output as the Hub's `evaluate-metric/accuracy`.
Keep this file self-contained: evaluate copies only this file into its modules cache, and it picks
the first `evaluate.EvaluationModule` subclass it finds in the module, so subclass `evaluate.Metric`
through `import evaluate` (a `from evaluate import Metric` would be picked instead of `Accuracy`).
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """\
Accuracy is the proportion of correct predictions among the total number of cases processed:
Accuracy = (TP + TN) / (TP + TN + FP + FN), where TP, TN, FP and FN are the true positives, true
negatives, false positives and false negatives. Computed with scikit-learn's `accuracy_score`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels (with config_name="multilabel": a list of 0/1
        label-indicator lists per example).
    references (`list` of `int`): ground-truth labels, same shape as `predictions`.
    normalize (`bool`): if True (default), return the fraction of correctly classified samples;
        if False, return their number (the sum of their weights when `sample_weight` is given).
    sample_weight (`list` of `float`): per-example weights. Defaults to None (all weights 1).

Returns:
    accuracy (`float`): between 0.0 and 1.0 with `normalize=True`, else the (weighted) count of
        correct predictions. Multilabel: the subset accuracy (all labels of an example must match).

Examples:
    >>> accuracy = llmtune.metrics.load("accuracy")
    >>> accuracy.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0])
    {'accuracy': 0.5}
    >>> accuracy.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0], normalize=False)
    {'accuracy': 3.0}
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


class Accuracy(evaluate.Metric):
    """Accuracy of integer class predictions against references (`config_name="multilabel"` for 0/1 lists)."""

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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        """Compute accuracy with scikit-learn.

        Args:
            predictions: predicted labels, one per example.
            references: ground-truth labels, one per example.
            normalize: return the fraction (True) or the count (False) of correct predictions.
            sample_weight: optional per-example weights.

        Returns:
            `{"accuracy": float}`.
        """
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
