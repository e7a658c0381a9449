"""Batched inference that streams: length-grouped batches, results handed on in input order as soon as they are ready.

`llmtune generate` and `llmtune predict` read their inputs lazily and write one JSONL record per input as
soon as that input and every earlier one are done, so `llmtune predict ... | head -1` returns after the
first batch. Grouping inputs of similar length (less padding) conflicts with input order when the whole
input is sorted; here only a window of `WINDOW_BATCHES` batches is read and sorted at a time, and within
it the batch holding the earliest unfinished input runs first, so the first record comes after one batch.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Batches read and length-sorted together. Larger windows pad less (inputs of similar length meet more
# often) but hold more inputs in memory and validate further ahead before the first batch runs; 16 is
# the order of magnitude of the "mega-batches" transformers' length-grouped sampler uses (50).
WINDOW_BATCHES = 16


def windows(items: Iterable[Item], size: int | None) -> Iterator[list[Item]]:
    """The items in consecutive lists of `size` (the last one shorter); `None` means one list of all of them.

    Items are pulled from `items` only as each window is needed, so a reader that validates rows
    raises at a bad row after the earlier windows were handed on.
    """
    iterator = iter(items)
    while True:
        window = list(islice(iterator, size)) if size is not None else list(iterator)
        if not window:
            return
        yield window
        if size is None or len(window) < size:
            return


def in_input_order(
    window: list[Item],
    run_batch: Callable[[list[Item]], list[Result]],
    batch_size: int,
    sort_key: Callable[[Item], Any],
) -> Iterator[Result]:
    """Run `window` through `run_batch` in length-grouped batches; yield the results in input order, early.

    The window is sorted by `(sort_key(item), position)` and cut into batches of `batch_size`, exactly as
    a whole-input sort of the same items would batch them. The batches then run in order of the earliest
    input each holds, so every batch completes at least the next input still missing, and each result
    is yielded as soon as it and all earlier ones are done (the first after one batch).

    Args:
        window: the inputs (already validated).
        run_batch: maps a batch of inputs to one result per input, in the batch's order.
        batch_size: inputs per batch.
        sort_key: groups inputs of similar length (e.g. the token count, or minus it for longest-first).

    Yields:
        One result per input of `window`, in its order.
    """
    order = sorted(range(len(window)), key=lambda i: (sort_key(window[i]), i))
    batches = sorted((order[s : s + batch_size] for s in range(0, len(order), batch_size)), key=min)
    results: dict[int, Result] = {}
    ready = 0
    for batch in batches:
        for index, result in zip(batch, run_batch([window[i] for i in batch]), strict=True):
            results[index] = result
        while ready in results:
            yield results.pop(ready)
            ready += 1


def reader_gone(stream: Any) -> bool:
    """Whether `stream` is a pipe (or socket) whose reading end was closed, e.g. by `| head -1`.

    Checked before each batch so that a closed pipe stops the work at once instead of after computing one
    more batch whose first write would fail. Files, terminals and streams without a descriptor say no.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR is reported whatever the mask: on a pipe's write end, no reader is left
    return any(event & select.POLLERR for _, event in poller.poll(0))


def stop_if_reader_gone(stream: Any) -> None:
    """Raise BrokenPipeError, as the next write would, if nobody reads `stream` any more (see `reader_gone`)."""
    if reader_gone(stream):
        raise BrokenPipeError("the reader of the results closed the pipe")
