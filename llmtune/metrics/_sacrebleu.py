"""What llmtune's sacreBLEU metrics (bleu, chrf) share: their inputs, reference handling and info.

Helpers only, no `evaluate.EvaluationModule` subclass: evaluate 0.4.6 picks the first such class in a
metric file's namespace, so the metric files import this module as a module
(`from llmtune.metrics import _sacrebleu`) and keep their own class.
"""

from __future__ import annotations

import datasets
import evaluate

POST_2018_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    url = "https://www.aclweb.org/anthology/W18-6319",
    pages = "186--191",
}
"""
"""The sacreBLEU paper, cited by every metric computed with sacreBLEU."""

REFERENCES_INPUT = """\
    references (`list` of `list` of `str`, or `list` of `str`): one list of reference texts per
        prediction (several references per prediction are allowed, and their number may vary:
        missing ones are skipped), or one plain reference string per prediction.
"""
"""The `references` entry of the inputs description of every metric here."""


def metric_info(
    description: str, citation: str, inputs_description: str, homepage: str, reference_urls: list[str]
) -> evaluate.MetricInfo:
    """The `evaluate.MetricInfo` of a sacreBLEU metric: texts in, one or more references per text.

    Args:
        description: what the metric measures.
        citation: BibTeX of the metric's papers.
        inputs_description: the metric's arguments, returns and examples.
        homepage: the metric's sacreBLEU documentation, also its codebase URL.
        reference_urls: the metric's papers.

    Returns:
        The info for the metric class's `_info`.
    """
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        homepage=homepage,
        inputs_description=inputs_description,
        # evaluate picks the first option the first example fits: a list of references per
        # prediction, else one plain reference string per prediction (its string check stops a
        # plain string from being read as a list of characters).
        features=[
            datasets.Features(
                {
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="sequence"), id="references"),
                }
            ),
            datasets.Features(
                {
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Value("string", id="sequence"),
                }
            ),
        ],
        codebase_urls=[homepage],
        reference_urls=reference_urls,
    )


def corpus_score(scorer, predictions, references):
    """Score the predictions at corpus level with a sacreBLEU metric object.

    Predictions may have different numbers of references: shorter reference lists are padded with
    None, sacreBLEU's own way of expressing a variable number of references (the padding is skipped
    when n-grams are matched, and the signature then says `nrefs:var`).

    Args:
        scorer: a `sacrebleu.BLEU` or `sacrebleu.CHRF` object.
        predictions: the generated texts.
        references: one list of reference texts per prediction, or one reference string per prediction.

    Returns:
        `(score, signature)`: sacreBLEU's corpus score object and the scorer's signature string.

    Raises:
        ValueError: the numbers of predictions and references differ, or a prediction has no reference.
    """
    result = scorer.corpus_score(list(predictions), _reference_streams(predictions, references))
    # The signature is only complete after corpus_score (it records the number of references).
    return result, str(scorer.get_signature())


def _reference_streams(predictions, references):
    """Turn per-prediction references into sacreBLEU's per-reference-number streams.

    Args:
        predictions: the generated texts.
        references: one list of reference texts per prediction, or one reference string per prediction.

    Returns:
        A list of streams; stream i holds the i-th reference of every prediction, None where a
        prediction has fewer than i + 1 references.

    Raises:
        ValueError: the numbers of predictions and references differ, or a prediction has no reference.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; they must pair up")
    per_prediction = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    empty = [i for i, refs in enumerate(per_prediction) if not refs]
    if empty:
        raise ValueError(f"every prediction needs at least one reference; predictions {empty[:10]} have none")
    most = max(len(refs) for refs in per_prediction)
    return [[refs[i] if i < len(refs) else None for refs in per_prediction] for i in range(most)]
