"""The unigram perplexity a masked LM must beat: what a model that ignores the context would score.

Counts the training tokens with the run's tokenizer (special tokens excluded, as they are never
masked) and scores each validation token with its training frequency (add-one smoothed, so unseen
tokens get a finite cost): exp(-mean log p(token)) over every validation token. That is the
perplexity of predicting each masked token from its frequency alone. Masked-LM perplexity is
measured on a random 15% of the same tokens, so the two are directly comparable in expectation.

Usage:
    python scripts/mlm_unigram_baseline.py runs/mlm-quickstart                  # tokenizer + data from its llmtune.yaml
    python scripts/mlm_unigram_baseline.py runs/mlm-quickstart --config configs/mlm/quickstart.yaml
Prints one JSON object: unigram_perplexity, the run's eval_perplexity (from metrics.json) and token counts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def token_ids(texts: list[str], tokenizer: object) -> list[int]:
    """Every non-special token id of `texts`, in order."""
    special = set(tokenizer.all_special_ids)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [i for row in ids for i in row if i not in special]


def unigram_perplexity(train_ids: list[int], eval_ids: list[int], vocab_size: int) -> float:
    """exp(cross-entropy of the add-one-smoothed training unigram distribution on the evaluation tokens)."""
    counts = Counter(train_ids)
    total = len(train_ids) + vocab_size
    nll = -sum(math.log((counts[i] + 1) / total) for i in eval_ids)
    return math.exp(nll / len(eval_ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a pretrain-mlm output directory (tokenizer, llmtune.yaml, metrics.json)")
    parser.add_argument("--config", type=Path, help="config for the data; default: the run's llmtune.yaml")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from llmtune.config import load_config
    from llmtune.tasks.pretrain_mlm import load_texts

    cfg = load_config("pretrain-mlm", args.config or args.run_dir / "llmtune.yaml")
    splits = load_texts(cfg)
    tokenizer = AutoTokenizer.from_pretrained(args.run_dir)
    column = cfg.data.text_column
    train = token_ids([str(t) for t in splits["train"][column] if t is not None], tokenizer)
    held_out = token_ids([str(t) for t in splits["validation"][column] if t is not None], tokenizer)
    result = {
        "unigram_perplexity": unigram_perplexity(train, held_out, len(tokenizer)),
        "train_tokens": len(train),
        "validation_tokens": len(held_out),
    }
    metrics = args.run_dir / "metrics.json"
    if metrics.is_file():
        result["eval_perplexity"] = json.loads(metrics.read_text())["eval_perplexity"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
