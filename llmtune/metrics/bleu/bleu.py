"""Corpus BLEU computed by sacreBLEU, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output keys as the Hub's `evaluate-metric/sacrebleu` (not the
Hub's `bleu`, which tokenizes differently and names its keys differently), plus `signature`.

One difference from the Hub's sacrebleu module: predictions may have different numbers of
references. The Hub module raises a ValueError for that; here the shorter reference lists are padded
with None, which is sacreBLEU's own way of expressing a variable number of references (the padding
is skipped when n-grams are matched, and the signature then says `nrefs:var`).

What the sacreBLEU metrics share lives in `llmtune/metrics/_sacrebleu.py`; import it as a module
only (see there why).
"""

import evaluate
import sacrebleu

from llmtune.metrics import _sacrebleu

_DESCRIPTION = """\
BLEU (Papineni et al., 2002) scores machine-generated text by its modified n-gram precision (n = 1
to 4) against one or more reference texts, times a brevity penalty for outputs shorter than the
references. This module computes corpus-level BLEU with sacreBLEU (Post, 2018), which tokenizes the
raw text itself (13a, the WMT standard, by default) so scores are comparable across papers; the
returned `signature` records every setting that affects the score.
"""

_KWARGS_DESCRIPTION = f"""
Args:
    predictions (`list` of `str`): the generated texts, untokenized.
{_sacrebleu.REFERENCES_INPUT}\
    tokenize (`str`): sacreBLEU tokenizer: "13a" (default), "none", "zh", "intl", "char",
        "ja-mecab", "ko-mecab", "flores101", "flores200" (some need extra packages).
    lowercase (`bool`): lowercase predictions and references first. Defaults to False.
    smooth_method (`str`): "exp" (default), "floor", "add-k" or "none".
    smooth_value (`float`): the value for "floor" (default 0.1) and "add-k" (default 1) smoothing.
    use_effective_order (`bool`): ignore n-gram orders with no matches (for sentence-level
        scores). Defaults to False.
    force (`bool`): do not warn when the input looks already tokenized. Defaults to False.

Returns:
    score (`float`): corpus BLEU, 0 to 100, higher is better.
    counts (`list` of `int`): matching n-grams for n = 1..4.
    totals (`list` of `int`): n-grams in the predictions for n = 1..4.
    precisions (`list` of `float`): modified n-gram precisions (percent) for n = 1..4.
    bp (`float`): the brevity penalty.
    sys_len (`int`): length of the predictions in tokens.
    ref_len (`int`): effective reference length in tokens.
    signature (`str`): sacreBLEU's signature, e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0".

Examples:
    >>> bleu = llmtune.metrics.load("bleu")
    >>> bleu.compute(predictions=["hello there general kenobi"], references=[["hello there general kenobi"]])["score"]
    100.0
"""

_CITATION = (
    """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    url = "https://aclanthology.org/P02-1040",
    pages = "311--318",
}
"""
    + _sacrebleu.POST_2018_CITATION
)


class Bleu(evaluate.Metric):
    """Corpus BLEU with sacreBLEU's standard tokenization; outputs like the Hub's sacrebleu metric."""

    def _info(self) -> evaluate.MetricInfo:
        """Describe the metric and its input features for evaluate."""
        return _sacrebleu.metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacreBLEU",
            reference_urls=["https://aclanthology.org/P02-1040", "https://aclanthology.org/W18-6319"],
        )

    def _compute(
        self,
        predictions,
        references,
        tokenize="13a",
        lowercase=False,
        smooth_method="exp",
        smooth_value=None,
        use_effective_order=False,
        force=False,
    ):
        """Compute corpus BLEU with sacreBLEU.

        Args:
            predictions: the generated texts.
            references: one list of references (or one reference string) per prediction.
            tokenize: sacreBLEU tokenizer name; None means sacreBLEU's default ("13a").
            lowercase: lowercase everything first.
            smooth_method: "exp", "floor", "add-k" or "none".
            smooth_value: value for "floor"/"add-k" smoothing; None for sacreBLEU's default.
            use_effective_order: ignore n-gram orders without matches.
            force: do not warn about input that looks tokenized.

        Returns:
            `score`, `counts`, `totals`, `precisions`, `bp`, `sys_len`, `ref_len` and `signature`.

        Raises:
            ValueError: predictions and references do not pair up, or a prediction has no reference.
        """
        bleu = sacrebleu.BLEU(
            lowercase=lowercase,
            force=force,
            tokenize=tokenize,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            effective_order=use_effective_order,
        )
        result, signature = _sacrebleu.corpus_score(bleu, predictions, references)
        # Plain Python numbers keep the result JSON-serialisable for llmtune's metrics files.
        return {
            "score": float(result.score),
            "counts": [int(c) for c in result.counts],
            "totals": [int(t) for t in result.totals],
            "precisions": [float(p) for p in result.precisions],
            "bp": float(result.bp),
            "sys_len": int(result.sys_len),
            "ref_len": int(result.ref_len),
            "signature": signature,
        }
