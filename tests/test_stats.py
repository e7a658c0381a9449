"""`llmtune validate CONFIG --stats`: the dry run's figures against a hand count, the steps Trainer will take, the
parameter count of the real model, and nothing written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import TINY_BERT, invoke, tiny_classification_config, write_config, write_tsv

# Row k holds the word "good" k times: with a WordPiece vocabulary that has the word, [CLS] + k tokens + [SEP].
TRAIN = [(" ".join(["good"] * k), k % 2) for k in range(1, 11)]  # lengths 3..12, labels 1,0,1,0,...
DEV = [("good good", 0), ("good", 0), ("good good good", 0)]  # lengths 4, 3, 5; no positive row


def _config(tmp: Path, **training: object) -> Path:
    train = write_tsv(tmp / "train.tsv", TRAIN)
    dev = write_tsv(tmp / "dev.tsv", DEV)
    config = tiny_classification_config(train, dev, tmp / "run", **training)
    config["data"]["max_length"] = 8
    config["data"]["label_names"] = ["negative", "positive"]
    return write_config(tmp / "cfg.yaml", config)


def _stats(*args: str) -> dict:
    result = invoke("validate", *args, "--stats")
    assert result.exit_code == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 1
    return {**json.loads(result.stdout), "_stderr": result.stderr}


def test_figures_match_a_hand_count(tmp_path: Path) -> None:
    stats = _stats(str(_config(tmp_path, per_device_train_batch_size=3, gradient_accumulation_steps=2, num_train_epochs=3)))
    train, dev = stats["splits"]["train"], stats["splits"]["validation"]
    assert train["rows"] == 10 and dev["rows"] == 3
    # Lengths 3..12: nearest-rank p50 is the 5th (7), p90 the 9th (11), p99 the 10th (12); 9..12 are longer than 8.
    assert train["tokens"] == {"p50": 7, "p90": 11, "p99": 12, "max": 12, "limit": 8, "truncated": 4, "truncated_share": 0.4}
    assert dev["tokens"] == {"p50": 4, "p90": 5, "p99": 5, "max": 5, "limit": 8, "truncated": 0, "truncated_share": 0.0}
    assert train["labels"] == {"negative": 5, "positive": 5} and dev["labels"] == {"negative": 3, "positive": 0}
    assert stats["warnings"] == ["label 'positive' has no validation rows: a sequence classifier never sees it there"]
    # 10 rows in batches of 3: 4 batches, 2 optimizer steps an epoch with accumulation 2, 3 epochs.
    steps = stats["training"]
    assert (steps["steps_per_epoch"], steps["total_optimizer_steps"], steps["global_batch_size"]) == (2, 6, 6)
    assert "warning: label 'positive' has no validation rows" in stats["_stderr"]
    assert "train: 10 rows" in stats["_stderr"] and "p50 7  p90 11  p99 12  max 12, 4 (40.00%) longer than 8" in stats["_stderr"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists()


@pytest.mark.parametrize(
    ("options", "training", "expected"),
    [
        (["--processes", "2"], {}, (1, 3)),  # 4 batches over 2 processes: 2 each, 1 step an epoch
        ([], {"max_steps": 5}, (2, 5)),  # max_steps wins over the epochs
        ([], {"dataloader_drop_last": True, "gradient_accumulation_steps": 1}, (3, 9)),  # the short 4th batch dropped
    ],
)
def test_steps_follow_processes_max_steps_and_drop_last(tmp_path: Path, options: list[str], training: dict, expected: tuple) -> None:
    settings = {"per_device_train_batch_size": 3, "gradient_accumulation_steps": 2, "num_train_epochs": 3, **training}
    stats = _stats(str(_config(tmp_path, **settings)), *options)
    assert (stats["training"]["steps_per_epoch"], stats["training"]["total_optimizer_steps"]) == expected


def test_parameter_count_is_the_real_models(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, BertConfig

    stats = _stats(str(_config(tmp_path)))
    fields = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    model = AutoModelForSequenceClassification.from_config(BertConfig(**fields, vocab_size=stats["tokenizer"]["vocab_size"], num_labels=2))
    assert stats["model"] == {"model_type": "bert", "parameters": model.num_parameters()}


def test_packed_language_modelling_counts_tokens_and_blocks(tmp_path: Path) -> None:
    """Causal LM over a .txt of paragraphs: documents are the paragraphs, blocks are the tokens cut into max_length rows."""
    paragraphs = "\n\n".join("".join(f"line {i} of paragraph {p}\n" for i in range(p % 4 + 1)) for p in range(12))
    (tmp_path / "train.txt").write_text(paragraphs + "\n", encoding="utf-8")
    config = {
        "task": "causal-lm",
        "model": {"from_config": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 32}},
        "tokenizer": {"train": {"type": "bpe", "vocab_size": 300, "min_frequency": 1}},
        "data": {"train_file": str(tmp_path / "train.txt"), "validation_split": 0.25, "max_length": 16},
        "training": {"output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 2},
    }
    stats = _stats(str(write_config(tmp_path / "cfg.yaml", config)))
    splits = stats["splits"]
    assert splits["train"]["rows"] + splits["validation"]["rows"] == 12  # one document per paragraph
    for figures in splits.values():
        assert figures["blocks"] == math.ceil(figures["tokens"] / 16)  # full blocks and one padded last block
        assert figures["tokens_per_document"]["max"] <= figures["tokens"]
    assert stats["training"]["train_rows"] == splits["train"]["blocks"]
    assert stats["training"]["steps_per_epoch"] == math.ceil(splits["train"]["blocks"] / 2)


def _count(lengths: list[int], limit: int | None) -> dict:
    """Nearest-rank percentiles counted here, from the sorted lengths, and the rows over `limit`."""
    ordered = sorted(lengths)
    at = lambda share: ordered[math.ceil(share * len(ordered)) - 1]  # noqa: E731
    cut = sum(length > limit for length in ordered) if limit else 0
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1], "limit": limit, "truncated": cut, "truncated_share": round(cut / len(ordered), 4)}


def _run_tokenizer_and_rows(command: str, config: Path) -> tuple:
    """The tokenizer the run trains and the rows it loads, through the task module (as `llmtune finetune` does)."""
    from llmtune.config import load_config
    from llmtune.tasks import registry

    cfg = load_config(command, config)
    task = registry.task_of(command, cfg)
    return task.function("prepare_data")(cfg, None)[0], task.function("load_data")(cfg), cfg


def test_seq2seq_counts_sources_and_targets_apart(tmp_path: Path) -> None:
    from test_seq2seq import tiny_seq2seq_config

    config = tiny_seq2seq_config(tmp_path)
    text = config.read_text().replace("max_source_length: 32", "max_source_length: 21").replace("max_target_length: 24", "max_target_length: 12")
    config.write_text(text.replace("data:\n", "data:\n  source_prefix: 'translate: '\n"))
    stats = _stats(str(config))
    tokenizer, rows, cfg = _run_tokenizer_and_rows("finetune", config)
    assert cfg.data.source_prefix == "translate: " and set(stats["splits"]) == {"train", "validation", "test"}
    for role, figures in stats["splits"].items():
        sources = [len(tokenizer("translate: " + source)["input_ids"]) for source in rows[role]["source"]]
        targets = [len(tokenizer(text_target=target)["input_ids"]) for target in rows[role]["target"]]
        assert figures == {"rows": len(rows[role]), "source_tokens": _count(sources, 21), "target_tokens": _count(targets, 12)}
    train = stats["splits"]["train"]
    assert 0 < train["source_tokens"]["truncated"] < train["rows"] and 0 < train["target_tokens"]["truncated"] < train["rows"]
    assert stats["task"] == "seq2seq" and stats["model"]["model_type"] == "bart" and stats["training"]["total_optimizer_steps"] == 40


def test_quiet_prints_only_the_json(tmp_path: Path) -> None:
    result = invoke("-q", "validate", str(_config(tmp_path)), "--stats")
    assert result.exit_code == 0 and json.loads(result.stdout)["splits"]["train"]["rows"] == 10
    assert "train: 10 rows" not in result.stderr


def test_a_lora_config_counts_the_trainable_parameters_as_the_run_does(tmp_path: Path) -> None:
    """With peft:, the trainable count is that of the wrapped model a LoRA run trains (adapters + the new head)."""
    from conftest import tiny_classifier_dir

    from llmtune import lora
    from llmtune.config.schema import PeftSection
    from llmtune.tasks import registry

    base = tiny_classifier_dir(tmp_path / "base", ["negative", "positive"], [text for text, _ in TRAIN])
    config = tiny_classification_config(write_tsv(tmp_path / "train.tsv", TRAIN), write_tsv(tmp_path / "dev.tsv", DEV), tmp_path / "run")
    config.update(model={"name_or_path": str(base)}, peft={"r": 4, "target_modules": ["query", "value"]})
    del config["tokenizer"]
    stats = _stats(str(write_config(tmp_path / "cfg.yaml", config)))
    from transformers import AutoModelForSequenceClassification

    real = lora.wrap(
        AutoModelForSequenceClassification.from_pretrained(base), PeftSection(r=4, target_modules=["query", "value"]),
        registry.task("classification"), str(base), None,
    )
    assert stats["model"]["trainable_parameters"] == sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert stats["model"]["parameters"] == AutoModelForSequenceClassification.from_pretrained(base).num_parameters()


@pytest.mark.parametrize(
    ("training", "steps"),
    [
        ({"gradient_accumulation_steps": 2}, 6),  # 4 batches of 3 rows, 2 optimizer steps an epoch
        ({"gradient_accumulation_steps": 3}, 6),  # 4 batches over accumulation 3: the short last step counts
        # BatchRebalanceSampler deals whole steps of 3 x 2 rows: 10 rows make one, the other 4 are dropped.
        ({"gradient_accumulation_steps": 2, "train_sampling_strategy": "batch_rebalance", "dataloader_drop_last": True}, 3),
    ],
)
def test_the_planned_steps_are_the_ones_trainer_takes(tmp_path: Path, training: dict, steps: int) -> None:
    config = str(_config(tmp_path, per_device_train_batch_size=3, num_train_epochs=3, save_strategy="no", **training))
    planned = _stats(config)["training"]["total_optimizer_steps"]
    run = invoke("finetune", config)
    assert run.exit_code == 0, run.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["max_steps"] == state["global_step"] == planned == steps


def _lm_config(tmp: Path, command: str, packing: bool) -> Path:
    """A masked-LM (pretrain-mlm) or causal-LM (finetune) config over one sentence a line, max_length 10."""
    from conftest import sentiment_rows
    from test_pretrain_mlm import mlm_config

    train = tmp / "train.jsonl"
    # Row i: the first 2 + i % 10 words of a sentence said twice, so the lengths spread around max_length.
    texts = [" ".join((text + " " + text).split()[: 2 + i % 10]) for i, (text, _) in enumerate(sentiment_rows(40, seed=5))]
    texts[3] = texts[17] = " "  # empty rows: the run drops them, the figures count them apart
    train.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    if command == "pretrain-mlm":
        return write_config(tmp / "cfg.yaml", mlm_config(train, tmp / "run", packing=packing, max_length=10))
    gpt2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 32}
    config = {
        "task": "causal-lm",
        "model": {"from_config": gpt2},
        "tokenizer": {"train": {"type": "bpe", "vocab_size": 300, "min_frequency": 1}},
        "data": {"train_file": str(train), "validation_split": 0.25, "max_length": 10, "packing": packing},
        "training": {"output_dir": str(tmp / "run"), "per_device_train_batch_size": 4},
    }
    return write_config(tmp / "cfg.yaml", config)


@pytest.mark.parametrize(("command", "packing"), [("pretrain-mlm", True), ("pretrain-mlm", False), ("finetune", False)])
def test_language_modelling_figures_match_a_count_with_the_runs_tokenizer(tmp_path: Path, command: str, packing: bool) -> None:
    """Each text as the run tokenizes it (causal LM: EOS appended); packed, the split's tokens cut into 10-token blocks."""
    config = _lm_config(tmp_path, command, packing)
    stats = _stats(str(config))
    tokenizer, rows, _ = _run_tokenizer_and_rows(command, config)
    eos = tokenizer.eos_token if command == "finetune" else ""
    empty = 0
    for role, figures in stats["splits"].items():
        lengths = [len(tokenizer(text + eos)["input_ids"]) for text in rows[role]["text"] if text.strip()]
        dropped = len(rows[role]) - len(lengths)
        empty += dropped
        assert figures["rows"] == len(rows[role])
        if packing:
            expected = {"tokens": sum(lengths), "blocks": math.ceil(sum(lengths) / 10), "tokens_per_document": _count(lengths, None)}
        else:
            expected = {"tokens": _count(lengths, 10)}
        assert figures == {"rows": len(rows[role]), "empty_rows": dropped, **expected}
    assert empty == 2
    train = stats["splits"]["train"]
    if not packing:
        assert 0 < train["tokens"]["truncated"] < train["rows"]
    # The steps are planned on what the run trains on: blocks, or the rows left once the empty ones are dropped.
    assert stats["training"]["train_rows"] == (train["blocks"] if packing else train["rows"] - train["empty_rows"])
    assert stats["command"] == command and not (tmp_path / "run").exists()


def test_a_grown_vocabulary_counts_the_rows_the_run_adds(tmp_path: Path) -> None:
    """model.resize_embeddings: the run resizes a pretrained model's embeddings to its new tokenizer; so does the count."""
    from transformers import AutoModelForSequenceClassification

    from conftest import sentiment_rows, tiny_classifier_dir

    base = tiny_classifier_dir(tmp_path / "base", ["negative", "positive"], ["good", "bad"])
    rows = sentiment_rows(40)
    config = tiny_classification_config(write_tsv(tmp_path / "train.tsv", rows), write_tsv(tmp_path / "dev.tsv", rows[:8]), tmp_path / "run")
    config["model"] = {"name_or_path": str(base), "resize_embeddings": True}
    stats = _stats(str(write_config(tmp_path / "cfg.yaml", config)))
    real = AutoModelForSequenceClassification.from_pretrained(base)
    assert stats["tokenizer"]["vocab_size"] > real.get_input_embeddings().num_embeddings
    real.resize_token_embeddings(stats["tokenizer"]["vocab_size"])
    assert stats["model"] == {"model_type": "bert", "parameters": real.num_parameters()}


def test_a_tune_config_gives_the_figures_as_written_and_names_what_trials_change(tmp_path: Path) -> None:
    config = yaml.safe_load(_config(tmp_path, per_device_train_batch_size=3).read_text())
    config["search"] = {"trials": 2, "space": {"training.per_device_train_batch_size": {"type": "categorical", "choices": [2, 4]}}}
    stats = _stats(str(write_config(tmp_path / "tune.yaml", config)))
    assert stats["searched"] == ["training.per_device_train_batch_size"] and stats["training"]["steps_per_epoch"] == 4
    assert "each trial sets training.per_device_train_batch_size" in stats["_stderr"]


def test_the_processes_default_to_the_launchs_world_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `torchrun --nproc-per-node 2 llmtune validate ... --stats` the plan is for 2 processes; --processes wins.

    The config is loaded first: TrainingArguments built with WORLD_SIZE set would start torch.distributed, which the
    dry run itself never does (it reads the variable only).
    """
    from llmtune import stats as dry_run
    from llmtune.config import load_config

    cfg = load_config("finetune", _config(tmp_path, per_device_train_batch_size=3, gradient_accumulation_steps=1, num_train_epochs=1))
    assert dry_run.collect("finetune", cfg)["training"]["processes"] == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    planned = dry_run.collect("finetune", cfg)["training"]
    assert (planned["processes"], planned["steps_per_epoch"], planned["global_batch_size"]) == (2, 2, 6)  # 4 batches over 2
    assert dry_run.collect("finetune", cfg, processes=4)["training"]["processes"] == 4
