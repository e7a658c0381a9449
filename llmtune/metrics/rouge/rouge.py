"""ROUGE-1/2/L/Lsum computed by Google's `rouge-score` package, shipped with llmtune so it loads offline.

Same inputs, keyword arguments and output keys as the Hub's `evaluate-metric/rouge` (rouge1, rouge2,
rougeL, rougeLsum; one list of references or one reference string per prediction, scored against the
best of them), with two differences that make llmtune's numbers reproducible and comparable with its
BLEU and chrF:
- the values are F-measures scaled to 0-100, like sacreBLEU's scores (the Hub module reports 0-1);
- the corpus value is the plain mean of the per-prediction F-measures. The Hub module reports the
  median of 1000 bootstrap resamples of that mean, which is random (unseeded) and only close to it.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_DESCRIPTION = """\
ROUGE (Lin, 2004) scores generated text, typically summaries, by its overlap with one or more
reference texts: rouge1 and rouge2 by matching unigrams and bigrams, rougeL by the longest common
subsequence of the two texts taken whole, and rougeLsum by the summary-level longest common
subsequence, which treats each line (text between newlines) as a sentence. Each value is the
F-measure of precision and recall, scaled to 0-100, averaged over the predictions. When a prediction
has several references, each ROUGE type takes the reference with the highest F-measure for that type.
Computed with Google's `rouge-score` package, a reimplementation of ROUGE-1.5.5.

Tokenization: rouge-score's default tokenizer lowercases the text and keeps only runs of the ASCII
letters a-z and digits 0-9, so words in other scripts (and accented letters) are dropped; pass
`tokenizer` (a function from a string to a list of tokens) for such text.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the generated texts. For rougeLsum, separate sentences with
        newlines ("\\n"): each line is one sentence.
    references (`list` of `list` of `str`, or `list` of `str`): one list of reference texts per
        prediction (several references per prediction are allowed, and their number may vary),
        or one plain reference string per prediction.
    rouge_types (`list` of `str`): which scores to compute, any of "rouge1" to "rouge9", "rougeL"
        and "rougeLsum". Defaults to ["rouge1", "rouge2", "rougeL", "rougeLsum"].
    use_stemmer (`bool`): reduce words to their Porter stems (English) before matching, so
        "trained" matches "training". Defaults to False, as in rouge-score and the Hub module.
    use_aggregator (`bool`): True (default) returns one corpus value per ROUGE type, the mean over
        the predictions; False returns the list of per-prediction values instead.
    tokenizer (callable): a function that splits a text into a list of tokens, replacing
        rouge-score's default tokenizer (lowercased ASCII letters and digits only). With it,
        `use_stemmer` has no effect.

Returns:
    rouge1, rouge2, rougeL, rougeLsum (`float`, or `list` of `float` without the aggregator): the
        F-measures, 0 to 100, higher is better (only the requested `rouge_types`).

Examples:
    >>> rouge = llmtune.metrics.load("rouge")
    >>> rouge.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])
    {'rouge1': 100.0, 'rouge2': 100.0, 'rougeL': 100.0, 'rougeLsum': 100.0}
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    url = "https://aclanthology.org/W04-1013",
    pages = "74--81",
}
"""


class _CallableTokenizer:
    """Adapts a plain `text -> tokens` function to rouge-score's tokenizer interface (a `tokenize` method)."""

    def __init__(self, function):
        self.function = function

    def tokenize(self, text):
        """Split `text` into tokens with the wrapped function."""
        return self.function(text)


class Rouge(evaluate.Metric):
    """ROUGE-1/2/L/Lsum F-measures (0-100) with rouge-score, best reference per prediction, mean over predictions."""

    def _info(self) -> evaluate.MetricInfo:
        """Describe the metric and its input features for evaluate."""
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            homepage="https://github.com/google-research/google-research/tree/master/rouge",
            inputs_description=_KWARGS_DESCRIPTION,
            # evaluate picks the first option the first example fits: a list of references per
            # prediction, else one plain reference string per prediction.
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013", "https://pypi.org/project/rouge-score/"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=False, use_aggregator=True, tokenizer=None):
        """Compute ROUGE F-measures with rouge-score.

        Args:
            predictions: the generated texts.
            references: one list of references (or one reference string) per prediction.
            rouge_types: the ROUGE types to report; None for rouge1, rouge2, rougeL and rougeLsum.
            use_stemmer: match Porter stems instead of words.
            use_aggregator: report the mean over predictions (True) or the per-prediction values.
            tokenizer: a `text -> list of tokens` function replacing rouge-score's default tokenizer.

        Returns:
            One entry per ROUGE type: the 0-100 F-measure (mean over predictions), or the list of
            per-prediction F-measures when `use_aggregator` is False.

        Raises:
            ValueError: predictions and references do not pair up, a prediction has no reference,
                or an unknown ROUGE type.
        """
        rouge_types = list(ROUGE_TYPES if rouge_types is None else rouge_types)
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; they must pair up")
        per_prediction = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
        empty = [i for i, refs in enumerate(per_prediction) if not refs]
        if empty:
            raise ValueError(f"every prediction needs at least one reference; predictions {empty[:10]} have none")
        scorer = rouge_scorer.RougeScorer(
            rouge_types=rouge_types,
            use_stemmer=use_stemmer,
            tokenizer=_CallableTokenizer(tokenizer) if tokenizer is not None else None,
        )
        # score_multi keeps, per ROUGE type, the reference with the highest F-measure (as the Hub module does).
        scores = [scorer.score_multi(refs, prediction) for prediction, refs in zip(predictions, per_prediction)]
        # Plain Python floats keep the result JSON-serialisable for llmtune's metrics files.
        values = {key: [100.0 * float(score[key].fmeasure) for score in scores] for key in rouge_types}
        if not use_aggregator:
            return values
        return {key: sum(column) / len(column) if column else 0.0 for key, column in values.items()}
