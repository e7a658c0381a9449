"""Token-weighted language-model metrics that keep evaluation memory flat.

Trainer would otherwise gather every batch's full-vocabulary logits before `compute_metrics`. Here
`preprocess_logits_for_metrics` reduces each example to three numbers (summed NLL, number of scored
tokens, number predicted right) and `compute_metrics` adds them up, so perplexity is
exp(total NLL / total scored tokens) over the whole set, not a mean of per-batch losses.
"""

from __future__ import annotations

import math
from typing import Any

IGNORE_INDEX = -100


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
