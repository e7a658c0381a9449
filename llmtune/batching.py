"""Length-grouped batches: less padding per batch, the same examples, reproducible from the seed.

Dynamic padding pads each batch to its longest row, so a batch mixing a 5-token and a 60-token sentence
computes 55 padding positions for the short one. Grouping rows of similar length into the same batch
removes most of that work. transformers' `train_sampling_strategy: group_by_length` does the grouping
(`get_length_grouped_indices`: shuffle, cut into mega-batches of up to 50 batches, sort each by length),
but in transformers 5.23 its Trainer

- draws the shuffle from the global torch RNG (no generator), so the order of a later epoch depends on
  everything that consumed random numbers before it: a run resumed inside epoch 2 sees another order
  than the uninterrupted run, and processes of a DDP job agree only as long as their RNGs happen to;
- groups by the per-device batch, so 2 processes x 8 form other global batches than 1 process x 16;
- strips the `length` column before the sampler sees it (columns the model does not take are removed
  first) and then measures every row in Python, at every evaluation too (about 12 s per 60k rows).

`LengthGroupedTrainer` keeps transformers' grouping and fixes those three: the shuffle is seeded from
(seed, epoch) like accelerate's SeedableRandomSampler, the groups are cut at the global batch, and the
lengths are read from the Arrow offsets of `input_ids` (no pass over the data). Evaluation batches are
sorted by length outright (metrics do not depend on the order; predictions stay paired with labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Seq2SeqTrainer, Trainer
from transformers.trainer_pt_utils import get_length_grouped_indices

GROUP_BY_LENGTH = "group_by_length"


def token_counts(dataset: Any, column: str = "input_ids") -> list[int]:
    """The number of tokens of every row of a tokenized `datasets.Dataset`, read from Arrow list offsets.

    This is what the collator pads to, and costs no pass over the token ids (a dataset with an indices
    mapping, e.g. after `select`, gathers its rows first).
    """
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")[column]).to_pylist()


class SeededLengthGroupedSampler(Sampler[int]):
    """transformers' length grouping, shuffled by a generator seeded from (seed, epoch) only.

    Every process of a DDP job and every resumed run yields the same order for the same epoch; accelerate's
    `BatchSamplerShard` then deals consecutive batches to the processes, so one optimizer step takes one
    run of `batch_size` consecutive indices whatever the number of processes.

    Args:
        lengths: tokens per row.
        batch_size: rows per optimizer step over all processes (per device x accumulation x processes):
            mega-batches are a whole number of these, so no global batch straddles two of them.
        seed: the run's data seed.
        mega_batch_mult: batches per mega-batch; None = transformers' default (50, fewer for small data).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, mega_batch_mult: int | None = None):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        """Trainer (through accelerate's DataLoaderShard) calls this before every epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        indices = get_length_grouped_indices(self.lengths, self.batch_size, self.mega_batch_mult, generator=generator)
        yield from indices
        # As accelerate's SeedableRandomSampler: a loop that never calls set_epoch still gets a new order.
        self.epoch += 1


class LongestFirstSampler(Sampler[int]):
    """Rows sorted by length, longest first (out of memory on the first batch, not the last); ties keep their order."""

    def __init__(self, lengths: list[int]):
        self.order = sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)


class LengthGroupedTrainer(Trainer):
    """A Trainer whose `train_sampling_strategy: group_by_length` is seeded, DDP-consistent and free of a
    startup scan (see the module docstring). Every other strategy is transformers' own."""

    def _grouping(self, dataset: Any) -> bool:
        import datasets

        return (
            self.args.train_sampling_strategy == GROUP_BY_LENGTH
            and isinstance(dataset, datasets.Dataset)
            and "input_ids" in dataset.column_names
        )

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self._grouping(dataset):
            return super()._get_train_sampler(train_dataset)
        args = self.args
        step_rows = args.train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
        seed = args.data_seed if args.data_seed is not None else args.seed
        self._length_sampler = SeededLengthGroupedSampler(token_counts(dataset), step_rows, seed)
        return self._length_sampler

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        # Trainer reaches the sampler's set_epoch through accelerate's wrappers, except in a DDP run resumed
        # mid-epoch: there the sampler sits under SkipBatchSampler > BatchSamplerShard > BatchSampler, one level
        # deeper than accelerate looks, and would replay epoch 0's order. Say the epoch here, whatever the wrapping.
        sampler = getattr(self, "_length_sampler", None)
        if sampler is not None and "epoch" in kwargs:
            sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    def _get_eval_sampler(self, eval_dataset: Any) -> Sampler | None:
        if not self._grouping(eval_dataset):
            return super()._get_eval_sampler(eval_dataset)
        return LongestFirstSampler(token_counts(eval_dataset))


def padded_tokens(lengths: list[int], order: Iterable[int], batch_size: int, multiple: int | None = None) -> int:
    """Positions a dynamic-padding collator computes for `order` cut into batches of `batch_size` (real + padding).

    For tests and benchmarks: the work grouping saves.
    """
    order = list(order)
    total = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        longest = max(batch)
        if multiple:
            longest = -(-longest // multiple) * multiple
        total += longest * len(batch)
    return total


class Seq2SeqLengthGroupedTrainer(LengthGroupedTrainer, Seq2SeqTrainer):
    """transformers' Seq2SeqTrainer with llmtune's seeded length grouping (`LengthGroupedTrainer`).

    Evaluation then generates for rows sorted by length, longest first: batches of similar lengths pad
    little and finish their generation together (`llmtune.tasks.seq2seq.evaluation_order` maps the
    outputs back to the rows).
    """
