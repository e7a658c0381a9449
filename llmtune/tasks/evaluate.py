"""`llmtune evaluate`: score a trained model on a data set, with CI gates on the metrics.

The kind of evaluation (`eval.kind`, or the model's architecture) picks an entry of `KINDS`: the metric
names it produces (known before any data is loaded, so a gate on an unknown metric fails at once) and
the function computing them. A new kind of evaluation is one more entry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune.files import atomic_writer, write_text_atomically
from llmtune.runs import check_writable, clean_metrics
from llmtune.errors import DataError, GateFailure, UserError

if TYPE_CHECKING:
    from datasets import DatasetDict

    from llmtune.config.schema import EvalDataSection, EvaluateConfig, MLMSection

logger = logging.getLogger(__name__)

PREFIX = "eval_"
# Config sections that only one kind of evaluation reads (a warning says so when another kind runs).
SECTION_KINDS = {"mlm": "masked-lm", "generation": "generation", "stop": "generation"}
PERPLEXITY_GUIDE = "https://huggingface.co/docs/transformers/perplexity"


@dataclass
class Context:
    """What every kind of evaluation gets: the config, the resolved data section and seed, the model's config."""

    cfg: EvaluateConfig
    data: EvalDataSection
    seed: int
    model_config: Any
    output_dir: Path | None


@dataclass
class Kind:
    """One kind of evaluation: its metric names (from the model config) and how to compute them."""

    metric_names: Callable[[Any], list[str]]
    evaluate: Callable[[Context], dict[str, Any]]


@dataclass
class Gate:
    """`--fail-under METRIC=VALUE` (op "under") or `--fail-over METRIC=VALUE` (op "over")."""

    metric: str
    op: str
    threshold: float

    @property
    def flag(self) -> str:
        return f"--fail-{self.op}"


# ---------------------------------------------------------------------------------------------------
# Data


def load_eval_split(data: EvalDataSection, split: str, seed: int, prepare: Callable[[DatasetDict], DatasetDict] | None = None) -> DatasetDict:
    """Load the one split to evaluate on, carving validation out of train the way training did.

    Args:
        data: the data section.
        split: validation, test or train.
        seed: the carve-out seed (training's, to get the same held-out rows).
        prepare: applied before a carve-out (e.g. label encoding, so the split is stratified like training's).

    Returns:
        A DatasetDict holding only `split`.
    """
    carve = data.validation_split is not None
    if data.hub is None:
        wanted = getattr(data, f"{split}_file")
        source = "train" if carve and split in ("train", "validation") else split
        path = data.train_file if source == "train" else wanted
        if path is None:
            also = " or data.validation_split with data.train_file" if split == "validation" else ""
            raise DataError(f"eval.split: no {split} data to evaluate on; set data.{split}_file{also} (or choose another eval.split).")
        files = {"train_file": None, "validation_file": None, "test_file": None, f"{source}_file": path}
        splits = data_lib.load_splits(data.model_copy(update=files))
    else:
        splits = data_lib.load_splits(data)
    if prepare is not None:
        splits = prepare(splits)
    if carve and "train" in splits:
        splits = data_lib.split_validation(splits, data, seed, stratify_by="labels" if "labels" in splits["train"].column_names else None)
    if split not in splits:
        raise DataError(f"eval.split: the data has no '{split}' split (it has {', '.join(splits)}).")
    return type(splits)({split: splits[split]})


def resolve_data(cfg: EvaluateConfig) -> tuple[EvalDataSection, int]:
    """The data section and seed to use: the config's, or those the model was trained with (its llmtune.yaml).

    Raises:
        UserError: no `data:` in the config and no llmtune.yaml (with a data section) in the model directory.
    """
    from llmtune.config import read_yaml
    from llmtune.config.schema import EvalDataSection

    if cfg.data is not None:
        return cfg.data, cfg.seed if cfg.seed is not None else 42
    saved = Path(cfg.model.name_or_path) / "llmtune.yaml"
    if not saved.is_file():
        raise UserError(
            f"data: no data to evaluate on. Add a data: section (e.g. data.validation_file=dev.tsv) or evaluate a model "
            f"directory trained by llmtune ({saved} not found)."
        )
    trained = read_yaml(saved).data
    if not isinstance(trained.get("data"), dict):
        raise UserError(f"data: {saved} has no data section; add data.validation_file=... to the command.")
    logger.info("evaluating on the data the model was trained with (%s)", saved)
    seed = cfg.seed if cfg.seed is not None else int(trained.get("seed", 42))
    return EvalDataSection.model_validate(trained["data"]), seed


# ---------------------------------------------------------------------------------------------------
# Classification


def _label_ids(model_config: Any, data: EvalDataSection) -> Callable[[DatasetDict], DatasetDict]:
    """A `prepare` step mapping the label column onto the model's label ids (names or integer ids)."""
    from datasets import ClassLabel

    names = [model_config.id2label[i] for i in range(model_config.num_labels)]
    by_name = {str(name): i for i, name in enumerate(names)}

    def to_id(value: Any, role: str, row: int) -> int:
        if str(value) in by_name:
            return by_name[str(value)]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() and 0 <= value < len(names):
            return int(value)
        raise DataError(
            f"{data_lib.where(data, role, row)}: label {value!r} in '{data.label_column}' is not one the model "
            f"knows (its labels: {', '.join(names)})."
        )

    def prepare(splits: DatasetDict) -> DatasetDict:
        data_lib.require_columns(splits, {"data.text_column": data.text_column, "data.text_pair_column": data.text_pair_column, "data.label_column": data.label_column})
        for role in list(splits):
            ids = [to_id(value, role, row) for row, value in enumerate(splits[role][data.label_column])]
            ds = splits[role].add_column("labels", ids)
            splits[role] = ds.cast_column("labels", ClassLabel(names=names))
        return splits

    return prepare


def classification_names(model_config: Any) -> list[str]:
    """eval_loss, eval_accuracy and F1/precision/recall (binary, or macro plus weighted for more labels)."""
    from llmtune.tasks.classification import AVERAGED, metric_kwargs

    averaged = [reported for name in AVERAGED for reported, _ in metric_kwargs(name, model_config.num_labels)]
    return [PREFIX + name for name in ["loss", "accuracy", *averaged]]


def _classification_info(names: list[str]) -> dict[str, dict[str, Any]]:
    from llmtune.tasks.classification import AVERAGED, metric_kwargs

    info: dict[str, dict[str, Any]] = {
        "eval_loss": {"definition": "mean cross-entropy (natural log) of the reference label under the model's softmax"},
        "eval_accuracy": {"definition": "fraction of examples whose most probable label is the reference", "implementation": "sklearn.metrics.accuracy_score"},
    }
    averages = {
        "binary": f"of the positive class (label id 1, '{names[1]}')",
        "macro": "unweighted mean over classes",
        "weighted": "mean over classes weighted by their number of reference examples",
    }
    for name in AVERAGED:
        for reported, kwargs in metric_kwargs(name, len(names)):
            info[PREFIX + reported] = {
                "definition": f"{name} {averages[kwargs['average']]}",
                "implementation": f"sklearn.metrics.{name}_score",
                **kwargs,
                "zero_division": 0,
            }
    return info


def evaluate_classification(ctx: Context) -> dict[str, Any]:
    """Accuracy, F1/precision/recall, loss, per-class report and confusion matrix of a sequence classifier."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

    from transformers import AutoModelForSequenceClassification

    from llmtune.modeling import load_for_inference
    from llmtune.plots import confusion_matrix as draw_confusion_matrix
    from llmtune.tasks.classification import build_compute_metrics
    from llmtune.tasks.predict import class_probabilities

    cfg, data = ctx.cfg, ctx.data
    model, tokenizer = load_for_inference(AutoModelForSequenceClassification, cfg.model, cfg.tokenizer)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    split = cfg.eval.split
    splits = load_eval_split(data, split, ctx.seed, prepare=_label_ids(model.config, data))
    encoded = data_lib.tokenize_texts(splits, tokenizer, data)[split]
    references = np.asarray(encoded["labels"])
    probabilities = class_probabilities(model, tokenizer, encoded.remove_columns("labels").to_list(), cfg.eval.batch_size)
    predictions = probabilities.argmax(axis=-1)

    scores = build_compute_metrics(["accuracy", "f1", "precision", "recall"], len(names))(
        SimpleNamespace(predictions=probabilities, label_ids=references)
    )
    picked = probabilities[np.arange(len(references)), references]
    metrics = {"eval_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean())}
    metrics.update({PREFIX + k: v for k, v in scores.items()})
    ids = list(range(len(names)))
    report = classification_report(references, predictions, labels=ids, target_names=names, output_dict=True, zero_division=0)
    matrix = confusion_matrix(references, predictions, labels=ids).tolist()
    result = {
        **metrics,
        "num_examples": len(references),
        "metrics_info": _classification_info(names),
        "per_class": {name: report[name] for name in names},
        "confusion_matrix": {"labels": names, "rows": "reference label", "columns": "predicted label", "matrix": matrix},
    }
    if ctx.output_dir is not None:
        result["files"] = [str(draw_confusion_matrix(matrix, names, ctx.output_dir / "confusion_matrix.png"))]
    return result


# ---------------------------------------------------------------------------------------------------
# Causal language models


LM_METRICS = ("perplexity", "nll_per_token", "token_accuracy", "scored_tokens")


def lm_names(model_config: Any) -> list[str]:
    """Token-weighted perplexity, mean NLL per token, token accuracy and the number of scored tokens (causal and masked LMs)."""
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


def evaluate_causal_lm(ctx: Context) -> dict[str, Any]:
    """Token-weighted perplexity of a causal LM: per text, or sliding-window over the joined texts (eval.stride)."""
    from transformers import AutoModelForCausalLM

    from llmtune.lm import lm_metrics
    from llmtune.modeling import context_length, load_for_inference

    cfg, data = ctx.cfg, ctx.data
    stride = cfg.eval.stride
    model, tokenizer = load_for_inference(AutoModelForCausalLM, cfg.model, cfg.tokenizer)
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
    values = lm_metrics(SimpleNamespace(predictions=stats))
    metrics = {PREFIX + name: values.get(name) for name in LM_METRICS}
    info = {
        "eval_perplexity": {**definition, "reference": PERPLEXITY_GUIDE},
        "eval_nll_per_token": {"definition": "total NLL (natural log) / total scored tokens", "method": definition["method"]},
        "eval_token_accuracy": {"definition": "fraction of scored tokens whose most probable next token is the reference"},
        "eval_scored_tokens": {"definition": "number of tokens whose NLL was summed"},
    }
    return {**metrics, "perplexity_definition": definition["method"], "num_examples": len(texts), "metrics_info": info}


# ---------------------------------------------------------------------------------------------------
# Masked language models


def saved_run(cfg: EvaluateConfig) -> dict[str, Any]:
    """The model directory's llmtune.yaml (how llmtune trained it) as a mapping; empty when there is none."""
    from llmtune.config import read_yaml

    saved = Path(cfg.model.name_or_path) / "llmtune.yaml"
    return read_yaml(saved).data if saved.is_file() else {}


def resolve_masking(cfg: EvaluateConfig, data: EvalDataSection) -> tuple[MLMSection, EvalDataSection]:
    """The masking settings and data section for a masked-LM evaluation.

    Keys set in the evaluate config win; the rest (mlm.probability, mlm.whole_word, data.packing) come
    from the model directory's llmtune.yaml, i.e. how pretrain-mlm masked its own validation set, and
    otherwise from MLMSection's defaults.
    """
    from llmtune.config.schema import MLMSection

    saved = saved_run(cfg)
    given = cfg.mlm.model_dump(exclude_unset=True) if cfg.mlm is not None else {}
    mlm = MLMSection.model_validate({**(saved.get("mlm") or {}), **given})
    trained_data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    if "packing" not in data.model_fields_set and "packing" in trained_data:
        data = data.model_copy(update={"packing": bool(trained_data["packing"])})
    return mlm, data


def evaluate_masked_lm(ctx: Context) -> dict[str, Any]:
    """Masked-token accuracy and token-weighted perplexity, with the evaluation set masked once, seeded.

    The text is encoded and masked exactly as `llmtune pretrain-mlm` encodes and masks its validation set
    (same function, seed and settings), so a pretrain-mlm model directory scores its run's own eval_perplexity.
    """
    import numpy as np
    import torch
    from datasets import DatasetDict
    from transformers import AutoModelForMaskedLM

    from llmtune.lm import MaskingCollator, lm_metrics, masked_preprocess
    from llmtune.modeling import load_for_inference, pad_multiple
    from llmtune.tasks.pretrain_mlm import encode

    cfg, split = ctx.cfg, ctx.cfg.eval.split
    mlm, data = resolve_masking(cfg, ctx.data)
    model, tokenizer = load_for_inference(AutoModelForMaskedLM, cfg.model, cfg.tokenizer)
    splits = load_eval_split(data, split, ctx.seed)
    data_lib.require_columns(splits, {"data.text_column": data.text_column})
    # encode() masks every split but "train" once with the seed; the key keeps eval.split=train masked too.
    settings = SimpleNamespace(mlm=mlm, data=data, seed=ctx.seed)
    masked = encode(settings, DatasetDict({"eval": splits[split]}), tokenizer)["eval"]
    where = next(model.parameters()).device
    collate = MaskingCollator(tokenizer, mlm.probability, mlm.whole_word, pad_multiple(where.type, mlm.pad_to_multiple_of))
    stats = []
    with torch.no_grad():
        for start in range(0, len(masked), cfg.eval.batch_size):
            batch = collate(masked.select(range(start, min(start + cfg.eval.batch_size, len(masked)))).to_list())
            labels = batch.pop("labels")
            logits = model(**{k: v.to(where) for k, v in batch.items()}).logits
            stats.append(masked_preprocess(logits, labels.to(where)).cpu().numpy())
    # float32 stats summed in dataset order, as Trainer's compute_metrics sees them during pretrain-mlm.
    values = lm_metrics(SimpleNamespace(predictions=np.concatenate(stats)))
    masking = {
        "probability": mlm.probability,
        "whole_word": mlm.whole_word,
        "rule": "chosen words all replaced by the mask token" if mlm.whole_word else "BERT's 80/10/10: mask token / random token / unchanged",
        "seed": ctx.seed,
        "packing": data.packing,
        "max_length": data.max_length,
    }
    info = {
        "eval_perplexity": {
            "definition": "exp(total NLL / total scored tokens) over the masked positions; the evaluation set is masked once "
            "with the seed, as pretrain-mlm masks its validation set, so the same model and data always score the same",
            "masking": masking,
        },
        "eval_nll_per_token": {"definition": "total NLL (natural log) / total masked tokens"},
        "eval_token_accuracy": {"definition": "fraction of masked tokens whose most probable prediction is the original token"},
        "eval_scored_tokens": {"definition": "number of masked (scored) tokens"},
    }
    metrics = {PREFIX + name: values.get(name) for name in LM_METRICS}
    return {**metrics, "perplexity_definition": "masked-tokens", "masking": masking, "num_examples": len(masked), "metrics_info": info}


# ---------------------------------------------------------------------------------------------------
# Generation against references


def generation_names(model_config: Any) -> list[str]:
    """Corpus BLEU, chrF and ROUGE of the completions, their mean length and how many ran into max_new_tokens."""
    rouge = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    return [PREFIX + name for name in ("bleu", "chrf", *rouge, "mean_completion_tokens", "truncated_rate")]


def prompt_reference_pairs(splits: DatasetDict, data: EvalDataSection, split: str) -> tuple[list[str], list[Any]]:
    """The prompts and their references (a string, or a list of strings) as they are in the data.

    Raises:
        DataError: a missing column, an empty prompt or a row without a usable reference, naming the row.
    """
    data_lib.require_columns(splits, {"data.prompt_column": data.prompt_column, "data.reference_column": data.reference_column})
    def where(row: int) -> str:
        # A split carved out of train is shuffled: its rows are not the file's lines.
        carved = data.validation_split is not None and split in ("train", "validation")
        return f"{data_lib.SPLIT_KEYS.get(split, split)}: row {row + 1}" if carved else data_lib.where(data, split, row)

    prompts, references = splits[split][data.prompt_column], splits[split][data.reference_column]
    for row, (prompt, reference) in enumerate(zip(prompts, references)):
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where(row)}: no prompt in '{data.prompt_column}' (got {prompt!r}); every row needs one.")
        refs = [reference] if isinstance(reference, str) else reference
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise DataError(
                f"{where(row)}: no usable reference in '{data.reference_column}' (got {reference!r}); "
                "give a non-empty string or a list of non-empty strings."
            )
    return list(prompts), list(references)


def evaluate_generation(ctx: Context) -> dict[str, Any]:
    """Complete each prompt with the `generation:` settings and score the completions with corpus BLEU, chrF and ROUGE.

    Writes generations.jsonl (prompt, reference, completion, completion_tokens, finish_reason per row) to
    output_dir when there is one.
    """
    from llmtune import metrics as metrics_lib
    from llmtune.generation import PromptTooLong, build_generation_config, generate_texts, load_generation_model
    from llmtune.tasks.generate import write_jsonl

    cfg, data, split = ctx.cfg, ctx.data, ctx.cfg.eval.split
    splits = load_eval_split(data, split, ctx.seed)
    prompts, references = prompt_reference_pairs(splits, data, split)
    model, tokenizer = load_generation_model(cfg.model, cfg.tokenizer)  # a causal LM, or an encoder-decoder (T5, BART...)
    generation_config = build_generation_config(model, tokenizer, cfg.generation)
    try:
        results = generate_texts(model, tokenizer, prompts, generation_config, cfg.eval.batch_size, cfg.stop)
    except PromptTooLong as exc:
        raise DataError(f"{data_lib.SPLIT_KEYS.get(split, split)}: row {exc.index + 1}: the prompt {exc.detail}") from None
    outputs = [sequences[0] for sequences in results]
    completions = [out["completion"] for out in outputs]
    reference_lists = [[ref] if isinstance(ref, str) else ref for ref in references]
    bleu = metrics_lib.load("bleu").compute(predictions=completions, references=reference_lists)
    chrf = metrics_lib.load("chrf").compute(predictions=completions, references=reference_lists)
    rouge = metrics_lib.load("rouge").compute(predictions=completions, references=reference_lists)
    settings = {
        "max_new_tokens": generation_config.max_new_tokens,
        "do_sample": bool(generation_config.do_sample),  # None in transformers 5 means the default, off
        "num_beams": generation_config.num_beams or 1,
        **cfg.generation,
        "stop": cfg.stop,
        "seed": ctx.seed,
    }
    metrics = {
        "eval_bleu": bleu["score"],
        "eval_chrf": chrf["score"],
        **{PREFIX + key: value for key, value in rouge.items()},
        "eval_mean_completion_tokens": sum(out["completion_tokens"] for out in outputs) / len(outputs),
        "eval_truncated_rate": sum(out["finish_reason"] == "length" for out in outputs) / len(outputs),
    }
    scored = (
        "each completion (a causal LM's text after its prompt, an encoder-decoder's decoded output; cut at a stop string) "
        "against all references of its prompt"
    )
    info = {
        "eval_bleu": {
            "definition": f"corpus BLEU (0-100) of {scored}",
            "implementation": "sacrebleu.BLEU via llmtune.metrics.load('bleu'), default settings",
            "signature": bleu["signature"],
            "tokenize": "13a",
            "brevity_penalty": bleu["bp"],
            "precisions": bleu["precisions"],
            "sys_len": bleu["sys_len"],
            "ref_len": bleu["ref_len"],
            "generation": settings,
        },
        "eval_chrf": {
            "definition": f"corpus chrF (0-100) of {scored}",
            "implementation": "sacrebleu.CHRF via llmtune.metrics.load('chrf'), default settings",
            "signature": chrf["signature"],
            "char_order": chrf["char_order"],
            "word_order": chrf["word_order"],
            "beta": chrf["beta"],
            "generation": settings,
        },
        **{
            PREFIX + key: {
                "definition": f"{what} F-measure (0-100), mean over prompts, of {scored}; each prompt's best reference",
                "implementation": "rouge_score.rouge_scorer.RougeScorer via llmtune.metrics.load('rouge'), default settings",
                "use_stemmer": False,
                "tokenize": "rouge-score's default: lowercased, runs of ASCII letters and digits only",
                "generation": settings,
            }
            for key, what in [
                ("rouge1", "ROUGE-1 (unigram overlap)"),
                ("rouge2", "ROUGE-2 (bigram overlap)"),
                ("rougeL", "ROUGE-L (longest common subsequence of the whole texts)"),
                ("rougeLsum", "ROUGE-Lsum (summary-level longest common subsequence, one sentence per line)"),
            ]
        },
        "eval_mean_completion_tokens": {"definition": "mean number of tokens generated per prompt (up to EOS or through a stop string)"},
        "eval_truncated_rate": {"definition": "fraction of completions that reached max_new_tokens instead of EOS or a stop string"},
    }
    result = {**metrics, "num_examples": len(prompts), "generation": settings, "metrics_info": info}
    if ctx.output_dir is None:
        logger.info("no output_dir: the generations are not kept (set --output-dir to write generations.jsonl)")
        return result
    rows = [
        {"prompt": prompt, "reference": reference, **out}
        for prompt, reference, out in zip(prompts, references, outputs)
    ]
    path = ctx.output_dir / "generations.jsonl"
    with atomic_writer(path) as handle:
        write_jsonl(rows, handle)
    result["files"] = [str(path)]
    return result


KINDS: dict[str, Kind] = {
    "classification": Kind(classification_names, evaluate_classification),
    "causal-lm": Kind(lm_names, evaluate_causal_lm),
    "masked-lm": Kind(lm_names, evaluate_masked_lm),
    "generation": Kind(generation_names, evaluate_generation),
}


# ---------------------------------------------------------------------------------------------------
# Gates and the command


def parse_gates(fail_under: list[str], fail_over: list[str]) -> list[Gate]:
    """Parse `METRIC=VALUE` gate options.

    Raises:
        UserError: an option is not METRIC=NUMBER.
    """
    gates = []
    for op, items in (("under", fail_under), ("over", fail_over)):
        for item in items:
            metric, sep, value = item.partition("=")
            try:
                threshold = float(value)
            except ValueError:
                threshold = None
            if not sep or not metric.strip() or threshold is None:
                raise UserError(f"--fail-{op} {item!r}: expected METRIC=NUMBER, e.g. --fail-{op} eval_accuracy=0.8.")
            gates.append(Gate(metric.strip(), op, threshold))
    return gates


def _resolve_gates(gates: list[Gate], names: list[str], kind: str) -> list[Gate]:
    """Check every gate names a metric this kind of evaluation produces (`accuracy` = `eval_accuracy`)."""
    resolved, unknown = [], []
    for gate in gates:
        name = gate.metric if gate.metric in names else PREFIX + gate.metric
        if name not in names:
            unknown.append(f"{gate.flag} {gate.metric}")
        resolved.append(Gate(name, gate.op, gate.threshold))
    if unknown:
        raise UserError(f"unknown metric in {'; '.join(unknown)}: a {kind} evaluation reports {', '.join(names)}.")
    return resolved


def check_gates(result: dict[str, Any], gates: list[Gate]) -> None:
    """Compare the metrics against their gates (after they were printed).

    Raises:
        GateFailure: one line per missed gate (exit code 3).
    """
    failed = []
    for gate in gates:
        name = gate.metric if gate.metric in result else PREFIX + gate.metric
        value = result.get(name)
        if not isinstance(value, (int, float)):
            failed.append(f"{name} has no value (got {value!r}); required by {gate.flag} {gate.threshold:g}")
        elif (value < gate.threshold) if gate.op == "under" else (value > gate.threshold):
            relation = "below" if gate.op == "under" else "above"
            failed.append(f"{name} = {value:.6g} is {relation} {gate.threshold:g} ({gate.flag})")
    if failed:
        raise GateFailure(f"{len(failed)} of {len(gates)} gates failed:\n" + "\n".join(failed))


def detect_kind(cfg: EvaluateConfig, model_config: Any) -> str:
    """eval.kind, or the kind the model's architecture implies."""
    from llmtune.modeling import architecture_kind

    kind = cfg.eval.kind if cfg.eval.kind != "auto" else architecture_kind(model_config)
    if kind is None:
        found = ", ".join(getattr(model_config, "architectures", None) or []) or "none in config.json"
        raise UserError(f"eval.kind: cannot tell the kind of evaluation from the model's architectures ({found}); set eval.kind to one of {', '.join(KINDS)}.")
    if kind not in KINDS:
        raise UserError(f"eval.kind: '{kind}' evaluation is not available in this version of llmtune; available: {', '.join(KINDS)}.")
    return kind


def run(cfg: EvaluateConfig, gates: list[Gate] | None = None) -> dict[str, Any]:
    """Evaluate a trained model without training it.

    Args:
        cfg: the validated evaluate config.
        gates: `--fail-under/--fail-over` gates; their metric names are checked before evaluating.

    Returns:
        kind, model, split, the eval_* metrics, metrics_info (definition and parameters of each metric) and
        what the kind adds (per-class report, confusion matrix, perplexity definition, files written).
        Written to output_dir/metrics.json when output_dir is set. Gates are checked by `check_gates`.

    Raises:
        UserError: unknown gate metric, unreachable model, bad data.
    """
    from transformers import AutoConfig, set_seed

    from llmtune import manifest
    from llmtune.modeling import from_pretrained

    if cfg.output_dir:
        check_writable(cfg.output_dir, "--output-dir", "dir")
    model_config = from_pretrained(
        AutoConfig, "model.name_or_path", cfg.model.name_or_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    kind = detect_kind(cfg, model_config)
    for key, used_by in SECTION_KINDS.items():
        if key in cfg.model_fields_set and kind != used_by:
            logger.warning("%s: ignored, it applies to eval.kind %s and this is a %s evaluation", key, used_by, kind)
    names = KINDS[kind].metric_names(model_config)
    _resolve_gates(gates or [], names, kind)
    data, seed = resolve_data(cfg)
    set_seed(seed)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else None
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    measured = KINDS[kind].evaluate(Context(cfg, data, seed, model_config, output_dir))
    missing = [name for name in names if name not in measured]
    if missing:
        raise RuntimeError(f"{kind} evaluation did not produce {missing}")
    result = {"kind": kind, "model": cfg.model.name_or_path, "split": cfg.eval.split, **clean_metrics({k: measured[k] for k in names})}
    result.update({k: v for k, v in measured.items() if k not in result})
    if output_dir is not None:
        result.setdefault("files", []).insert(0, str(output_dir / "metrics.json"))
        write_text_atomically(output_dir / "metrics.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        manifest.write(manifest.for_evaluation(cfg, data, seed, model_config), output_dir)
    return result
