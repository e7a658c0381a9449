"""`llmtune predict`: batch inference with a trained sequence classifier, JSONL out in input order."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from llmtune.errors import UserError

logger = logging.getLogger(__name__)


def load_classifier(name_or_path: str, key: str = "--model") -> tuple[Any, Any]:
    """Load a saved sequence classifier and its tokenizer, refusing models of another kind.

    Raises:
        UserError: the directory is missing/incomplete, or holds a model that is not a classifier.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from llmtune.modeling import architecture_kind, device, from_pretrained

    config = from_pretrained(AutoConfig, key, name_or_path)
    kind = architecture_kind(config)
    if kind != "classification":
        found = ", ".join(config.architectures or []) or "no architectures in config.json"
        raise UserError(f"{key}: {name_or_path} is not a sequence classifier ({found}); predict needs a model trained with `llmtune finetune`.")
    tokenizer = from_pretrained(AutoTokenizer, key, name_or_path)
    model = from_pretrained(AutoModelForSequenceClassification, key, name_or_path)
    return model.to(device()).eval(), tokenizer


def class_probabilities(model: Any, tokenizer: Any, features: list[dict[str, list[int]]], batch_size: int) -> Any:
    """Softmax class probabilities for tokenized examples, in their order.

    Examples are batched by length (less padding, padded per batch) and put back in order.

    Args:
        model: a sequence classifier.
        tokenizer: its tokenizer (for padding).
        features: one dict per example with input_ids (and attention_mask, token_type_ids).
        batch_size: examples per forward pass.

    Returns:
        A numpy array of shape (examples, labels).
    """
    import numpy as np

    rows = list(in_order_probabilities(model, tokenizer, features, batch_size))
    return np.stack(rows) if rows else np.zeros((0, model.config.num_labels), dtype=np.float64)


def in_order_probabilities(
    model: Any, tokenizer: Any, features: list[dict[str, list[int]]], batch_size: int, before_batch: Callable[[], None] | None = None
) -> Iterator[Any]:
    """Each example's softmax class probabilities (a numpy row), yielded in order as soon as its batch and the earlier ones ran.

    The examples are batched shortest first (`llmtune.streaming.in_input_order`), the same batches as a
    sort of the whole list, so the numbers do not depend on how the caller windows its input.
    `before_batch` is called before each forward pass (to flush what was yielded, or to stop).
    """
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding

    from llmtune.streaming import in_input_order

    collate = DataCollatorWithPadding(tokenizer)
    where = next(model.parameters()).device

    def run_batch(batch: list[dict[str, list[int]]]) -> list[Any]:
        if before_batch is not None:
            before_batch()
        with torch.no_grad():
            logits = model(**{k: v.to(where) for k, v in collate(batch).items()}).logits
        return list(torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64))

    yield from in_input_order(features, run_batch, batch_size, lambda f: len(f["input_ids"]))


def tokenize(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenize texts (and pairs), truncated to `max_length`; also count how many had to be cut."""
    full = tokenizer(texts, pairs)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))], truncated


def run(
    model: str,
    input: str,
    stream: TextIO,
    output: str | None = None,
    text_field: str = "text",
    text_pair_field: str | None = None,
    batch_size: int = 32,
    top_k: int | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Classify every record of `input` and stream one JSON line per record, in input order.

    The input is read lazily, a window of `WINDOW_BATCHES` batches at a time (the first before the model
    loads); each line is written as soon as its batch and the earlier ones ran. A bad row further on ends
    the run with a DataError naming its line: lines already written to `stream` stay, an `output` file
    is then never created.

    Each line holds the record's other fields (passthrough, e.g. `id`), then `label`, `score` and
    `probabilities` (label -> probability, most likely first; the top `top_k` when given).

    Args:
        model: a model directory saved by `llmtune finetune` (or any sequence classifier).
        input: .txt/.jsonl/.csv/.tsv file, or `-` for stdin.
        stream: where the JSONL goes when `output` is None or `-`.
        output: a file to write the JSONL to instead.
        text_field / text_pair_field: the field(s) holding the text (and second text of a pair).
        batch_size: examples per forward pass.
        top_k: keep only the k most likely labels in `probabilities`.
        max_length: truncate inputs to this many tokens; default the model's maximum.

    Returns:
        A summary: rows predicted, rows truncated, the max_length used.

    Raises:
        DataError: bad input, naming the line. UserError: a model that is not a classifier.
        BrokenPipeError: the reader of `stream` closed it (`| head -1`).
    """
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
    chunks = windows(open_records(input, text_field, text_pair_field), WINDOW_BATCHES * batch_size)
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
