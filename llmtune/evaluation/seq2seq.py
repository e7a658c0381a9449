"""`llmtune evaluate` of a sequence-to-sequence model (T5, BART, Marian): BLEU, chrF and ROUGE of what it writes.

The data is read as `task: seq2seq` trains on it (`data.source_column` / `data.target_column`, or a
`{source, target}` pair of text files, `data.source_prefix` before every source), so a model directory
trained by llmtune is scored on its own validation data with `llmtune evaluate --model DIR`. Decoding and
scoring are the generation kind's (`llmtune.evaluation.generation.score`).
"""

from __future__ import annotations

from typing import Any

from llmtune.evaluation import generation
from llmtune.evaluation.common import Context, load_eval_split, saved_run


def metric_names(model_config: Any, metrics: list[str] | None = None) -> list[str]:
    """The generation kind's metrics: BLEU, chrF, ROUGE (or those `metrics:` picks), mean length, truncation rate."""
    return generation.metric_names(model_config, metrics)


def evaluate(ctx: Context) -> dict[str, Any]:
    """Generate a target for each source of `eval.split` and score it against the reference target.

    Raises:
        DataError: a missing file or column, misaligned parallel files, or a row without source or target text.
    """
    from llmtune.tasks.seq2seq import check_texts

    data, split = ctx.data, ctx.cfg.eval.split
    splits = load_eval_split(data, split, ctx.seed)
    check_texts(splits, data)
    prefix = data.source_prefix or ""
    sources = [prefix + text for text in splits[split][data.source_column]]
    return generation.score(ctx, sources, list(splits[split][data.target_column]), decoding(ctx))


def decoding(ctx: Context) -> dict[str, Any]:
    """The generation settings: the config's `generation:`, else those the run was trained (and scored) with.

    As in training (`llmtune.tasks.seq2seq.build_generation_config`), max_new_tokens defaults to
    data.max_target_length, so `llmtune evaluate --model RUN` writes what the run's own evaluation wrote.
    """
    if "generation" in ctx.cfg.model_fields_set:
        settings = dict(ctx.cfg.generation)
    else:
        settings = dict(saved_run(ctx.cfg).get("generation") or {})
    if "max_new_tokens" not in settings and "max_length" not in settings:
        settings["max_new_tokens"] = ctx.data.max_target_length
    return settings
