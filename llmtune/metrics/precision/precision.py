"""Precision metric backed by scikit-learn, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output as the Hub's `evaluate-metric/precision`, plus
`zero_division` (passed to scikit-learn), and `average=None` returns a plain list of per-class scores.
What the scikit-learn metrics share lives in `llmtune/metrics/_sklearn.py`; import it as a module
only (see there why).
"""

from sklearn.metrics import precision_score

from llmtune.metrics import _sklearn

_DESCRIPTION = """\
Precision is the fraction of the predicted positives that are correct:
Precision = TP / (TP + FP), with TP the true positives and FP the false positives.
Computed with scikit-learn's `precision_score`.
"""

_KWARGS_DESCRIPTION = _sklearn.prf_inputs_description("precision", "no predicted positives", 0.2222222222222222)


class Precision(_sklearn.PrfMetric):
    """Precision of integer class predictions against references (`config_name="multilabel"` for 0/1 lists)."""

    _description = _DESCRIPTION
    _inputs_description = _KWARGS_DESCRIPTION
    _score_function = staticmethod(precision_score)
