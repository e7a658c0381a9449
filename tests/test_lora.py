"""LoRA (`peft:`) for every training task, through the CLI, on tiny pretrained models saved to a temporary folder.

Each run must leave an adapter directory (peft's adapter files, the trained model's config.json, the tokenizer,
the run's usual files) and `merged/`, a plain transformers model that gives the same outputs as the base model
with the adapter applied; training must change only the adapters (and a classification head).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_BERT, invoke, sentiment_rows, stdout_json, tiny_classifier_dir, tiny_gpt2_dir, write_config, write_tsv
from test_seq2seq import TINY_BART, toy_pairs, write_parallel

PEFT = {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0}
TEXTS = [text for text, _ in sentiment_rows(64, seed=3)]


# --- tiny pretrained bases (random weights saved with a tokenizer: all LoRA needs is a model to load) ---------------


def bart_dir(path: Path) -> Path:
    """A tiny BART saved with a byte-level BPE that ends every text with EOS and pads with <pad> (as seq2seq trains it)."""
    import torch
    from tokenizers import processors
    from transformers import BartConfig, BartForConditionalGeneration

    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    texts = [side for pair in toy_pairs(64, seed=1) for side in pair]
    tokenizer = train_tokenizer(TokenizerTrainSection(type="bpe", vocab_size=300, min_frequency=1), texts, 64)
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, eos_id)])
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    fields = {k: v for k, v in TINY_BART.items() if k != "model_type"}
    config = BartConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id,
        decoder_start_token_id=tokenizer.bos_token_id, forced_eos_token_id=eos_id, init_std=32 ** -0.5, **fields,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def bert_mlm_dir(path: Path) -> Path:
    """A tiny BertForMaskedLM saved with a WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    tokenizer = train_tokenizer(TokenizerTrainSection(type="wordpiece", vocab_size=200, min_frequency=1), TEXTS, 32)
    fields = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **fields)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- one LoRA config per task -----------------------------------------------------------------------


def classification(tmp: Path) -> tuple[list[str], Path]:
    base = tiny_classifier_dir(tmp / "base", ["negative", "positive"], TEXTS)
    train, dev = write_tsv(tmp / "train.tsv", sentiment_rows(96, seed=1)), write_tsv(tmp / "dev.tsv", sentiment_rows(32, seed=2))
    config = {
        "seed": 0, "model": {"name_or_path": str(base)},
        "data": {"train_file": str(train), "validation_file": str(dev), "text_column": "sentence", "max_length": 32},
        "training": {"output_dir": str(tmp / "run"), "num_train_epochs": 3, "per_device_train_batch_size": 16, "learning_rate": 1e-2,
                     "logging_steps": 3, "save_strategy": "no", "disable_tqdm": True},
        "peft": dict(PEFT),
    }
    return ["finetune", str(write_config(tmp / "cfg.yaml", config))], base


def causal_lm(tmp: Path) -> tuple[list[str], Path]:
    base = tiny_gpt2_dir(tmp / "base", TEXTS)
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(t for t, _ in sentiment_rows(80, seed=4)) + "\n", encoding="utf-8")
    config = {
        "task": "causal-lm", "seed": 0, "model": {"name_or_path": str(base)},
        "data": {"train_file": str(corpus), "validation_split": 0.2, "max_length": 16},
        "training": {"output_dir": str(tmp / "run"), "max_steps": 12, "per_device_train_batch_size": 8, "learning_rate": 1e-2,
                     "logging_steps": 3, "save_strategy": "no", "disable_tqdm": True},
        "peft": dict(PEFT),
    }
    return ["finetune", str(write_config(tmp / "cfg.yaml", config))], base


def seq2seq(tmp: Path) -> tuple[list[str], Path]:
    base = bart_dir(tmp / "base")
    train, dev = write_parallel(tmp, "train", toy_pairs(32, seed=1)), write_parallel(tmp, "dev", toy_pairs(8, seed=2))
    config = {
        "task": "seq2seq", "seed": 0, "model": {"name_or_path": str(base)},
        "data": {"train_file": train, "validation_file": dev, "max_source_length": 24, "max_target_length": 16},
        "generation": {"max_new_tokens": 6},
        "training": {"output_dir": str(tmp / "run"), "max_steps": 6, "per_device_train_batch_size": 16, "learning_rate": 1e-2,
                     "logging_steps": 2, "save_strategy": "no", "disable_tqdm": True},
        "peft": dict(PEFT),
    }
    return ["finetune", str(write_config(tmp / "cfg.yaml", config))], base


def masked_lm(tmp: Path) -> tuple[list[str], Path]:
    base = bert_mlm_dir(tmp / "base")
    corpus = tmp / "mlm.txt"
    corpus.write_text("\n".join(t for t, _ in sentiment_rows(96, seed=5)) + "\n", encoding="utf-8")
    config = {
        "seed": 0, "model": {"name_or_path": str(base)},
        "data": {"train_file": str(corpus), "validation_split": 0.2, "max_length": 16},
        "training": {"output_dir": str(tmp / "run"), "max_steps": 6, "per_device_train_batch_size": 16, "learning_rate": 1e-2,
                     "logging_steps": 2, "save_strategy": "no", "disable_tqdm": True},
        "peft": dict(PEFT),
    }
    return ["pretrain-mlm", str(write_config(tmp / "cfg.yaml", config))], base


# task: (config builder, AutoModelFor... class, peft task type, the modules `target_modules: auto` picks)
TASKS = {
    "classification": (classification, "AutoModelForSequenceClassification", "SEQ_CLS", {"query", "value"}),
    "causal-lm": (causal_lm, "AutoModelForCausalLM", "CAUSAL_LM", {"c_attn"}),
    "seq2seq": (seq2seq, "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", {"q_proj", "v_proj"}),
    "masked-lm": (masked_lm, "AutoModelForMaskedLM", None, {"query", "value"}),
}


def outputs(model, tokenizer, seq2seq_model: bool):
    """The model's logits on one fixed input (with a 3-token decoder prefix for an encoder-decoder)."""
    import torch

    batch = tokenizer(["the film was good and warm"], return_tensors="pt")
    if seq2seq_model:
        batch.pop("token_type_ids", None)
        batch["decoder_input_ids"] = batch["input_ids"][:, :3]
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize(
    "task", list(TASKS)
)
def test_lora_run_saves_an_adapter_and_a_merged_model_with_the_same_outputs(task: str, tmp_path: Path) -> None:
    import torch
    import transformers
    from peft import PeftModel
    from safetensors.torch import load_file

    build, auto_name, task_type, targets = TASKS[task]
    args, base = build(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    out = tmp_path / "run"

    # The adapter directory: peft's files, the trained model's config, the tokenizer and the run's own files.
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer_config.json", "llmtune.yaml",
                 "manifest.json", "metrics.json", "README.md", "training_curves.png"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists(), "a LoRA run stores the adapter, not a full copy of the model"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base.resolve())
    assert adapter["task_type"] == task_type and adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert set(adapter["target_modules"]) == targets
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["trainable_percent"] == pytest.approx(100 * metrics["trainable_params"] / metrics["total_params"], abs=1e-4)
    card = (out / "README.md").read_text()
    assert f"LoRA adapter (peft) of `{base.resolve()}`" in card and "library_name: peft" in card and "merged/" in card

    auto_cls = getattr(transformers, auto_name)
    config = transformers.AutoConfig.from_pretrained(out)
    assert config.architectures == [type(auto_cls.from_pretrained(base)).__name__]
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    with_adapter = PeftModel.from_pretrained(auto_cls.from_pretrained(base, config=config), out)
    merged = auto_cls.from_pretrained(out / "merged")  # plain transformers, no peft involved
    assert (out / "merged" / "model.safetensors").is_file() and (out / "merged" / "tokenizer_config.json").is_file()
    assert "merged into its weights" in (out / "merged" / "README.md").read_text()
    if task in ("causal-lm", "seq2seq"):
        assert (out / "merged" / "generation_config.json").is_file()
    if task == "seq2seq":
        # Evaluation decoded with the config's generation settings, and both folders keep them.
        for folder in (out, out / "merged"):
            assert json.loads((folder / "generation_config.json").read_text())["max_new_tokens"] == 6
    seq2seq_model = task == "seq2seq"
    expected = outputs(with_adapter, tokenizer, seq2seq_model)
    torch.testing.assert_close(outputs(merged, tokenizer, seq2seq_model), expected, rtol=1e-4, atol=1e-5)
    # ... and the adapter changed the model: the base alone answers differently.
    assert not torch.allclose(outputs(auto_cls.from_pretrained(base, config=config), tokenizer, seq2seq_model), expected, atol=1e-4)

    # Only adapter tensors (and a classification head) are saved in the adapter.
    stored = load_file(str(out / "adapter_model.safetensors"))
    assert all(".lora_A." in k or ".lora_B." in k or ".classifier." in k for k in stored), sorted(stored)[:8]

    # llmtune's own inference commands take the run's output dir (the adapter) and merged/ alike, with the same results.
    (adapter_exact, adapter_scores), (merged_exact, merged_scores) = (cli_outputs(task, model, tmp_path) for model in (out, out / "merged"))
    assert adapter_exact == merged_exact
    assert adapter_scores == pytest.approx(merged_scores, rel=1e-4, abs=1e-5)


def cli_outputs(task: str, model: Path, tmp: Path) -> tuple[list, list[float]]:
    """What `llmtune predict` (classification), `generate` (causal-lm, seq2seq) or `evaluate` (masked-lm) gives
    on `model`: (what must be equal: labels, completions; the scores, equal up to float noise)."""
    if task == "classification":
        result = invoke("predict", "--model", str(model), "--input", "-", stdin="\n".join(TEXTS[:6]) + "\n")
    elif task == "masked-lm":
        result = invoke("evaluate", "--model", str(model), f"data.validation_file={tmp / 'mlm.txt'}", "data.max_length=16")
    else:
        result = invoke("generate", "--model", str(model), "--input", "-", "generation.max_new_tokens=6", stdin="the film was\na very\n")
    assert result.exit_code == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    if task == "classification":
        return [row["label"] for row in rows], [p for row in rows for _, p in sorted(row["probabilities"].items())]
    if task == "masked-lm":
        (row,) = rows
        assert row["kind"] == "masked-lm" and row["eval_scored_tokens"] > 0
        return [row["eval_scored_tokens"]], [row["eval_perplexity"]]
    assert len(rows) == 2
    return [row["completion"] for row in rows], []


def test_lora_trains_only_the_adapters_and_the_head(tmp_path: Path) -> None:
    """Quality: the loss drops; against the base model, merged/ differs exactly in the adapted layers and the head,
    every other weight bit-identical (embeddings, layer norms, feed-forward layers, keys: frozen)."""
    import torch
    from safetensors.torch import load_file

    args, base = classification(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr[-3000:]
    out = tmp_path / "run"
    losses = [entry["loss"] for entry in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses

    before, after = load_file(str(base / "model.safetensors")), load_file(str(out / "merged" / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapted = {n for n in before if n.endswith(("query.weight", "value.weight"))}
    head = {"classifier.weight", "classifier.bias"}
    assert changed == adapted | head, sorted(changed ^ (adapted | head))
    # Inside the adapted layers too the base weight stayed frozen: merged = base + (alpha / r) * B @ A, to float rounding.
    adapter = load_file(str(out / "adapter_model.safetensors"))
    scale = PEFT["alpha"] / PEFT["r"]
    for name in adapted:
        stem = "base_model.model." + name.removesuffix(".weight")
        update = scale * adapter[f"{stem}.lora_B.weight"] @ adapter[f"{stem}.lora_A.weight"]
        assert update.abs().max() > 1e-3, f"{name}: the adapter learned nothing"
        torch.testing.assert_close(after[name] - update, before[name], rtol=0, atol=1e-6)


@pytest.mark.slow  # two runs and a killed one: ~60 s on 2 cores
def test_a_killed_lora_run_resumes_to_the_same_adapter_as_an_uninterrupted_one(tmp_path: Path) -> None:
    """--resume continues a LoRA run from an adapter checkpoint (adapter_model.safetensors, no model.safetensors):
    adapter, merged weights and metrics end bit-identical to a run that was never stopped."""
    import torch
    from safetensors.torch import load_file

    from conftest import run_cli
    from test_runs import final_metrics, kill_at

    def config(out: Path) -> Path:
        args, _ = classification(tmp_path)
        data = yaml_load(Path(args[1]))
        data["training"].update(output_dir=str(out), num_train_epochs=2, save_strategy="steps", save_steps=2, logging_steps=3)
        data["peft"]["dropout"] = 0.1  # dropout draws random numbers: the resumed run must restore the RNG too
        return write_config(tmp_path / f"{out.name}.yaml", data)

    reference = stdout_json(run_cli("finetune", str(config(tmp_path / "reference"))))
    run = config(tmp_path / "run")
    kill_at(tmp_path / "paused", "finetune", str(run), stage="after-save", step=4)
    checkpoint = tmp_path / "run.incomplete" / "checkpoint-4"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()

    proc = run_cli("finetune", str(run), "--resume")
    resumed = stdout_json(proc)
    assert f"resuming from {checkpoint}" in proc.stderr
    assert final_metrics(resumed) == final_metrics(reference)
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-9)
    assert resumed["trainable_params"] == reference["trainable_params"]
    for name in ("adapter_model.safetensors", "merged/model.safetensors"):
        left, right = load_file(str(tmp_path / "reference" / name)), load_file(str(tmp_path / "run" / name))
        assert left.keys() == right.keys()
        assert all(torch.equal(left[k], right[k]) for k in left), name


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.slow  # two runs, one of them two processes: ~40 s on 2 cores
def test_torchrun_lora_run_is_one_ddp_job_saving_one_adapter(tmp_path: Path) -> None:
    """2-process DDP (torchrun, gloo) LoRA: rank 0 alone writes one adapter directory, and the run trains as one
    process with the same global batch does (same loss, same metrics: the gradients of both halves are averaged)."""
    from transformers import AutoModelForSequenceClassification

    from conftest import run_cli
    from test_distributed import torchrun

    args, base = classification(tmp_path)
    # No dropout anywhere: each process would draw its own masks, and the two runs could not be compared.
    model = AutoModelForSequenceClassification.from_pretrained(base)
    model.config.update({"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0})
    model.save_pretrained(base)
    data = yaml_load(Path(args[1]))
    data["training"].update(num_train_epochs=1, logging_steps=1, per_device_eval_batch_size=8)

    def config(name: str, batch: int) -> Path:
        data["training"].update(output_dir=str(tmp_path / name), per_device_train_batch_size=batch)
        return write_config(tmp_path / f"{name}.yaml", data)

    ddp_proc = torchrun(["finetune", str(config("ddp", 8))], tmp_path)
    ddp = stdout_json(ddp_proc)
    one = stdout_json(run_cli("finetune", str(config("one", 16))))
    out = tmp_path / "ddp"
    assert json.loads((out / "metrics.json").read_text()) == ddp
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 96 // (2 * 8)
    assert sorted(p.name for p in out.rglob("*.safetensors")) == ["adapter_model.safetensors", "model.safetensors"]
    assert (out / "merged" / "model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert ddp["trainable_params"] == one["trainable_params"] and ddp["total_params"] == one["total_params"]
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    for key in ("eval_loss", "eval_accuracy", "eval_f1"):
        assert ddp[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
