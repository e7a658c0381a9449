"""`llmtune pretrain-mlm`: tiny BERTs pretrained through the CLI, the perplexity definition, fixed eval masking."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from conftest import check_model_card, TINY_BERT, invoke, run_cli, sentiment_rows, stdout_json, tiny_classification_config, write_config, write_tsv
from llmtune import lm


def corpus(path: Path, n: int, seed: int) -> Path:
    """Plain text, one sentence a line, with enough repetition for a tiny model to learn something."""
    path.write_text("\n".join(text for text, _ in sentiment_rows(n, seed=seed)) + "\n", encoding="utf-8")
    return path


def mlm_config(train: Path, output_dir: Path, **data: object) -> dict:
    return {
        "seed": 0,
        "model": {"from_config": {k: v for k, v in TINY_BERT.items() if k != "model_type"}},  # BERT by default
        "tokenizer": {"train": {"type": "wordpiece", "vocab_size": 200, "min_frequency": 1}},
        "data": {"train_file": str(train), "validation_split": 0.2, "max_length": 16, **data},
        "mlm": {"probability": 0.15},
        "training": {
            "output_dir": str(output_dir),
            "num_train_epochs": 3,
            "per_device_train_batch_size": 8,
            "learning_rate": 2e-3,
            "logging_steps": 5,
            "save_strategy": "epoch",
            "disable_tqdm": True,
        },
    }


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """From scratch, packed, through the real CLI (subprocess): the run the other tests reuse."""
    tmp = tmp_path_factory.mktemp("mlm")
    train = corpus(tmp / "corpus.txt", 300, seed=3)
    out = tmp / "run"
    config = write_config(tmp / "mlm.yaml", mlm_config(train, out))
    proc = run_cli("pretrain-mlm", str(config))
    return {"proc": proc, "out": out, "config": config, "tmp": tmp, "train": train}


@pytest.mark.smoke("masked-lm")
def test_from_scratch_packed_through_the_cli(scratch: dict) -> None:
    from transformers import AutoModelForMaskedLM, pipeline

    metrics = stdout_json(scratch["proc"])
    out = scratch["out"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for name in ("model.safetensors", "config.json", "tokenizer.json", "llmtune.yaml", "README.md"):
        assert (out / name).is_file(), name
    assert "pipeline_tag: fill-mask" in check_model_card(out, metrics, "llmtune evaluate")
    assert metrics["eval_scored_tokens"] > 0 and 0 <= metrics["eval_token_accuracy"] <= 1
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_nll_per_token"]))
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.model_type == "bert"
    # Well below guessing uniformly over the vocabulary: it learned something.
    assert metrics["eval_perplexity"] < model.config.vocab_size / 2
    fill = pipeline("fill-mask", model=str(out))
    assert len(fill("the film was [MASK] and good")) == 5


def test_eval_masking_is_fixed_and_reproduces_the_runs_perplexity(scratch: dict) -> None:
    """Re-masking the validation set gives the same masks and the run's own eval_perplexity, twice."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, Trainer, TrainingArguments

    from llmtune.config import load_config
    from llmtune.tasks.pretrain_mlm import encode, load_texts

    metrics = stdout_json(scratch["proc"])
    cfg = load_config("pretrain-mlm", scratch["out"] / "llmtune.yaml")
    tokenizer = AutoTokenizer.from_pretrained(scratch["out"])
    splits = load_texts(cfg)
    first, second = encode(cfg, splits, tokenizer)["validation"], encode(cfg, splits, tokenizer)["validation"]
    assert first["labels"] == second["labels"] and first["input_ids"] == second["input_ids"]
    other_seed = lm.fixed_eval_masking(_tokenized(cfg, splits, tokenizer), tokenizer, seed=cfg.seed + 1)
    assert other_seed["labels"] != first["labels"]

    trainer = Trainer(
        model=AutoModelForMaskedLM.from_pretrained(scratch["out"]),
        args=TrainingArguments(output_dir=str(scratch["tmp"] / "eval"), per_device_eval_batch_size=7, report_to="none", remove_unused_columns=False),
        data_collator=lm.MaskingCollator(tokenizer),
        preprocess_logits_for_metrics=lm.masked_preprocess,
        compute_metrics=lm.lm_metrics,
    )
    a, b = trainer.evaluate(first), trainer.evaluate(second)
    assert a["eval_perplexity"] == b["eval_perplexity"]
    # A different batch size changes the batches, not the token-weighted perplexity.
    assert a["eval_perplexity"] == pytest.approx(metrics["eval_perplexity"], rel=1e-5)
    assert a["eval_scored_tokens"] == metrics["eval_scored_tokens"]


def _tokenized(cfg: object, splits: object, tokenizer: object) -> object:
    from llmtune.data import tokenize_for_lm

    return tokenize_for_lm(splits, tokenizer, cfg.data, packing=cfg.data.packing)["validation"]


def test_pretrained_model_finetunes_as_a_classifier(scratch: dict) -> None:
    """pretrain-mlm -> finetune: the MLM output directory is a model.name_or_path for classification."""
    from safetensors.torch import load_file

    from llmtune.config import load_config
    from llmtune.tasks import classification

    stdout_json(scratch["proc"])
    tmp = scratch["tmp"]
    train = write_tsv(tmp / "train.tsv", sentiment_rows(48, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(16, seed=2))
    raw = tiny_classification_config(train, dev, tmp / "cls", max_steps=2, learning_rate=1e-5, save_strategy="no")
    overrides = [f"model.name_or_path={scratch['out']}", "model.from_config=null", "tokenizer.train=null"]
    metrics = classification.run(load_config("finetune", write_config(tmp / "cls.yaml", raw), overrides))
    assert 0 <= metrics["eval_accuracy"] <= 1
    saved = json.loads((tmp / "cls" / "config.json").read_text())
    assert saved["architectures"] == ["BertForSequenceClassification"]
    # The encoder came from the MLM run (two tiny steps barely move it); the classification head is new.
    mlm_weights, cls_weights = load_file(scratch["out"] / "model.safetensors"), load_file(tmp / "cls" / "model.safetensors")
    key = "bert.embeddings.word_embeddings.weight"
    assert torch.allclose(mlm_weights[key], cls_weights[key], atol=1e-3)
    assert "classifier.weight" in cls_weights and not any(k.startswith("classifier") for k in mlm_weights)


def test_line_by_line_continued_whole_word(scratch: dict, tmp_path: Path) -> None:
    """Through the CLI (in-process): continue from the scratch run's model, one example per row, whole words masked."""
    from transformers import AutoTokenizer

    from llmtune.config import load_config
    from llmtune.tasks import pretrain_mlm

    stdout_json(scratch["proc"])
    raw = mlm_config(scratch["train"], tmp_path / "run", packing=False, max_train_samples=64)
    raw["model"] = {"name_or_path": str(scratch["out"])}
    raw.pop("tokenizer")
    raw["mlm"]["whole_word"] = True
    raw["training"].update(num_train_epochs=1, save_strategy="no")
    config = write_config(tmp_path / "c.yaml", raw)
    result = invoke("pretrain-mlm", str(config))
    assert result.exit_code == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout)
    cfg = load_config("pretrain-mlm", config)
    assert metrics["eval_scored_tokens"] > 0 and metrics["eval_perplexity"] < 78
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eval_perplexity"] == metrics["eval_perplexity"]
    # Line by line: each validation row is its own example (13 of the 64 rows held out).
    splits = pretrain_mlm.load_texts(cfg)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert len(splits["validation"]) == len(pretrain_mlm.encode(cfg, splits, tokenizer)["validation"]) == 13


def test_whole_word_masking_masks_all_pieces_of_a_word(scratch: dict) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(scratch["out"])
    words = ["unbelievably", "superbly", "clumsiness", "charmingly"]
    texts = [" ".join(random.Random(i).choices(words, k=12)) for i in range(8)]
    enc = tokenizer(texts, return_special_tokens_mask=True, return_offsets_mapping=True)
    masked = lm.fixed_eval_masking(Dataset.from_dict(dict(enc)), tokenizer, probability=0.3, whole_word=True, seed=0)
    checked = 0
    for i in range(len(texts)):
        word_ids = enc.word_ids(i)
        labels = masked["labels"][i]
        for w in set(x for x in word_ids if x is not None):
            pieces = [labels[t] != lm.IGNORE_INDEX for t, x in enumerate(word_ids) if x == w]
            checked += len(pieces) > 1
            assert all(pieces) or not any(pieces)
    assert checked > 0


def test_perplexity_is_token_weighted_not_a_mean_of_batch_losses() -> None:
    from transformers import EvalPrediction

    gen = torch.Generator().manual_seed(0)
    vocab = 11
    batches = []
    for size, scored in ((2, 1), (3, 6)):  # two batches with very different numbers of masked tokens
        logits = torch.randn(size, 8, vocab, generator=gen) * 3
        labels = torch.full((size, 8), lm.IGNORE_INDEX)
        flat = labels.view(-1)
        positions = torch.randperm(size * 8, generator=gen)[:scored]
        flat[positions] = torch.randint(vocab, (scored,), generator=gen)
        batches.append((logits, labels))

    # By hand: -log softmax at every scored position, summed over both batches, divided by their count.
    nlls = [
        -torch.log_softmax(logits[b, t], dim=-1)[labels[b, t]]
        for logits, labels in batches
        for b in range(labels.shape[0])
        for t in range(labels.shape[1])
        if labels[b, t] != lm.IGNORE_INDEX
    ]
    expected = math.exp(float(torch.stack(nlls).mean()))
    stats = torch.cat([lm.masked_preprocess(logits, labels) for logits, labels in batches]).numpy()
    got = lm.lm_metrics(EvalPrediction(predictions=stats, label_ids=None))
    assert got["scored_tokens"] == 7
    assert got["perplexity"] == pytest.approx(expected, rel=1e-5)
    batch_losses = [
        float(torch.nn.functional.cross_entropy(logits.view(-1, vocab), labels.view(-1), ignore_index=lm.IGNORE_INDEX))
        for logits, labels in batches
    ]
    assert math.exp(sum(batch_losses) / 2) != pytest.approx(expected, rel=1e-3)


def test_config_errors_are_named(tmp_path: Path, scratch: dict) -> None:
    from llmtune.config import load_config
    from llmtune.errors import ConfigError

    raw = mlm_config(scratch["train"], tmp_path / "run", packng=True)
    raw["mlm"]["probability"] = 1.5
    with pytest.raises(ConfigError) as err:
        load_config("pretrain-mlm", write_config(tmp_path / "c.yaml", raw))
    assert "data.packng" in str(err.value) and "Did you mean 'packing'?" in str(err.value)
    assert "mlm.probability" in str(err.value)
