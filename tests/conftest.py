"""Shared fixtures: offline Hugging Face, tiny data files and tiny model configs built on the fly."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# llmtune's tokenizer cache (llmtune.cache): one fresh folder per test session, never the user's ~/.cache.
os.environ["LLMTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="llmtune-test-cache-")
atexit.register(shutil.rmtree, os.environ["LLMTUNE_CACHE_DIR"], ignore_errors=True)

# transformers binds its log handler to the sys.stderr of the moment it first logs. Bind it now, to the
# session's stream: bound inside a CliRunner call, it would write later warnings to that call's closed
# stream ("--- Logging error --- Traceback"), and which test came first would decide what others see.
from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.get_logger("transformers")

REPO = Path(__file__).resolve().parents[1]
POSITIVE = "good great fine lovely superb charming moving brilliant funny warm".split()
NEGATIVE = "bad awful dull boring poor tedious flat weak clumsy cold".split()
FILLER = "the film movie story plot acting was is a an very quite rather and but with".split()

# A BERT small enough to train in seconds on 2 CPU cores.
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Synthetic sentences whose label follows their sentiment words, so a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, object]], header: tuple[str, str] | None = ("sentence", "label")) -> Path:
    lines = (["\t".join(header)] if header else []) + [f"{text}\t{label}" for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_files(tmp_path: Path) -> dict[str, Path]:
    """Train/dev TSV files with a header and integer labels."""
    return {
        "train": write_tsv(tmp_path / "train.tsv", sentiment_rows(96, seed=1)),
        "dev": write_tsv(tmp_path / "dev.tsv", sentiment_rows(32, seed=2)),
    }


def tiny_classification_config(train: Path, dev: Path, output_dir: Path, **training: object) -> dict:
    """A finetune config for a tiny BERT with its own tokenizer, a few seconds of training."""
    return {
        "seed": 0,
        "model": {"from_config": dict(TINY_BERT)},
        "tokenizer": {"train": {"type": "wordpiece", "vocab_size": 200, "min_frequency": 1}},
        "data": {"train_file": str(train), "validation_file": str(dev), "text_column": "sentence", "max_length": 32},
        "training": {
            "output_dir": str(output_dir),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 16,
            "learning_rate": 1e-3,
            "logging_steps": 2,
            "save_strategy": "epoch",
            "disable_tqdm": True,
            **training,
        },
        "metrics": ["accuracy", "f1"],
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m llmtune ...`) in a subprocess, capturing stdout and stderr apart."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "llmtune", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


def stdout_json(proc: subprocess.CompletedProcess) -> dict:
    """The single JSON object a command printed on stdout (fails if stdout holds anything else)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout should hold one JSON line, got: {proc.stdout[:2000]}"
    return json.loads(lines[0])


def invoke(*args: str, stdin: str | None = None):
    """Run the CLI in-process with Typer's CliRunner (no interpreter start-up); stdout and stderr apart."""
    from typer.testing import CliRunner

    from llmtune.cli import app

    return CliRunner().invoke(app, list(args), input=stdin)


def tiny_classifier_dir(path: Path, labels: list[str], texts: list[str]) -> Path:
    """Save an untrained tiny BERT classifier (random weights, so it predicts a mix of labels) with a wordpiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    tokenizer = train_tokenizer(TokenizerTrainSection(type="wordpiece", vocab_size=200, min_frequency=1), texts, 32)
    fields = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    config = BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}, **fields,
        # BERT's default init (0.02) gives every [CLS] nearly the same vector: one label for all inputs.
        initializer_range=0.5,
    )
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_gpt2_dir(path: Path, texts: list[str], n_positions: int = 64) -> Path:
    """Save an untrained tiny GPT-2 (GPT2Config, 2 layers, hidden 32) with a byte-level BPE tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    tokenizer = train_tokenizer(TokenizerTrainSection(type="bpe", vocab_size=300, min_frequency=1), texts, n_positions)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config.architectures = ["GPT2LMHeadModel"]
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def is_png(path: Path) -> bool:
    """A real PNG: the signature, and matplotlib can decode it into a non-empty image."""
    import matplotlib.image

    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(str(path)).size > 0


# The attention projections LoRA wraps in the tiny test models, per peft task type's usual architecture here.
LORA_TEST_TARGETS = {"bert": ["query", "value"], "gpt2": ["c_attn"], "bart": ["q_proj", "v_proj"], "t5": ["q", "v"]}
LORA_AUTO_CLASSES = {
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "MASKED_LM": "AutoModelForMaskedLM",  # peft has no task type for it: a plain PeftModel (task_type None)
}


def lora_adapter_dir(
    path: Path, base_dir: Path, task_type: str, merged_dir: Path | None = None, r: int = 4, seed: int = 0, **base_kwargs: object
) -> Path:
    """Save a LoRA adapter dir as a llmtune LoRA run writes one (issue 11's contract), built directly with peft.

    The base is `base_dir` (a saved model folder, loaded with the task's AutoModelFor... class), so the
    adapter_config.json's base_model_name_or_path is its absolute path. `init_lora_weights=False` draws the
    LoRA B matrices at random, so the adapter really changes the outputs (peft's default makes it a no-op).
    The dir also holds the model's config.json and the base's tokenizer files; with `merged_dir`, the
    merged model (merge_and_unload) and tokenizer are saved there, as `merged/` of a run.

    Args:
        path: the adapter dir to write.
        base_dir: the base model folder (e.g. from `tiny_classifier_dir` / `tiny_gpt2_dir`).
        task_type: peft's task type: "SEQ_CLS", "CAUSAL_LM" or "SEQ_2_SEQ_LM"; or "MASKED_LM" (peft's task_type None).
        merged_dir: where to save the merged model too, or None.
        r: the LoRA rank.
        seed: torch seed for the random LoRA weights.
        base_kwargs: for the base's from_pretrained, e.g. num_labels=3, ignore_mismatched_sizes=True (a new head).
    """
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    base_dir = Path(base_dir).resolve()
    base = getattr(transformers, LORA_AUTO_CLASSES[task_type]).from_pretrained(base_dir, **base_kwargs)
    config = LoraConfig(
        task_type=None if task_type == "MASKED_LM" else task_type, r=r, lora_alpha=2 * r, target_modules=LORA_TEST_TARGETS[base.config.model_type], init_lora_weights=False
    )
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    if task_type == "SEQ_CLS":
        # The head is trained in a real run (peft's modules_to_save copy); change it, so the saved head matters.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "modules_to_save" in name:
                    param.add_(torch.randn_like(param) * 0.5)
    model.save_pretrained(path)
    model.base_model.model.config.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.save_pretrained(path)
    if merged_dir is not None:
        model.merge_and_unload().save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
    return Path(path)


def check_model_card(out: Path, metrics: dict, command: str) -> str:
    """The card of a run in `out`: its "Use" section names the folder by its absolute path, shows `command`
    (`llmtune predict`, ...), and its table lists each eval_/test_ metric with a definition and no speed figure."""
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"{command} --model {out.resolve()}" in card, card
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in card.splitlines() if line.startswith("| ") and "---" not in line}
    rows.pop("metric")
    expected = {k for k, v in metrics.items() if k.startswith(("eval_", "test_")) and not isinstance(v, (dict, list))}
    expected = {k for k in expected if not k.endswith(("_runtime", "_samples_per_second", "_steps_per_second"))}
    assert set(rows) == expected | {"train_loss"}, (sorted(rows), sorted(expected))
    assert all(rows.values()), rows  # every metric has its definition
    assert "samples_per_second" not in card and "_runtime" not in card
    return card
