"""`llmtune evaluate` of a causal LM: token-weighted perplexity, per text or in sliding windows."""

from __future__ import annotations

import logging
from typing import Any

from llmtune import data as data_lib
from llmtune.errors import DataError, UserError
from llmtune.evaluation.common import PREFIX, Context, load_eval_split, load_model
from llmtune.lm import LM_METRICS

logger = logging.getLogger(__name__)

PERPLEXITY_GUIDE = "https://huggingface.co/docs/transformers/perplexity"


def metric_names(model_config: Any) -> list[str]:
    """Token-weighted perplexity, mean NLL per token, token accuracy and the number of scored tokens."""
    return [PREFIX + name for name in LM_METRICS]


def sliding_windows(ids: list[int], max_length: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """Cut one long token sequence into the transformers perplexity guide's strided windows.

    Each window holds up to `max_length` tokens and starts `stride` after the previous one; only the
    tokens not scored by an earlier window are labels, the rest (the context) are -100.

    Returns:
        (input_ids, labels) per window.
    """
    from llmtune.lm import IGNORE_INDEX

    windows = []
    previous_end = 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        new = end - previous_end
        window = ids[begin:end]
        windows.append((window, [IGNORE_INDEX] * (len(window) - new) + window[-new:]))
        previous_end = end
        if end == len(ids):
            break
    return windows


def score_windows(model: Any, windows: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int) -> Any:
    """Per-window [summed NLL, scored tokens, correct tokens] (see `llmtune.lm.token_stats`), right-padded batches."""
    import numpy as np
    import torch

    from llmtune.lm import IGNORE_INDEX, token_stats

    where = next(model.parameters()).device
    order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))
    stats = np.zeros((len(windows), 3), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(windows[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                window, target = windows[i]
                ids[row, : len(window)] = torch.tensor(window)
                labels[row, : len(target)] = torch.tensor(target)
                mask[row, : len(window)] = 1
            logits = model(input_ids=ids.to(where), attention_mask=mask.to(where)).logits
            stats[chunk] = token_stats(logits, labels.to(where), shift=True).double().cpu().numpy()
    return stats


def evaluate(ctx: Context) -> dict[str, Any]:
    """Token-weighted perplexity of a causal LM: per text, or sliding-window over the joined texts (eval.stride)."""
    from transformers import EvalPrediction

    from llmtune.lm import lm_metrics
    from llmtune.modeling import context_length

    cfg, data = ctx.cfg, ctx.data
    stride = cfg.eval.stride
    model, tokenizer = load_model("causal-lm", cfg)
    max_length = context_length(tokenizer, model.config, data.max_length)
    if stride is not None and stride > max_length:
        raise UserError(f"eval.stride: {stride} is longer than the window ({max_length} tokens, data.max_length): tokens would be skipped. Use a stride <= {max_length}.")
    split = cfg.eval.split
    splits = load_eval_split(data, split, ctx.seed)
    data_lib.require_columns(splits, {"data.text_column": data.text_column})
    texts = [str(t) for t in splits[split][data.text_column] if t is not None and str(t).strip()]
    if not texts:
        raise DataError(f"data.text_column: the {split} data has no non-empty text in column '{data.text_column}'.")
    if stride is None:
        tokenized = data_lib.tokenize_for_lm(splits, tokenizer, data.model_copy(update={"max_length": max_length}), packing=False)[split]
        windows = [(ids, ids) for ids in tokenized["input_ids"]]
        full = sum(len(ids) >= max_length for ids, _ in windows)
        if full:
            logger.warning("%d of %d texts fill the whole %d-token context and may be cut; set eval.stride for sliding-window perplexity", full, len(windows), max_length)
        definition = {
            "method": "per-text",
            "definition": "exp(total NLL / total scored tokens): each text scored on its own, truncated to max_length; "
            "the first token of each text is context only",
            "max_length": max_length,
        }
    else:
        # The guide joins the corpus with blank lines into one sequence before windowing it.
        windows = sliding_windows(tokenizer("\n\n".join(texts))["input_ids"], max_length, stride)
        definition = {
            "method": "sliding-window",
            "definition": "exp(total NLL / total scored tokens) over the texts joined by blank lines, in windows of max_length "
            "tokens moved by stride, scoring only each window's new tokens (the rest is context, label -100)",
            "max_length": max_length,
            "stride": stride,
            "windows": len(windows),
            "reference": PERPLEXITY_GUIDE,
            "note": "scored tokens are counted exactly; the guide's num_valid_tokens - batch_size counts one too few per later window",
        }
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    stats = score_windows(model, windows, cfg.eval.batch_size, pad_id)
    values = lm_metrics(EvalPrediction(predictions=stats, label_ids=None))
    metrics = {PREFIX + name: values.get(name) for name in LM_METRICS}
    info = {
        "eval_perplexity": {**definition, "reference": PERPLEXITY_GUIDE},
        "eval_nll_per_token": {"definition": "total NLL (natural log) / total scored tokens", "method": definition["method"]},
        "eval_token_accuracy": {"definition": "fraction of scored tokens whose most probable next token is the reference"},
        "eval_scored_tokens": {"definition": "number of tokens whose NLL was summed"},
    }
    return {**metrics, "perplexity_definition": definition["method"], "num_examples": len(texts), "metrics_info": info}
