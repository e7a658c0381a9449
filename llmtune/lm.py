"""Token-weighted language-model metrics that keep evaluation memory flat.

Trainer would otherwise gather every batch's full-vocabulary logits before `compute_metrics`. Here
`preprocess_logits_for_metrics` reduces each example to three numbers (summed NLL, number of scored
tokens, number predicted right) and `compute_metrics` adds them up, so perplexity is
exp(total NLL / total scored tokens) over the whole set, not a mean of per-batch losses.
"""

from __future__ import annotations

import json
import math
from typing import Any

IGNORE_INDEX = -100


# What a language model's evaluation reports (`lm_metrics`), prefixed eval_ / test_.
LM_METRICS = ("perplexity", "nll_per_token", "token_accuracy", "scored_tokens")
# What each of them is, as a training run's evaluation computes it (`lm_metrics`; the model card says so).
LM_DEFINITIONS = {
    "perplexity": "exp(total NLL / total scored tokens): token-weighted over the whole split, not a mean of batch losses",
    "nll_per_token": "total NLL (natural log) / total scored tokens",
    "token_accuracy": "fraction of scored tokens whose most probable prediction is the reference token",
    "scored_tokens": "number of tokens whose NLL was summed (padding and context positions excluded)",
}


def token_stats(logits: Any, labels: Any, shift: bool) -> Any:
    """Per-example [summed NLL, scored tokens, correct tokens] for one batch.

    Args:
        logits: (batch, seq, vocab) model outputs.
        labels: (batch, seq) targets, -100 where not scored (unmasked tokens for MLM, padding).
        shift: causal LM: token t predicts label t+1 (labels are the inputs, as with transformers' models).

    Returns:
        A float tensor of shape (batch, 3).
    """
    import torch
    import torch.nn.functional as F

    if isinstance(logits, tuple):
        logits = logits[0]
    if shift:
        logits, labels = logits[:, :-1, :], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    nll = F.cross_entropy(logits.float().transpose(1, 2), safe, reduction="none") * mask
    correct = (logits.argmax(dim=-1) == labels) & mask
    return torch.stack([nll.sum(dim=1), mask.sum(dim=1).float(), correct.sum(dim=1).float()], dim=1)


def causal_preprocess(logits: Any, labels: Any) -> Any:
    """`preprocess_logits_for_metrics` for causal LMs."""
    return token_stats(logits, labels, shift=True)


def masked_preprocess(logits: Any, labels: Any) -> Any:
    """`preprocess_logits_for_metrics` for masked LMs."""
    return token_stats(logits, labels, shift=False)


def lm_metrics(eval_pred: Any) -> dict[str, float]:
    """`compute_metrics` over the reduced stats: token-weighted perplexity, accuracy and token count."""
    stats = eval_pred.predictions
    nll, tokens, correct = (float(x) for x in stats.reshape(-1, 3).sum(axis=0))
    if tokens == 0:
        return {"perplexity": float("nan"), "token_accuracy": float("nan"), "scored_tokens": 0}
    mean = nll / tokens
    return {
        "perplexity": math.exp(mean) if mean < 700 else float("inf"),
        "nll_per_token": mean,
        "token_accuracy": correct / tokens,
        "scored_tokens": int(tokens),
    }


def masked_lm_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Trainer's `compute_loss_func` for masked LMs: transformers' ForMaskedLMLoss, summed NLL / scored tokens.

    BERT's own loss is a per-batch mean that ignores `num_items_in_batch`; Trainer counts the scored tokens of
    the whole global batch (every process, every accumulation step) and passes them here, so the loss and its
    gradient are the token mean over the global batch, the same with 1 process or N, with or without
    gradient accumulation.
    """
    from transformers.loss.loss_utils import ForMaskedLMLoss

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return ForMaskedLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch, ignore_index=IGNORE_INDEX)


class MaskingCollator:
    """One collator for masked-LM training and evaluation: Trainer takes a single `data_collator`.

    Batches without `labels` are masked by transformers' `DataCollatorForLanguageModeling` (the 80/10/10
    rule, or whole words); batches that already carry `labels` (see `fixed_eval_masking`) are only
    padded, labels with -100, so evaluation sees the same masks every time.

    Args:
        tokenizer: the run's tokenizer (it needs a mask token).
        probability: fraction of tokens chosen for prediction.
        whole_word: mask every piece of a word together (needs `offset_mapping` in the features).
        pad_to_multiple_of: round the padded length up to a multiple of this.
        seed: seed the masking (None = the global torch RNG, i.e. different masks every epoch).
        batch_seed: mask each training batch with a generator seeded from (batch_seed, epoch, the batch's
            token ids) instead. The masks are then the same whether a run went through uninterrupted or was
            resumed from a checkpoint: the global RNG is restored only after the resumed run has already
            collated its first batches, so masks drawn from it would differ. Set `epoch` per epoch
            (`MaskingEpoch` does) so each epoch masks anew.
    """

    def __init__(
        self,
        tokenizer: Any,
        probability: float = 0.15,
        whole_word: bool = False,
        pad_to_multiple_of: int | None = 8,
        seed: int | None = None,
        batch_seed: int | None = None,
    ):
        from transformers import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

        # Whole-word masking in transformers replaces every chosen word by [MASK]; saying so avoids its warning.
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word else {}
        self.mask = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, whole_word_mask=whole_word, mlm_probability=probability, pad_to_multiple_of=pad_to_multiple_of, seed=seed, **replace
        )
        self.pad = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of, label_pad_token_id=IGNORE_INDEX)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        self.batch_seed = batch_seed
        self.epoch = 0

    def _batch_generator(self, features: list[dict[str, Any]]) -> Any:
        import hashlib

        import torch

        key = json.dumps([self.batch_seed, self.epoch, [list(map(int, f["input_ids"])) for f in features]])
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "labels" in features[0]:
            return self.pad(features)
        if "offset_mapping" in features[0]:
            # tokenizer.pad leaves offset_mapping alone, so pad it here to the length the inputs will get.
            length = max(len(f["input_ids"]) for f in features)
            if self.pad_to_multiple_of:
                length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
            features = [dict(f) for f in features]
            for f in features:
                fill = [[0, 0]] * (length - len(f["offset_mapping"]))
                f["offset_mapping"] = fill + list(f["offset_mapping"]) if self.left else list(f["offset_mapping"]) + fill
        if self.batch_seed is not None:
            self.mask.generator = self._batch_generator(features)
        return self.mask(features)


def masking_epoch(collator: MaskingCollator) -> Any:
    """A Trainer callback telling `collator` the epoch about to start (its `batch_seed` masks depend on it)."""
    from transformers import TrainerCallback

    class MaskingEpoch(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # state.epoch is a whole number at an epoch's start, and N.x when resuming inside epoch N.
            collator.epoch = int(state.epoch or 0)

    return MaskingEpoch()


def fixed_eval_masking(dataset: Any, tokenizer: Any, probability: float = 0.15, whole_word: bool = False, seed: int = 42, batch_size: int = 256) -> Any:
    """Mask an evaluation set once, with a seed, so the same model always gets the same masked-LM scores.

    Training masks differently every epoch; an evaluation that did the same would report a different
    perplexity for the same model on every run. Evaluate the result with `MaskingCollator` (or any
    collator that pads `labels` with -100).

    Args:
        dataset: tokenized examples with input_ids (and attention_mask, token_type_ids, special_tokens_mask,
            and offset_mapping for whole-word masking), e.g. from `llmtune.data.tokenize_for_lm`.
        tokenizer: the tokenizer that made them (mask token, vocabulary size, special tokens).
        probability: fraction of tokens chosen for prediction.
        whole_word: mask whole words (needs offset_mapping).
        seed: seeds the masking; the same seed gives the same masks.
        batch_size: examples masked at a time (memory only; masks depend on the order and the seed).

    Returns:
        A `datasets.Dataset` with input_ids (masked), labels (-100 where not scored) and the
        attention_mask/token_type_ids that were there, unpadded.

    Raises:
        ValueError: whole_word without offset_mapping in the dataset.
    """
    from datasets import Dataset

    if whole_word and "offset_mapping" not in dataset.column_names:
        raise ValueError("whole-word masking needs offset_mapping in the dataset (tokenize with return_offsets_mapping=True)")
    collator = MaskingCollator(tokenizer, probability, whole_word, pad_to_multiple_of=None, seed=seed)
    kept = [c for c in ("attention_mask", "token_type_ids") if c in dataset.column_names]
    masker_inputs = [c for c in ("input_ids", "special_tokens_mask", "offset_mapping") if c in dataset.column_names]
    out: dict[str, list] = {"input_ids": [], "labels": [], **{c: [] for c in kept}}
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        features = [{c: rows[c][i] for c in masker_inputs} for i in range(len(rows["input_ids"]))]
        batch = collator(features)
        for i, feature in enumerate(features):
            n = len(feature["input_ids"])
            span = slice(-n, None) if collator.left else slice(0, n)
            out["input_ids"].append(batch["input_ids"][i, span].tolist())
            out["labels"].append(batch["labels"][i, span].tolist())
            for c in kept:
                out[c].append(rows[c][i])
    return Dataset.from_dict(out)


def encode_masked(splits: Any, tokenizer: Any, data: Any, mlm: Any, seed: int) -> Any:
    """Tokenize text splits for masked-LM (packed or line by line) and mask every split but `train` once, with `seed`.

    `llmtune pretrain-mlm` encodes its data with it and `llmtune evaluate` its evaluation set, so a
    pretrain-mlm model directory scores its run's own eval_perplexity.

    Args:
        splits: text splits (a DatasetDict).
        tokenizer: a tokenizer with a mask token (and a fast one for whole-word masking).
        data: the data section (text_column, max_length, packing).
        mlm: the masking settings (`MLMSection`: probability, whole_word).
        seed: the seed of the fixed masking.

    Returns:
        `train` (unmasked; masked per batch by the collator) and the other splits (input_ids + labels).

    Raises:
        UserError: the tokenizer has no mask token, or is slow and whole-word masking is asked for.
    """
    from llmtune import data as data_lib
    from llmtune.errors import UserError

    if tokenizer.mask_token is None:
        raise UserError("tokenizer: it has no mask token, so it cannot be used for masked-LM training. Use a BERT-style tokenizer or tokenizer.train.")
    if mlm.whole_word and not getattr(tokenizer, "is_fast", False):
        raise UserError("mlm.whole_word: needs a fast tokenizer (word boundaries come from its offsets). Set mlm.whole_word: false.")
    tokenized = data_lib.tokenize_for_lm(splits, tokenizer, data, packing=data.packing, offsets=mlm.whole_word)
    for role in [r for r in tokenized if r != "train"]:
        tokenized[role] = fixed_eval_masking(tokenized[role], tokenizer, mlm.probability, mlm.whole_word, seed)
    return tokenized
