"""`llmtune predict`: batch inference with a trained sequence classifier, JSONL out in input order."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, TextIO

from llmtune.errors import UserError
from llmtune.inference import in_order_probabilities

if TYPE_CHECKING:
    from llmtune.config.schema import PredictConfig

logger = logging.getLogger(__name__)


def load_classifier(name_or_path: str, key: str = "--model") -> tuple[Any, Any]:
    """Load a saved sequence classifier and its tokenizer, refusing models of another kind.

    Raises:
        UserError: the directory is missing/incomplete, or holds a model that is not a classifier.
    """
    from transformers import AutoConfig, AutoTokenizer

    from llmtune.modeling import architecture_kind, device, from_pretrained
    from llmtune.tasks import registry

    task = registry.by_inference("predict")
    config = from_pretrained(AutoConfig, key, name_or_path)
    kind = architecture_kind(config)
    if kind != task.eval_kind:
        found = ", ".join(config.architectures or []) or "no architectures in config.json"
        raise UserError(f"{key}: {name_or_path} is not {task.words} ({found}); predict needs a model trained with `llmtune {task.command}`.")
    tokenizer = from_pretrained(AutoTokenizer, key, name_or_path)
    model = from_pretrained(task.model_class(), key, name_or_path)
    return model.to(device()).eval(), tokenizer


def tokenize(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenize texts (and pairs), truncated to `max_length`; also count how many had to be cut."""
    full = tokenizer(texts, pairs)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))], truncated


def run(cfg: PredictConfig, stream: TextIO) -> dict[str, Any]:
    """Classify every record of `cfg.input` and stream one JSON line per record, in input order.

    The input is read lazily, a window of `WINDOW_BATCHES` batches at a time (the first before the model
    loads); each line is written as soon as its batch and the earlier ones ran. A bad row further on ends
    the run with a DataError naming its line: lines already written to `stream` stay, an `output` file
    is then never created.

    Each line holds the record's other fields (passthrough, e.g. `id`), then `label`, `score` and
    `probabilities` (label -> probability, most likely first; the top `top_k` when given).

    Args:
        cfg: the predict options: model (a directory saved by `llmtune finetune`, or any sequence classifier),
            input (.txt/.jsonl/.csv/.tsv file, or `-` for stdin), output (a file to write the JSONL to instead
            of `stream`), text_field / text_pair_field, batch_size, top_k, max_length (default the model's maximum).
        stream: where the JSONL goes when `cfg.output` is None or `-`.

    Returns:
        A summary: rows predicted, rows truncated, the max_length used.

    Raises:
        DataError: bad input, naming the line. UserError: a model that is not a classifier.
        BrokenPipeError: the reader of `stream` closed it (`| head -1`).
    """
    model, input, output, batch_size = cfg.model, cfg.input, cfg.output, cfg.batch_size
    text_field, text_pair_field, top_k, max_length = cfg.text_field, cfg.text_pair_field, cfg.top_k, cfg.max_length
    import contextlib
    from itertools import chain

    from llmtune.files import atomic_writer
    from llmtune.inputs import open_records
    from llmtune.modeling import context_length
    from llmtune.runs import check_writable
    from llmtune.streaming import WINDOW_BATCHES, stop_if_reader_gone, windows

    to_file = output not in (None, "-")
    if to_file:
        check_writable(output, "--output", "file")
    records = open_records(input, text_field, text_pair_field, fmt=cfg.input_format)
    chunks = windows(records, WINDOW_BATCHES * batch_size)
    # Read (and check) the first window before the model loads, so a mistake near the top is reported at once.
    first = next(chunks, [])
    classifier, tokenizer = load_classifier(model)
    limit = context_length(tokenizer, classifier.config, max_length)
    names = [classifier.config.id2label[i] for i in range(classifier.config.num_labels)]
    keep = len(names) if top_k is None else min(top_k, len(names))
    rows = truncated = 0
    with contextlib.ExitStack() as stack:
        # To a file: streamed to a temporary name and renamed when complete, so it never looks finished
        # early, and removed if a bad row further on ends the run.
        target = stack.enter_context(atomic_writer(output)) if to_file else stream

        def before_batch() -> None:
            if not to_file:
                target.flush()  # the lines ready so far reach the pipe before the next batch runs
                stop_if_reader_gone(target)  # `| head -1` has what it wanted: stop here

        for records in chain([first], chunks):
            texts = [r.fields[text_field] for r in records]
            pairs = [r.fields[text_pair_field] for r in records] if text_pair_field else None
            features, cut = tokenize(tokenizer, texts, pairs, limit)
            truncated += cut
            probabilities = in_order_probabilities(classifier, tokenizer, features, batch_size, before_batch)
            for record, row in zip(records, probabilities, strict=True):
                ranked = sorted(range(len(names)), key=lambda j: -row[j])[:keep]
                line = {k: v for k, v in record.fields.items() if k not in (text_field, text_pair_field)}
                line.update(label=names[ranked[0]], score=float(row[ranked[0]]), probabilities={names[j]: float(row[j]) for j in ranked})
                target.write(json.dumps(line, ensure_ascii=False) + "\n")
                rows += 1
        target.flush()
    if truncated:
        logger.warning("%d of %d inputs were longer than %d tokens and were truncated", truncated, rows, limit)
    return {"rows": rows, "truncated": truncated, "max_length": limit}
