"""Recall metric backed by scikit-learn, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output as the Hub's `evaluate-metric/recall`, plus
`zero_division` (passed to scikit-learn), and `average=None` returns a plain list of per-class scores.
What the scikit-learn metrics share lives in `llmtune/metrics/_sklearn.py`; import it as a module
only (see there why).
"""

from sklearn.metrics import recall_score

from llmtune.metrics import _sklearn

_DESCRIPTION = """\
Recall is the fraction of the actual positives that are predicted positive:
Recall = TP / (TP + FN), with TP the true positives and FN the false negatives.
Computed with scikit-learn's `recall_score`.
"""

_KWARGS_DESCRIPTION = _sklearn.prf_inputs_description("recall", "no actual positives", 0.3333333333333333)


class Recall(_sklearn.PrfMetric):
    """Recall of integer class predictions against references (`config_name="multilabel"` for 0/1 lists)."""

    _description = _DESCRIPTION
    _inputs_description = _KWARGS_DESCRIPTION
    _score_function = staticmethod(recall_score)
