"""Accuracy metric backed by scikit-learn, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output as the Hub's `evaluate-metric/accuracy`.
What the scikit-learn metrics share lives in `llmtune/metrics/_sklearn.py`; import it as a module
only (see there why).
"""

from sklearn.metrics import accuracy_score

from llmtune.metrics import _sklearn

_DESCRIPTION = """\
Accuracy is the proportion of correct predictions among the total number of cases processed:
Accuracy = (TP + TN) / (TP + TN + FP + FN), where TP, TN, FP and FN are the true positives, true
negatives, false positives and false negatives. Computed with scikit-learn's `accuracy_score`.
"""

_KWARGS_DESCRIPTION = f"""
Args:
{_sklearn.LABEL_INPUTS}\
    normalize (`bool`): if True (default), return the fraction of correctly classified samples;
        if False, return their number (the sum of their weights when `sample_weight` is given).
    sample_weight (`list` of `float`): per-example weights. Defaults to None (all weights 1).

Returns:
    accuracy (`float`): between 0.0 and 1.0 with `normalize=True`, else the (weighted) count of
        correct predictions. Multilabel: the subset accuracy (all labels of an example must match).

Examples:
    >>> accuracy = llmtune.metrics.load("accuracy")
    >>> accuracy.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0])
    {{'accuracy': 0.5}}
    >>> accuracy.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0], normalize=False)
    {{'accuracy': 3.0}}
"""


class Accuracy(_sklearn.LabelMetric):
    """Accuracy of integer class predictions against references (`config_name="multilabel"` for 0/1 lists)."""

    _description = _DESCRIPTION
    _inputs_description = _KWARGS_DESCRIPTION
    _score_function = staticmethod(accuracy_score)

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
