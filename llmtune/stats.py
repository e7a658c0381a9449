"""`llmtune validate CONFIG --stats`: what a training run will see, before it runs.

A dry run: the data is loaded and tokenized, and a `tokenizer.train` tokenizer trained, exactly as the run
does it (the task module's own `load_data` and `prepare_data`, so the datasets and tokenizer caches are
warm for it afterwards); the model is built on PyTorch's meta device (shapes only, no weights read).
Nothing is written to `training.output_dir`.

The figures:
- per split: rows (for language modelling also the empty ones the run drops); token lengths before truncation (p50/p90/p99/max, nearest-rank percentiles) and the rows
  `max_length` cuts; for packed language modelling the tokens and the blocks they fill; for seq2seq the
  source and target sides apart; for classification the label counts;
- the optimizer steps per epoch and in all, computed as Trainer (transformers 5) does from the batch size,
  gradient accumulation and number of processes;
- the model's parameters (and with `peft:`, the trainable ones).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from llmtune.tasks import registry

logger = logging.getLogger(__name__)


def percentiles(lengths: list[int]) -> dict[str, int]:
    """p50/p90/p99/max of `lengths`, nearest-rank: the smallest length at least p% of the rows do not exceed."""
    ordered = sorted(lengths)
    if not ordered:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    rank = lambda p: ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]  # noqa: E731
    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1]}


def length_stats(lengths: list[int], limit: int | None) -> dict[str, Any]:
    """Percentiles of the token lengths and how many rows are longer than `limit` (None: nothing is cut)."""
    cut = sum(length > limit for length in lengths) if limit is not None else 0
    return {**percentiles(lengths), "limit": limit, "truncated": cut, "truncated_share": round(cut / len(lengths), 4) if lengths else 0.0}


def _lengths(tokenizer: Any, texts: list[str], pairs: list[str] | None = None, target: bool = False) -> list[int]:
    """Token counts of each text (pair) as the run's tokenizer encodes it, special tokens included, nothing cut."""
    from llmtune.modeling import settings_kept

    lengths: list[int] = []
    with settings_kept(tokenizer):
        # The long rows are what is being measured: transformers need not warn about them.
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
        for start in range(0, len(texts), 1000):
            batch = texts[start : start + 1000]
            if target:
                ids = tokenizer(text_target=batch)["input_ids"]
            else:
                ids = tokenizer(batch, pairs[start : start + 1000] if pairs else None)["input_ids"]
            lengths.extend(len(row) for row in ids)
    return lengths


def split_stats(task: registry.Task, cfg: Any, rows: Any, encoded: Any, tokenizer: Any) -> dict[str, Any]:
    """The figures of one split: `rows` as loaded (before tokenizing) and `encoded` as the run trains or scores on it."""
    from llmtune.modeling import context_length

    data = cfg.data
    out: dict[str, Any] = {"rows": len(rows)}
    if task.name == "seq2seq":
        prefix = data.source_prefix or ""
        sources = _lengths(tokenizer, [prefix + text for text in rows[data.source_column]])
        targets = _lengths(tokenizer, list(rows[data.target_column]), target=True)
        return {**out, "source_tokens": length_stats(sources, data.max_source_length), "target_tokens": length_stats(targets, data.max_target_length)}
    texts = [str(text) for text in rows[data.text_column] if text is not None and str(text).strip()]
    pairs = None
    if task.name == "classification":
        texts = [str(text) if text is not None else "" for text in rows[data.text_column]]
        pairs = [str(text) if text is not None else "" for text in rows[data.text_pair_column]] if data.text_pair_column else None
    else:
        # Language modelling drops empty rows (llmtune.data.tokenize_lm): they are counted, not measured.
        out["empty_rows"] = len(rows) - len(texts)
        if task.name == "causal-lm":
            texts = [text + tokenizer.eos_token for text in texts]  # every document ends with EOS
    lengths = _lengths(tokenizer, texts, pairs)
    limit = context_length(tokenizer, None, data.max_length)
    if task.name in ("causal-lm", "masked-lm") and data.packing:
        # Packed: no text is cut; the split's tokens fill `blocks` rows of max_length.
        out["tokens"] = sum(lengths)
        out["blocks"] = len(encoded)
        out["tokens_per_document"] = length_stats(lengths, None)
    else:
        out["tokens"] = length_stats(lengths, limit)
    if task.name == "classification":
        names = rows.features["labels"].names
        counts = [0] * len(names)
        for label in rows["labels"]:
            counts[label] += 1
        out["labels"] = dict(zip(names, counts))
    return out


def training_settings(task: registry.Task, cfg: Any) -> dict[str, Any]:
    """The TrainingArguments values that decide the steps: the user's `training:` over the task's and transformers' defaults.

    Not the machine's: a config for a GPU cluster is planned on a laptop.
    """
    import dataclasses

    from transformers import TrainingArguments

    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.init}
    return {**defaults, **dict(task.training_defaults), **cfg.training}


def training_steps(train_rows: int, training: dict[str, Any], processes: int) -> dict[str, Any]:
    """Optimizer steps per epoch and in all, as transformers 5's Trainer computes them.

    Each process gets `ceil(batches / processes)` batches of per_device_train_batch_size (accelerate shards
    the batches evenly; `dataloader_drop_last` drops a short last one first); an epoch is that many batches
    over gradient_accumulation_steps, rounded up; max_steps > 0 wins over num_train_epochs. With
    `train_sampling_strategy: batch_rebalance` transformers' BatchRebalanceSampler deals out whole optimizer
    steps instead: one per batch x accumulation x processes rows (a short last one unless dataloader_drop_last).
    """
    batch, accumulation = training["per_device_train_batch_size"], training["gradient_accumulation_steps"]
    drop_last, max_steps, epochs = training["dataloader_drop_last"], training["max_steps"], training["num_train_epochs"]
    if training["train_sampling_strategy"] == "batch_rebalance":
        step_rows = batch * accumulation * processes
        per_epoch = max(train_rows // step_rows if drop_last else math.ceil(train_rows / step_rows), 1)
    else:
        batches = train_rows // batch if drop_last else math.ceil(train_rows / batch)
        per_process = batches // processes if drop_last else math.ceil(batches / processes)
        per_epoch = max(per_process // accumulation + int(per_process % accumulation > 0), 1)
    total = max_steps if max_steps > 0 else math.ceil(epochs * per_epoch)
    return {
        "train_rows": train_rows,
        "processes": processes,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": accumulation,
        "global_batch_size": batch * accumulation * processes,
        "steps_per_epoch": per_epoch,
        "epochs": epochs if max_steps <= 0 else round(total / per_epoch, 4),
        "total_optimizer_steps": total,
    }


def parameters(task: registry.Task, cfg: Any, tokenizer: Any, labels: int | None) -> dict[str, Any]:
    """The model's parameter count, from its config alone: built on the meta device, no weights read or allocated."""
    import torch
    from transformers import AutoConfig

    from llmtune.modeling import meta_model, needs_more_rows, new_model_config

    settings = {"num_labels": labels} if labels else {}
    if cfg.model.from_config is not None:
        config = new_model_config(cfg.model, tokenizer, **settings)
    else:
        config = AutoConfig.from_pretrained(cfg.model.name_or_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code, **settings)
    model = meta_model(task.model_class(), config, cfg.model.trust_remote_code)
    if cfg.model.from_config is None and needs_more_rows(cfg.model, tokenizer, model.get_input_embeddings().num_embeddings):
        # The run grows the embeddings (resize_token_embeddings) to the tokenizer: the same shapes as a config of that size.
        config.vocab_size = len(tokenizer)
        model = meta_model(task.model_class(), config, cfg.model.trust_remote_code)
    total = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {"model_type": config.model_type, "parameters": total}
    if getattr(cfg, "peft", None) is not None:
        from llmtune import lora

        with torch.device("meta"):
            wrapped = lora.wrap(model, cfg.peft, task, lora.base_name(cfg.model.name_or_path), cfg.model.revision)
        out["trainable_parameters"] = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return out


def collect(command: str, cfg: Any, processes: int | None = None) -> dict[str, Any]:
    """Every figure of `validate --stats` for a validated training config (see the module docstring).

    Args:
        command: finetune or pretrain-mlm.
        cfg: its validated config.
        processes: the number of training processes to plan for; default the launch's WORLD_SIZE, else 1.

    Raises:
        DataError / UserError: what the run itself would stop on (bad data, an unloadable tokenizer).
    """
    from llmtune.modeling import launch_world_size

    task = registry.task_of(command, cfg)
    rows = task.function("load_data")(cfg)
    tokenizer, encoded = task.function("prepare_data")(cfg, None)
    splits = {role: split_stats(task, cfg, rows[role], encoded[role], tokenizer) for role in rows}
    warnings = []
    if task.name == "classification":
        names = rows["train"].features["labels"].names
        for role, figures in splits.items():
            missing = [name for name in names if figures["labels"][name] == 0]
            if missing:
                warnings.append(f"label {', '.join(repr(m) for m in missing)} has no {role} rows: {task.words} never sees it there")
    labels = len(rows["train"].features["labels"].names) if task.name == "classification" else None
    search = getattr(cfg, "search", None)
    return {
        "command": command,
        "task": task.name,
        "tokenizer": {"vocab_size": len(tokenizer), "trained": getattr(cfg.tokenizer, "train", None) is not None},
        "splits": splits,
        "training": training_steps(len(encoded["train"]), training_settings(task, cfg), processes or launch_world_size()),
        "model": parameters(task, cfg, tokenizer, labels),
        # A tune config: the figures are those of the config as written; each trial sets these keys its own way.
        **({"searched": list(search.space)} if search is not None else {}),
        "warnings": warnings,
    }


def table(stats: dict[str, Any]) -> str:
    """The figures as a readable table (stderr)."""
    lines = [f"{stats['command']} ({stats['task']}): tokenizer of {stats['tokenizer']['vocab_size']} tokens"]
    for role, figures in stats["splits"].items():
        empty = f" ({figures['empty_rows']} empty, dropped)" if figures.get("empty_rows") else ""
        lines.append(f"{role}: {figures['rows']} rows{empty}")
        for side in ("tokens", "tokens_per_document", "source_tokens", "target_tokens"):
            length = figures.get(side)
            if isinstance(length, dict):
                cut = f", {length['truncated']} ({length['truncated_share']:.2%}) longer than {length['limit']}" if length["limit"] else ""
                lines.append(f"  {side.replace('_', ' ')}: p50 {length['p50']}  p90 {length['p90']}  p99 {length['p99']}  max {length['max']}{cut}")
        if "blocks" in figures:
            lines.append(f"  {figures['tokens']} tokens packed into {figures['blocks']} blocks")
        if "labels" in figures:
            lines.append("  labels: " + ", ".join(f"{name} {count}" for name, count in figures["labels"].items()))
    steps = stats["training"]
    lines.append(
        f"training: {steps['train_rows']} examples / (batch {steps['per_device_train_batch_size']} x {steps['processes']} processes) "
        f"/ accumulation {steps['gradient_accumulation_steps']} = {steps['steps_per_epoch']} steps per epoch; "
        f"{steps['total_optimizer_steps']} optimizer steps ({steps['epochs']} epochs)"
    )
    model = stats["model"]
    trainable = f", {model['trainable_parameters']:,} trainable" if "trainable_parameters" in model else ""
    lines.append(f"model: {model['model_type']}, {model['parameters']:,} parameters{trainable}")
    if "searched" in stats:
        lines.append(f"search: the figures of the config as written; each trial sets {', '.join(stats['searched'])}")
    lines += [f"warning: {warning}" for warning in stats["warnings"]]
    return "\n".join(lines)
