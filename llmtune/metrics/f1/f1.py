"""F1 metric backed by scikit-learn, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output as the Hub's `evaluate-metric/f1`, plus
`zero_division` (passed to scikit-learn), and `average=None` returns a plain list of per-class scores.
What the scikit-learn metrics share lives in `llmtune/metrics/_sklearn.py`; import it as a module
only (see there why).
"""

from sklearn.metrics import f1_score

from llmtune.metrics import _sklearn

_DESCRIPTION = """\
The F1 score is the harmonic mean of precision and recall:
F1 = 2 * (precision * recall) / (precision + recall).
Computed with scikit-learn's `f1_score`.
"""

_KWARGS_DESCRIPTION = _sklearn.prf_inputs_description("f1", "no true and no predicted positives", 0.26666666666666666)


class F1(_sklearn.PrfMetric):
    """F1 of integer class predictions against references (`config_name="multilabel"` for 0/1 lists)."""

    _description = _DESCRIPTION
    _inputs_description = _KWARGS_DESCRIPTION
    _score_function = staticmethod(f1_score)
