"""`llmtune finetune` with `task: causal-lm`: a tiny GPT-2 from scratch through the real CLI, and its parts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import check_model_card, REPO, run_cli, stdout_json, write_config

SHAKESPEARE = REPO / "data" / "tinyshakespeare" / "input.txt"
TINY_GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}


def tiny_causal_config(train: Path, output_dir: Path, **data: object) -> dict:
    """A causal-lm finetune config: tiny GPT-2 and a BPE tokenizer trained on the data, a few seconds of training."""
    return {
        "seed": 0,
        "task": "causal-lm",
        "model": {"from_config": dict(TINY_GPT2)},
        "tokenizer": {"train": {"type": "bpe", "vocab_size": 300, "min_frequency": 1}},
        "data": {"train_file": str(train), "validation_split": 0.1, "max_length": 64, **data},
        "training": {
            "output_dir": str(output_dir),
            "max_steps": 8,
            "per_device_train_batch_size": 16,
            "learning_rate": 3e-3,
            "logging_steps": 4,
            "disable_tqdm": True,
        },
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("causal")
    train = tmp / "train.txt"
    train.write_text("\n".join(SHAKESPEARE.read_text(encoding="utf-8").splitlines()[:1500]) + "\n", encoding="utf-8")
    out = tmp / "run"
    proc = run_cli("finetune", str(write_config(tmp / "cfg.yaml", tiny_causal_config(train, out))))
    return {"proc": proc, "out": out, "train": train}


def test_finetune_reports_token_weighted_perplexity(trained: dict) -> None:
    metrics = stdout_json(trained["proc"])
    assert metrics["eval_scored_tokens"] > 100
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_nll_per_token"]))
    # 8 steps of training already beat a uniform guess over the 300-token vocabulary.
    assert 1 < metrics["eval_perplexity"] < 300
    assert json.loads((trained["out"] / "metrics.json").read_text()) == metrics


@pytest.mark.smoke("causal-lm")
def test_output_dir_loads_in_a_text_generation_pipeline(trained: dict) -> None:
    from transformers import AutoTokenizer, pipeline

    stdout_json(trained["proc"])
    out = trained["out"]
    card = check_model_card(out, stdout_json(trained["proc"]), "llmtune generate")
    assert "pipeline_tag: text-generation" in card
    assert "| eval_perplexity |" in card and "token-weighted over the whole split" in card
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level BPE gives the spaces back
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    generate = pipeline("text-generation", model=str(out))
    result = generate("ROMEO:", max_new_tokens=5, do_sample=False)
    assert result[0]["generated_text"].startswith("ROMEO:")


def test_collator_scores_real_eos_but_not_padding() -> None:
    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer
    from llmtune.tasks.causal_lm import CausalLMCollator

    tokenizer = train_tokenizer(TokenizerTrainSection(type="bpe", vocab_size=120, min_frequency=1), ["to be or not to be"] * 5, 32)
    tokenizer.pad_token = tokenizer.eos_token
    eos = tokenizer.eos_token_id
    short = tokenizer("to be" + tokenizer.eos_token)
    long = tokenizer("to be or not to be" + tokenizer.eos_token)
    batch = CausalLMCollator(tokenizer, pad_to_multiple_of=None)([dict(short), dict(long)])
    labels, ids = batch["labels"].tolist(), batch["input_ids"].tolist()
    assert labels[1] == ids[1] and labels[1][-1] == eos  # the document's EOS is a target
    n = len(short["input_ids"])
    assert labels[0][n - 1] == eos and labels[0][n:] == [-100] * (len(ids[0]) - n)


def test_txt_paragraphs_become_documents_and_packing_keeps_every_token(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from llmtune.config.schema import DataSection, TokenizerTrainSection
    from llmtune.data import tokenize_for_lm
    from llmtune.modeling import train_tokenizer
    from llmtune.tasks.causal_lm import paragraphs

    lines = ["ROMEO:", "But soft, what light", "", "", "JULIET:", "Ay me!", ""]
    docs = paragraphs(Dataset.from_dict({"text": lines}), "text")
    texts = list(docs["text"])
    assert texts == ["ROMEO:\nBut soft, what light", "JULIET:\nAy me!"]
    tokenizer = train_tokenizer(TokenizerTrainSection(type="bpe", vocab_size=150, min_frequency=1), texts * 3, 8)
    data = DataSection(train_file="x.txt", max_length=8)
    packed = tokenize_for_lm(DatasetDict(train=docs), tokenizer, data, packing=True, add_eos=True)["train"]
    expected = sum(len(tokenizer(t + tokenizer.eos_token)["input_ids"]) for t in texts)
    assert sum(sum(mask) for mask in packed["attention_mask"]) == expected
    assert {len(ids) for ids in packed["input_ids"]} == {8}  # every block full length, the last one padded
    rows = tokenize_for_lm(DatasetDict(train=docs), tokenizer, data.model_copy(update={"packing": False}), packing=False, add_eos=True)
    assert len(rows["train"]) == 2


def test_label_only_keys_are_rejected_for_causal_lm(tmp_path: Path) -> None:
    from llmtune.config import load_config
    from llmtune.errors import ConfigError

    cfg = tiny_causal_config(SHAKESPEARE, tmp_path / "run", label_column="sentiment")
    cfg["metrics"] = ["accuracy"]
    with pytest.raises(ConfigError) as exc:
        load_config("finetune", write_config(tmp_path / "c.yaml", cfg))
    assert "metrics, data.label_column only apply to task: classification" in str(exc.value)
    cfg = tiny_causal_config(SHAKESPEARE, tmp_path / "run", packing=False)
    loaded = load_config("finetune", write_config(tmp_path / "ok.yaml", cfg))
    assert loaded.task == "causal-lm" and loaded.data.packing is False
