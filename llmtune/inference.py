"""Batched forward passes over a trained sequence classifier, shared by `llmtune predict` and `llmtune evaluate`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


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
