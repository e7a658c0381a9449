#!/usr/bin/env python
"""llmtune against plain transformers/PyTorch baselines, side by side in one run.

Every row times llmtune and a baseline written here with plain transformers/PyTorch (nothing of the
baseline comes from llmtune) on the same model shape, data, hyperparameters and seed, and reports the
ratio llmtune / baseline (above 1 = llmtune faster). Each variant runs in its own worker process, so
one variant's imports, caches and compiled graphs never help another.

Throughput is measured at steady state: a timing callback (the same one for llmtune's Trainer and the
plain Trainer; the raw loops time themselves the same way) synchronises the device every
`--window` optimizer steps after `--warmup` steps, and the row reports the median over those windows.
Classification rows report the rate over the whole span instead (one epoch on CPU; whole 50-step
mega-batches on CUDA): llmtune's length-grouped batches run longest first within each mega-batch, so
short windows would favour whichever side they happen to catch on short batches.
Warm-up (data preparation, model build, compilation) is reported separately as `first step (s)`:
seconds from the worker's start to the start of training step 1.

Time to first step on a second run (`second-run`): the same config run twice in fresh processes against
caches that start empty, the second run reusing what the first left in the datasets cache (and, for
llmtune, its tokenizer cache); the baseline is a plain Trainer script with datasets' cache.

MFU (model FLOPs utilisation) = achieved FLOP/s / `--peak-tflops`, with the training FLOPs per token
of the PaLM paper's appendix B (also nanoGPT's estimate_mfu): 6 * N + 12 * n_layer * d_model * T, where
N counts the parameters without the position embeddings and T is the sequence length.

Usage:
    python scripts/bench.py                           # CPU rows (tiny shapes), about 15 minutes on 2 cores
    python scripts/bench.py --device cuda             # GPU rows: GPT-2 124M and BERT-base shapes, bf16
    python scripts/bench.py --only startup,second-run  # a subset of the rows (startup, second-run, cls, mlm, clm, gen, lora)
Output: a Markdown table on stdout, the raw figures as JSON in --json (default bench-results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO / "data" / "tinyshakespeare" / "input.txt"
SST2_TRAIN = REPO / "data" / "sst2" / "train.tsv"
SST2_DEV = REPO / "data" / "sst2" / "dev.tsv"
START = time.time()  # worker start, for "time to first step"

# Shapes per device. GPU: GPT-2 124M (12 x 768) with an 8k vocabulary and BERT-base; CPU: what 2 cores train in seconds.
SHAPES = {
    "cuda": {
        "clm": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab": 8192, "block": 1024, "batch": 16, "steps": 120},
        "mlm": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "vocab": 8192, "block": 128, "batch": 64, "steps": 120},
        "cls": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "vocab": 8192, "max_length": 128, "batch": 32, "steps": 250, "warmup": 50, "rows": 20000},
        "gen": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab": 8192, "prompts": 64, "new_tokens": 64, "batch": 16},
        "lora": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab": 8192, "block": 1024, "batch": 16, "steps": 120},
    },
    "cpu": {
        "clm": {"n_layer": 3, "n_embd": 128, "n_head": 4, "n_positions": 256, "vocab": 1024, "block": 128, "batch": 32, "steps": 40},
        "mlm": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512, "vocab": 4000, "block": 64, "batch": 16, "steps": 120},
        "cls": {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536, "vocab": 8000, "max_length": 128, "batch": 32, "steps": 63, "warmup": 0, "rows": 2000},
        "gen": {"n_layer": 3, "n_embd": 128, "n_head": 4, "n_positions": 256, "vocab": 1024, "prompts": 32, "new_tokens": 32, "batch": 16},
        # LoRA: a GPT-2 of 6 x 512 (~23M weights): big enough that full fine-tuning's gradients and Adam state show.
        "lora": {"n_layer": 6, "n_embd": 512, "n_head": 8, "n_positions": 256, "vocab": 4096, "block": 128, "batch": 8, "steps": 40},
    },
}


# --------------------------------------------------------------------------------------------------
# Shared pieces (used by the workers of both sides)
# --------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def step_timer(device: str, warmup: int, window: int, tokens_per_step: float):
    """A TrainerCallback recording the time to the first step and per-window throughput after warm-up."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.first_step_s = None
            self.marks: list[tuple[int, float]] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if self.first_step_s is None:
                self.first_step_s = time.time() - START
            if warmup == 0 and not self.marks:  # no warm-up excluded: time from the start of step 1
                sync(device)
                self.marks.append((0, time.perf_counter()))

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if (step >= warmup and (step - warmup) % window == 0) or step == state.max_steps:
                sync(device)
                self.marks.append((step, time.perf_counter()))

        def result(self) -> dict:
            return timing_result(self.marks, tokens_per_step, self.first_step_s)

    return StepTimer()


def timing_result(marks: list[tuple[int, float]], tokens_per_step: float, first_step_s: float | None) -> dict:
    marks = [m for i, m in enumerate(marks) if i == 0 or m[0] > marks[i - 1][0]]  # the last step may be marked twice
    rates = [(s1 - s0) * tokens_per_step / (t1 - t0) for (s0, t0), (s1, t1) in zip(marks, marks[1:])]
    # span_rate: every step from the warm-up's end to the last step, as one interval. Classification rows use
    # it: length-grouped batches run longest first within each mega-batch, so a median over short windows
    # would depend on where the windows fall; a span of whole mega-batches (or a whole epoch) does not.
    span = (marks[-1][0] - marks[0][0]) * tokens_per_step / (marks[-1][1] - marks[0][1]) if len(marks) > 1 else None
    return {"rate": statistics.median(rates) if rates else None, "span_rate": span, "windows": len(rates), "first_step_s": first_step_s}


def peak_memory(device: str) -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        import torch

        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def train_tokenizer(kind: str, vocab: int, out: Path) -> None:
    """The tokenizer both sides share (plain `tokenizers`), saved where both load it from."""
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        texts = SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
        tok = ByteLevelBPETokenizer()
        tok.train_from_iterator(texts, vocab_size=vocab, min_frequency=2, special_tokens=["<|endoftext|>"])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    else:
        texts = [line.split("\t")[0] for line in SST2_TRAIN.read_text(encoding="utf-8").splitlines()[1:]]
        tok = BertWordPieceTokenizer(lowercase=True)
        tok.train_from_iterator(texts, vocab_size=vocab, min_frequency=2, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        from tokenizers.processors import BertProcessing

        tok._tokenizer.post_processor = BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok._tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
        )
    fast.model_max_length = 1024
    fast.save_pretrained(out)


def flops_per_token(n_params_no_pos: int, n_layer: int, d_model: int, seq: int) -> float:
    return 6 * n_params_no_pos + 12 * n_layer * d_model * seq


def params_without_positions(model) -> int:
    pos = [m for name, m in model.named_modules() if name.endswith(("wpe", "position_embeddings"))]
    return sum(p.numel() for p in model.parameters()) - sum(p.numel() for m in pos for p in m.parameters())


def training_keys(spec: dict) -> dict:
    """The TrainingArguments keys every Trainer variant of a row shares (plus the variant's extras)."""
    keys = {
        "output_dir": spec["out"],
        "max_steps": spec["steps"],
        "per_device_train_batch_size": spec["batch"],
        "learning_rate": spec.get("lr", 5e-4),
        "warmup_steps": 0,
        "logging_steps": 10**6,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "seed": 42,
        "disable_tqdm": True,
    }
    keys.update(spec.get("extra", {}))
    return keys


# --------------------------------------------------------------------------------------------------
# Workers: one process per variant; each prints one JSON line
# --------------------------------------------------------------------------------------------------


def run_llmtune(spec: dict) -> dict:
    """llmtune's own task code, as `llmtune finetune`/`pretrain-mlm` would run it, plus the timing callback."""
    sys.path.insert(0, str(REPO))
    from llmtune import runs
    from llmtune.config import load_config

    result: dict = {}
    make_trainer = runs.make_trainer

    def timed_make_trainer(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        data = trainer.train_dataset
        mean_tokens = sum(len(ids) for ids in data["input_ids"]) / len(data)
        per_step = spec["batch"] * (mean_tokens if spec["unit"] == "tokens" else 1)
        timer = step_timer(spec["device"], spec["warmup"], spec["window"], per_step)
        trainer.add_callback(timer)
        result["timer"] = timer
        result["model"] = trainer.model
        return trainer

    runs.make_trainer = timed_make_trainer  # the tasks call runs.make_trainer through the module
    command = "pretrain-mlm" if spec["kind"] == "mlm" else "finetune"
    cfg = load_config(command, None, [], base=spec["config"], flags={"overwrite": True})
    from llmtune.tasks import registry

    metrics = registry.task_for_config(cfg).load().run(cfg)
    out = result["timer"].result()
    out.update(peak_memory(spec["device"]))
    out["eval"] = {k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    out["n_params_no_pos"] = params_without_positions(result["model"])
    return out


def plain_clm_blocks(tokenizer, block: int, eval_share: float = 0.05):
    """run_clm's recipe: paragraphs + EOS, concatenated, cut into full blocks (remainder dropped)."""
    from datasets import Dataset

    docs = [d.strip() + tokenizer.eos_token for d in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    ids = [t for seq in tokenizer(docs)["input_ids"] for t in seq]
    n = len(ids) // block
    blocks = [ids[i * block : (i + 1) * block] for i in range(n)]
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks, "attention_mask": [[1] * block] * n})


def run_plain_trainer(spec: dict) -> dict:
    """A plain transformers Trainer, written the way the transformers examples write it."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    shape = dict(spec.get("shape", {}))  # the LoRA row loads a saved model instead
    model_type = shape.pop("model_type", None)
    if spec["kind"] == "clm":
        data = plain_clm_blocks(tokenizer, spec["block"])
        if spec.get("base_model"):  # the LoRA row: a saved "pretrained" model, LoRA through peft as its docs show
            from peft import LoraConfig, get_peft_model

            model = AutoModelForCausalLM.from_pretrained(spec["base_model"])
            lora = spec["lora"]
            model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"]))
        else:
            config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **shape)
            model = AutoModelForCausalLM.from_config(config)
        collator, per_step = default_data_collator, spec["batch"] * spec["block"]
    elif spec["kind"] == "mlm":
        texts = [line.split("\t")[0] for line in SST2_TRAIN.read_text(encoding="utf-8").splitlines()[1:]]
        ids = [t for seq in tokenizer(texts)["input_ids"] for t in seq]
        block = spec["block"]
        data = Dataset.from_dict({"input_ids": [ids[i : i + block] for i in range(0, len(ids) - block + 1, block)]})
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **shape)
        model = AutoModelForMaskedLM.from_config(config)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, pad_to_multiple_of=8)
        per_step = spec["batch"] * block
    else:
        rows = [line.split("\t") for line in SST2_TRAIN.read_text(encoding="utf-8").splitlines()[1 : spec["rows"] + 1]]
        padding = "max_length" if spec.get("pad_to_max_length") else False
        enc = tokenizer([r[0] for r in rows], truncation=True, max_length=spec["max_length"], padding=padding)
        data = Dataset.from_dict({**enc, "labels": [int(r[1]) for r in rows]})
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=2, **shape)
        model = AutoModelForSequenceClassification.from_config(config)
        collator = default_data_collator if padding else DataCollatorWithPadding(tokenizer)
        per_step = spec["batch"]
    timer = step_timer(spec["device"], spec["warmup"], spec["window"], per_step)
    args = TrainingArguments(**training_keys(spec))
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator, processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    out = timer.result()
    out.update(peak_memory(spec["device"]))
    out["n_params_no_pos"] = params_without_positions(model)
    if spec["kind"] == "cls":
        dev = [line.split("\t") for line in SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]]
        enc = tokenizer([r[0] for r in dev], truncation=True, max_length=spec["max_length"], padding=True, return_tensors="pt")
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(**{k: v[i : i + 128].to(model.device) for k, v in enc.items()}).logits.float().cpu() for i in range(0, len(dev), 128)])
        out["eval"] = {"eval_accuracy": float((logits.argmax(-1) == torch.tensor([int(r[1]) for r in dev])).float().mean())}
    return out


def run_raw_loop(spec: dict) -> dict:
    """A hand-written PyTorch loop: bf16 autocast on CUDA, fused AdamW, SDPA attention, optional torch.compile."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(42)
    device = spec["device"]
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    data = torch.tensor(plain_clm_blocks(tokenizer, spec["block"])["input_ids"])
    shape = dict(spec["shape"])
    model_type = shape.pop("model_type")
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), attn_implementation="sdpa", **shape)
    model = AutoModelForCausalLM.from_config(config).to(device)
    n_params = params_without_positions(model)
    fused = device == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.get("lr", 5e-4), weight_decay=0.0, fused=fused)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    step_fn = model
    if spec.get("compile"):
        step_fn = torch.compile(model)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")
    gen = torch.Generator().manual_seed(42)
    marks, first = [], None
    model.train()
    for step in range(1, spec["steps"] + 1):
        if first is None:
            first = time.time() - START
        idx = torch.randint(0, len(data), (spec["batch"],), generator=gen)
        batch = data[idx].to(device, non_blocking=True)
        with autocast:
            loss = step_fn(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= spec["warmup"] and (step - spec["warmup"]) % spec["window"] == 0:
            sync(device)
            marks.append((step, time.perf_counter()))
    out = timing_result(marks, spec["batch"] * spec["block"], first)
    out.update(peak_memory(device))
    out["n_params_no_pos"] = n_params
    return out


def run_generate(spec: dict) -> dict:
    """Greedy completions: `llmtune generate` batched, or a plain one-prompt-at-a-time `model.generate` loop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = json.loads(Path(spec["prompts"]).read_text())
    if spec["side"] == "llmtune":
        sys.path.insert(0, str(REPO))
        from llmtune.config import load_config
        from llmtune.generation import build_generation_config, generate_texts
        from llmtune.modeling import load_for_inference

        cfg = load_config("generate", None, [], base={"model": {"name_or_path": spec["model"]}, "batch_size": spec["batch"],
                                                       "generation": {"max_new_tokens": spec["new_tokens"]}})
        model, tokenizer = load_for_inference(AutoModelForCausalLM, cfg.model, cfg.tokenizer)
        gen_config = build_generation_config(model, tokenizer, cfg.generation)
        sync(spec["device"])
        start = time.perf_counter()
        results = generate_texts(model, tokenizer, prompts, gen_config, cfg.batch_size, [])
        sync(spec["device"])
        elapsed = time.perf_counter() - start
        texts = [r[0]["completion"] for r in results]
        new_tokens = sum(r[0]["completion_tokens"] for r in results)
    else:
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        model = AutoModelForCausalLM.from_pretrained(spec["model"]).to(spec["device"]).eval()
        texts, new_tokens = [], 0
        sync(spec["device"])
        start = time.perf_counter()
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt").to(spec["device"])
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=spec["new_tokens"], do_sample=False, pad_token_id=tokenizer.eos_token_id)
            new = out[0, enc["input_ids"].shape[1] :]
            if tokenizer.eos_token_id in new.tolist():
                new = new[: new.tolist().index(tokenizer.eos_token_id) + 1]
            new_tokens += len(new)
            texts.append(tokenizer.decode(new, skip_special_tokens=True))
        sync(spec["device"])
        elapsed = time.perf_counter() - start
    out = {"rate": new_tokens / elapsed, "texts": texts, "first_step_s": None}
    out.update(peak_memory(spec["device"]))
    return out


def stop_at_first_step(device: str, extra: dict | None = None):
    """A TrainerCallback that prints the worker's result at the start of training step 1 and ends the process.

    The time to the first step is everything before it: imports, data loading and checks, tokenizer,
    tokenization, model build. Nothing after it matters to this row, so the worker ends right there.
    """
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            out = {"first_step_s": time.time() - START, "rate": None, **peak_memory(device), **(extra or {})}
            print(json.dumps(out), flush=True)
            sys.stderr.flush()
            os._exit(0)

    return FirstStep()


def run_first_step(spec: dict) -> dict:
    """Time to the first training step: llmtune's task code, or a plain Trainer script with datasets' cache.

    Run twice against the same (initially empty) caches, the second run shows what a repeated run
    (a re-run, a learning-rate search) saves. The plain script is run_glue's recipe: `load_dataset`
    of the csv files, a tokenizer loaded with `AutoTokenizer.from_pretrained`, `Dataset.map` to
    tokenize (cached by datasets), dynamic padding.
    """
    if spec["side"] == "llmtune":
        sys.path.insert(0, str(REPO))
        from llmtune import runs
        from llmtune.config import load_config

        make_trainer = runs.make_trainer

        def stopping_make_trainer(*args, **kwargs):
            trainer = make_trainer(*args, **kwargs)
            trainer.add_callback(stop_at_first_step(spec["device"]))
            return trainer

        runs.make_trainer = stopping_make_trainer
        if spec.get("config_file"):
            cfg = load_config("finetune", spec["config_file"], spec["overrides"], flags={"overwrite": True})
        else:
            cfg = load_config("finetune", None, [], base=spec["config"], flags={"overwrite": True})
        from llmtune.tasks import registry

        registry.task_for_config(cfg).load().run(cfg)
        raise RuntimeError("training ended before its first step")
    from datasets import load_dataset
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    set_seed(42)
    raw = load_dataset("csv", data_files={"train": str(SST2_TRAIN), "validation": str(SST2_DEV)}, sep="\t", quoting=3)
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    encoded = raw.map(lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=spec["max_length"]), batched=True, remove_columns=["sentence"])
    shape = dict(spec["shape"])
    config = AutoConfig.for_model(shape.pop("model_type"), vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=2, **shape)
    model = AutoModelForSequenceClassification.from_config(config)
    args = TrainingArguments(**training_keys(spec))
    trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["validation"],
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer, callbacks=[stop_at_first_step(spec["device"])])
    trainer.train()
    raise RuntimeError("training ended before its first step")


WORKERS = {"llmtune": run_llmtune, "plain": run_plain_trainer, "raw": run_raw_loop, "generate": run_generate, "first_step": run_first_step}


# --------------------------------------------------------------------------------------------------
# The driver: builds specs, runs one worker process per variant, prints the table
# --------------------------------------------------------------------------------------------------


def worker(kind: str, spec: dict, env: dict | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, handle.name],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO,
    )
    os.unlink(handle.name)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-15:]
        print(f"[bench] worker {kind} failed:\n" + "\n".join(tail), file=sys.stderr)
        return {"error": tail[-1] if tail else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def llmtune_config(kind: str, shape: dict, tokenizer: Path, out: str, training: dict, device: str) -> dict:
    """The llmtune config of a row: same model shape, tokenizer, data and hyperparameters as the baseline."""
    base_training = training_keys({"out": out, **shape, "extra": training})
    if kind == "clm":
        model = {"model_type": "gpt2", **{k: shape[k] for k in ("n_layer", "n_embd", "n_head", "n_positions")}}
        return {"task": "causal-lm", "seed": 42, "model": {"from_config": model}, "tokenizer": {"name_or_path": str(tokenizer)},
                "data": {"train_file": str(SHAKESPEARE), "validation_split": 0.05, "max_length": shape["block"], "max_eval_samples": 64},
                "training": base_training}
    bert = {"model_type": "bert", **{k: shape[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")},
            "max_position_embeddings": 512}
    if kind == "mlm":
        return {"seed": 42, "model": {"from_config": bert}, "tokenizer": {"name_or_path": str(tokenizer)},
                "data": {"train_file": str(SST2_TRAIN), "validation_file": str(SST2_DEV), "text_column": "sentence", "max_length": shape["block"], "max_eval_samples": 256},
                "training": base_training}
    return {"seed": 42, "model": {"from_config": bert}, "tokenizer": {"name_or_path": str(tokenizer)},
            "data": {"train_file": str(SST2_TRAIN), "validation_file": str(SST2_DEV), "text_column": "sentence", "label_names": ["negative", "positive"],
                     "max_length": shape["max_length"], "max_train_samples": shape["rows"]},
            "training": base_training, "metrics": ["accuracy"]}


def mfu(result: dict, shape: dict, peak_tflops: float) -> float | None:
    if not result.get("rate") or not result.get("n_params_no_pos"):
        return None
    seq = shape.get("block") or shape.get("max_length")
    layers = shape.get("n_layer") or shape.get("num_hidden_layers")
    width = shape.get("n_embd") or shape.get("hidden_size")
    return result["rate"] * flops_per_token(result["n_params_no_pos"], layers, width, seq) / (peak_tflops * 1e12)


def median_of(runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("rate")]
    if not ok:
        return runs[0]
    best = sorted(ok, key=lambda r: r["rate"])[len(ok) // 2]
    return best


def bench_startup(reps: int) -> list[dict]:
    def timed(cmd: list[str]) -> float:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    ours = timed([sys.executable, "-m", "llmtune", "--help"])
    base = timed([sys.executable, "-c", "import transformers"])
    return [{"row": "CLI start-up (s, lower is better)", "llmtune": ours, "baseline": base, "baseline_name": "python -c 'import transformers'",
             "ratio": base / ours, "unit": "s"}]


def bench_second_run(device: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """Time to the first training step, first run vs a second identical run in a fresh process.

    Each variant gets its own empty datasets cache (HF_DATASETS_CACHE) and llmtune cache (LLMTUNE_CACHE_DIR),
    then runs twice; `--repeats` repeats the pair with new caches and reports the median pair. Rows:
    llmtune's SST-2 quickstart config (which trains its own tokenizer) on its own, and llmtune against the
    plain Trainer script with the same saved tokenizer, model shape and data.
    """
    quickstart = REPO / "configs" / "classification" / "sst2-quickstart.yaml"
    shape = {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512,
             "max_position_embeddings": 128}
    tok_dir = work / "tok-second-run"
    if not tok_dir.exists():
        train_tokenizer("wordpiece", 8000, tok_dir)
    common = {"device": device, "steps": 10, "batch": 32, "max_length": 64, "tokenizer": str(tok_dir), "shape": shape}

    def pair(name: str, spec: dict) -> dict:
        pairs = []
        for rep in range(args.repeats):
            caches = work / f"caches-{name}-{rep}"
            env = {"HF_DATASETS_CACHE": str(caches / "datasets"), "LLMTUNE_CACHE_DIR": str(caches / "llmtune")}
            spec = {**spec, "out": str(work / f"out-second-run-{name}")}
            first, second = (worker("first_step", spec, env) for _ in range(2))
            pairs.append({"first": first, "second": second})
        ok = [p for p in pairs if p["first"].get("first_step_s") and p["second"].get("first_step_s")]
        return sorted(ok, key=lambda p: p["second"]["first_step_s"])[len(ok) // 2] if ok else pairs[0]

    out = str(work / "out-second-run")
    quick = pair("llmtune-quickstart", {**common, "side": "llmtune", "config_file": str(quickstart),
                                        "overrides": [f"training.output_dir={out}-quickstart", "training.save_strategy=no", "training.eval_strategy=no"]})
    llm_config = {"seed": 42, "model": {"from_config": shape}, "tokenizer": {"name_or_path": str(tok_dir)},
                  "data": {"train_file": str(SST2_TRAIN), "validation_file": str(SST2_DEV), "text_column": "sentence",
                           "label_names": ["negative", "positive"], "max_length": 64},
                  "training": training_keys({**common, "out": f"{out}-llmtune"}), "metrics": ["accuracy"]}
    ours = pair("llmtune", {**common, "side": "llmtune", "config": llm_config})
    plain = pair("plain", {**common, "side": "plain"})

    def speedup(p: dict) -> float | None:
        first, second = p["first"].get("first_step_s"), p["second"].get("first_step_s")
        return first / second if first and second else None

    rows = []
    q = speedup(quick)
    rows.append({"row": f"time to first step, second run vs first: llmtune SST-2 quickstart (trains its tokenizer) "
                        f"(s; llmtune = 2nd run, baseline = 1st run, ratio = 1st/2nd)",
                 "llmtune": quick["second"].get("first_step_s"), "baseline": quick["first"].get("first_step_s"), "ratio": q, "unit": "s",
                 "details": {"llmtune": quick["second"], "baseline": quick["first"]}})
    a, b = ours["second"].get("first_step_s"), plain["second"].get("first_step_s")
    rows.append({"row": f"time to first step on a second run, same tokenizer: llmtune vs plain Trainer + datasets cache "
                        f"(s, lower is better; 2nd/1st-run speed-up: llmtune {fmt(speedup(ours))}x, plain {fmt(speedup(plain))}x; "
                        f"first-step columns: 1st run)",
                 "llmtune": a, "baseline": b, "ratio": b / a if a and b else None, "unit": "s",
                 "details": {"llmtune": {**ours["second"], "first_step_s": ours["first"].get("first_step_s")},
                             "baseline": {**plain["second"], "first_step_s": plain["first"].get("first_step_s")}}})
    return rows


def bench_training(kind: str, device: str, args: argparse.Namespace, work: Path) -> list[dict]:
    shape = dict(SHAPES[device][kind])
    tok_dir = work / f"tok-{kind}"
    if not tok_dir.exists():
        train_tokenizer("bpe" if kind == "clm" else "wordpiece", shape["vocab"], tok_dir)
    steps = args.steps or shape["steps"]
    unit = "samples" if kind == "cls" else "tokens"
    common = {"device": device, "steps": steps, "batch": shape["batch"], "warmup": args.warmup, "window": args.window, "unit": unit, "kind": kind}
    if kind == "clm":
        model_shape = {"model_type": "gpt2", **{k: shape[k] for k in ("n_layer", "n_embd", "n_head", "n_positions")}}
        common["block"] = shape["block"]
    else:
        model_shape = {"model_type": "bert", **{k: shape[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")},
                       "max_position_embeddings": 512}
        common.update({"block": shape.get("block"), "max_length": shape.get("max_length"), "rows": shape.get("rows")})
    bf16 = {"bf16": True} if device == "cuda" else {}
    compiled = {"torch_compile": True, "optim": "adamw_torch_fused", "tf32": True, **bf16} if device == "cuda" else {"torch_compile": True}

    def run(side: str, extra: dict, name: str, **more) -> dict:
        out = str(work / f"out-{kind}-{name}")
        spec = {**common, "out": out, "extra": extra, "tokenizer": str(tok_dir), "shape": model_shape, **more}
        if side == "llmtune":
            spec["config"] = llmtune_config(kind, {**shape, "steps": steps}, tok_dir, out, extra, device)
        results = [worker(side, spec) for _ in range(args.repeats)]
        if kind == "cls":
            for r in results:  # whole mega-batches / a whole epoch, see timing_result
                r["window_median_rate"], r["rate"] = r.get("rate"), r.get("span_rate")
        result = median_of(results)
        result["mfu"] = mfu(result, shape, args.peak_tflops) if unit == "tokens" and device == "cuda" else None
        return result

    rows = []
    label = {"clm": "causal-LM train", "mlm": "MLM train", "cls": "classification train"}[kind]
    llm_default = run("llmtune", {}, "llmtune-default")
    if kind == "cls":
        plain_dyn = run("plain", bf16, "plain-dynamic")
        plain_max = run("plain", bf16, "plain-maxlen", pad_to_max_length=True)
        rows.append(row(f"{label}, llmtune defaults vs plain Trainer{' bf16' if bf16 else ''} dynamic padding", llm_default, plain_dyn, unit))
        rows.append(row(f"{label}, llmtune defaults vs plain Trainer padding to max_length", llm_default, plain_max, unit))
        if bf16:
            rows.append(row(f"{label}, llmtune bf16 vs plain Trainer bf16 dynamic padding", run("llmtune", bf16, "llmtune-bf16"), plain_dyn, unit))
        return rows
    plain = run("plain", bf16, "plain")
    rows.append(row(f"{label}, llmtune defaults vs plain Trainer{' bf16' if bf16 else ''}", llm_default, plain, unit))
    if bf16:
        rows.append(row(f"{label}, llmtune bf16 vs plain Trainer bf16", run("llmtune", bf16, "llmtune-bf16"), plain, unit))
    if kind == "clm":
        if not args.no_compile:
            llm_compiled = run("llmtune", compiled, "llmtune-compiled")
            rows.append(row(f"{label}, compiled: llmtune vs plain Trainer, same keys", llm_compiled, run("plain", compiled, "plain-compiled"), unit))
            raw_compiled = run("raw", {}, "raw-compiled", compile=True)
            rows.append(row(f"{label}, compiled: llmtune vs raw PyTorch loop + torch.compile", llm_compiled, raw_compiled, unit))
        rows.append(row(f"{label}, llmtune defaults vs raw PyTorch loop (no compile)", llm_default, run("raw", {}, "raw"), unit))
    return rows


def bench_lora(device: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """LoRA (r=8 on the attention projections) vs full fine-tuning of one saved GPT-2-shaped causal LM (SHAPES "lora").

    The base is a randomly initialised GPT-2 of that shape saved with save_pretrained (LoRA adapts a saved
    model; its weights' values do not change the cost). Rows: llmtune LoRA vs llmtune full fine-tuning (the
    speed ratio; the memory columns are LoRA's and full fine-tuning's peaks), and llmtune LoRA vs a plain
    Trainer + peft script (`get_peft_model` with peft's default target modules for GPT-2, c_attn).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    shape = dict(SHAPES[device]["lora"])
    tok_dir = work / "tok-lora"
    train_tokenizer("bpe", shape["vocab"], tok_dir)
    base = work / "lora-base"
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  **{k: shape[k] for k in ("n_layer", "n_embd", "n_head", "n_positions")})
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    steps = args.steps or shape["steps"]
    lora = {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "auto", "merge": False}
    bf16 = {"bf16": True} if device == "cuda" else {}
    common = {"device": device, "steps": steps, "batch": shape["batch"], "warmup": args.warmup, "window": args.window, "unit": "tokens",
              "kind": "clm", "block": shape["block"], "tokenizer": str(base), "extra": bf16}

    def run(side: str, name: str, peft: dict | None) -> dict:
        out = str(work / f"out-lora-{name}")
        spec = {**common, "out": out}
        if side == "llmtune":
            spec["config"] = llmtune_config("clm", {**shape, "steps": steps}, base, out, bf16, device)
            spec["config"]["model"] = {"name_or_path": str(base)}
            if peft:
                spec["config"]["peft"] = peft
        else:
            spec.update({"base_model": str(base), "lora": peft})
        return median_of([worker(side, spec) for _ in range(args.repeats)])

    ours_lora, ours_full, plain_lora = run("llmtune", "llmtune-lora", lora), run("llmtune", "llmtune-full", None), run("plain", "plain-lora", lora)
    label = f"causal-LM train, LoRA r={lora['r']}"
    return [
        row(f"{label} vs full fine-tuning, both llmtune (llmtune column = LoRA, baseline = full; peak memory likewise)", ours_lora, ours_full, "tokens"),
        row(f"{label}: llmtune vs plain Trainer + peft get_peft_model", ours_lora, plain_lora, "tokens"),
    ]


def row(name: str, ours: dict, base: dict, unit: str) -> dict:
    accuracy = [side.get("eval", {}).get("eval_accuracy") for side in (ours, base)]
    if None not in accuracy:
        name += f"; dev accuracy {accuracy[0]:.3f} vs {accuracy[1]:.3f}"
    ratio = ours["rate"] / base["rate"] if ours.get("rate") and base.get("rate") else None
    return {"row": f"{name} ({unit}/s)", "llmtune": ours.get("rate"), "baseline": base.get("rate"), "ratio": ratio, "unit": f"{unit}/s",
            "details": {"llmtune": ours, "baseline": base}}


def bench_generation(device: str, args: argparse.Namespace, work: Path) -> list[dict]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    shape = SHAPES[device]["gen"]
    tok_dir = work / "tok-clm"
    if not tok_dir.exists():
        train_tokenizer("bpe", SHAPES[device]["clm"]["vocab"], tok_dir)
    model_dir = work / "gen-model"
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=len(tokenizer), n_layer=shape["n_layer"], n_embd=shape["n_embd"], n_head=shape["n_head"],
                                  n_positions=shape["n_positions"], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(config)
    config.architectures = ["GPT2LMHeadModel"]
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    lines = [line for line in SHAKESPEARE.read_text(encoding="utf-8").splitlines() if len(line.split()) >= 3]
    prompts = [" ".join(line.split()[: 3 + i % 6]) for i, line in enumerate(lines[: shape["prompts"]])]
    prompt_file = work / "prompts.json"
    prompt_file.write_text(json.dumps(prompts))
    spec = {"device": device, "model": str(model_dir), "prompts": str(prompt_file), "new_tokens": shape["new_tokens"], "batch": shape["batch"]}
    ours = median_of([worker("generate", {**spec, "side": "llmtune"}) for _ in range(args.repeats)])
    base = median_of([worker("generate", {**spec, "side": "plain"}) for _ in range(args.repeats)])
    same = ours.get("texts") == base.get("texts")
    out = row(f"generation, llmtune batched ({shape['batch']}) vs one prompt at a time; identical greedy output: {same}", ours, base, "new tokens")
    for side in ("llmtune", "baseline"):
        out["details"][side].pop("texts", None)
    return [out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--only", default="startup,second-run,cls,mlm,clm,gen,lora", help="comma-separated rows: startup, second-run, cls, mlm, clm, gen, lora")
    parser.add_argument("--steps", type=int, default=None, help="training steps per variant (default: per device)")
    parser.add_argument("--warmup", type=int, default=None, help="steps excluded from the throughput (default: a quarter of the steps; classification: none on CPU, one 50-step mega-batch on CUDA)")
    parser.add_argument("--window", type=int, default=None, help="steps per timed window (default: steps // 12)")
    parser.add_argument("--repeats", type=int, default=1, help="worker runs per variant; the median run is reported")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak for MFU (H100 SXM: 989)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--json", default="bench-results.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec_path = args.worker
        result = WORKERS[kind](json.loads(Path(spec_path).read_text()))
        print(json.dumps(result, default=str))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows: list[dict] = []
    wanted = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="llmtune-bench-") as tmp:
        work = Path(tmp)
        for kind in ("startup", "second-run", "cls", "mlm", "clm", "gen", "lora"):
            if kind not in wanted:
                continue
            started = time.time()
            if kind == "startup":
                rows += bench_startup(5)
            elif kind == "second-run":
                rows += bench_second_run(args.device, args, work)
            elif kind == "gen":
                rows += bench_generation(args.device, args, work)
            elif kind == "lora":
                rows += bench_lora(args.device, timing_args(args, "lora"), work)
            else:
                rows += bench_training(kind, args.device, timing_args(args, kind), work)
            print(f"[bench] {kind}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(), "device": args.device}
    if args.device == "cuda":
        import torch

        machine["gpu"] = torch.cuda.get_device_name(0)
        machine["torch"] = torch.__version__
    Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=2, default=str))
    print(f"Machine: {json.dumps(machine)}\n")
    print("| row | llmtune | baseline | ratio | llmtune first step (s) | baseline first step (s) | llmtune MFU | baseline MFU | llmtune peak mem (MB) | baseline peak mem (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = r.get("details", {})
        cells = [r["row"], fmt(r["llmtune"]), fmt(r["baseline"]), fmt(r["ratio"], 2) + "x" if r["ratio"] else "-"]
        for key in ("first_step_s", "mfu"):
            for side in ("llmtune", "baseline"):
                value = d.get(side, {}).get(key)
                cells.append(f"{value:.1%}" if key == "mfu" and value else fmt(value))
        for side in ("llmtune", "baseline"):
            mem = d.get(side, {})
            cells.append(fmt(mem.get("peak_gpu_mb") or mem.get("peak_rss_mb")))
        print("| " + " | ".join(cells) + " |")


def timing_args(args: argparse.Namespace, shape: str) -> argparse.Namespace:
    """`args` with --warmup and --window filled in from the steps of the row's shape (see --help)."""
    spec = SHAPES[args.device][shape]
    steps = args.steps or spec["steps"]
    warmup = args.warmup if args.warmup is not None else spec.get("warmup", max(steps // 4, 1))
    return argparse.Namespace(**{**vars(args), "warmup": warmup, "window": args.window or max(steps // 12, 1)})


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


if __name__ == "__main__":
    main()
