"""Corpus chrF / chrF++ computed by sacreBLEU, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output keys as the Hub's `evaluate-metric/chrf`, plus
`signature`. As in llmtune's `bleu`, predictions may have different numbers of references (the Hub
module raises a ValueError): shorter reference lists are padded with None, sacreBLEU's way of
expressing a variable number of references.

What the sacreBLEU metrics share lives in `llmtune/metrics/_sacrebleu.py`; import it as a module
only (see there why).
"""

import evaluate
import sacrebleu

from llmtune.metrics import _sacrebleu

_DESCRIPTION = """\
chrF (Popovic, 2015) is the F-score of character n-gram precision and recall (n = 1 to 6 by
default) between generated and reference texts; recall weighs `beta` times as much as precision.
chrF++ (Popovic, 2017) adds word n-grams (word_order=2). Computed at corpus level with sacreBLEU
(Post, 2018); the returned `signature` records every setting that affects the score.
"""

_KWARGS_DESCRIPTION = f"""
Args:
    predictions (`list` of `str`): the generated texts.
{_sacrebleu.REFERENCES_INPUT}\
    char_order (`int`): the largest character n-gram order. Defaults to 6.
    word_order (`int`): the largest word n-gram order; 0 (default) is chrF, 2 is chrF++.
    beta (`int`): how many times more recall weighs than precision. Defaults to 2.
    lowercase (`bool`): lowercase everything first. Defaults to False.
    whitespace (`bool`): keep whitespace when extracting character n-grams. Defaults to False.
    eps_smoothing (`bool`): use the epsilon smoothing of the reference chrF++.py, NLTK and
        Moses instead of sacreBLEU's default effective-order smoothing. Defaults to False.

Returns:
    score (`float`): corpus chrF, 0 to 100, higher is better.
    char_order (`int`), word_order (`int`), beta (`int`): the settings used.
    signature (`str`): sacreBLEU's signature, e.g. "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0".

Examples:
    >>> chrf = llmtune.metrics.load("chrf")
    >>> chrf.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["score"]
    100.0
"""

_CITATION = (
    """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    url = "https://aclanthology.org/W15-3049",
    pages = "392--395",
}
@inproceedings{popovic-2017-chrf,
    title = "chr{F}++: words helping character n-grams",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Second Conference on Machine Translation",
    year = "2017",
    url = "https://aclanthology.org/W17-4770",
    pages = "612--618",
}
"""
    + _sacrebleu.POST_2018_CITATION
)


class Chrf(evaluate.Metric):
    """Corpus chrF (word_order=0) or chrF++ (word_order=2) with sacreBLEU."""

    def _info(self) -> evaluate.MetricInfo:
        """Describe the metric and its input features for evaluate."""
        return _sacrebleu.metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacreBLEU#chrf--chrf",
            reference_urls=["https://aclanthology.org/W15-3049", "https://aclanthology.org/W17-4770"],
        )

    def _compute(
        self,
        predictions,
        references,
        char_order=6,
        word_order=0,
        beta=2,
        lowercase=False,
        whitespace=False,
        eps_smoothing=False,
    ):
        """Compute corpus chrF with sacreBLEU.

        Args:
            predictions: the generated texts.
            references: one list of references (or one reference string) per prediction.
            char_order: the largest character n-gram order.
            word_order: the largest word n-gram order (2 for chrF++).
            beta: the weight of recall relative to precision.
            lowercase: lowercase everything first.
            whitespace: keep whitespace in character n-grams.
            eps_smoothing: use epsilon smoothing instead of effective-order smoothing.

        Returns:
            `score`, `char_order`, `word_order`, `beta` and `signature`.

        Raises:
            ValueError: predictions and references do not pair up, or a prediction has no reference.
        """
        chrf = sacrebleu.CHRF(
            char_order=char_order,
            word_order=word_order,
            beta=beta,
            lowercase=lowercase,
            whitespace=whitespace,
            eps_smoothing=eps_smoothing,
        )
        result, signature = _sacrebleu.corpus_score(chrf, predictions, references)
        return {
            "score": float(result.score),
            "char_order": int(result.char_order),
            "word_order": int(result.word_order),
            "beta": int(result.beta),
            "signature": signature,
        }
