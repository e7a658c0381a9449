"""`llmtune finetune` with `task: seq2seq`: translation and summarization with any AutoModelForSeq2SeqLM.

The pieces a task registry needs are separate functions: `load_data` (files, parallel text files or Hub
data -> source/target columns), `preprocess` (tokenization), `collator` (DataCollatorForSeq2Seq),
`build_generation_config` and `build_compute_metrics` (BLEU/chrF/ROUGE of generated text); `run` wires
them into transformers' Seq2SeqTrainer with `predict_with_generate`, so validation and test scores are
computed on what the model writes, decoded with the `generation:` settings, not on teacher-forced logits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune import runs
from llmtune.errors import DataError
from llmtune.tasks import registry
from llmtune.modeling import load_model, pad_multiple, training_device_type

if TYPE_CHECKING:
    from datasets import DatasetDict

    from llmtune.config.schema import DataSection, FinetuneConfig

logger = logging.getLogger(__name__)

TASK = registry.task("seq2seq")

# The model card's "Use" section: transformers 5 has no translation/text2text pipeline.
USAGE = """from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForSeq2SeqLM.from_pretrained("{path}")
inputs = tokenizer(["{prefix}A man is riding a bicycle."], return_tensors="pt")
print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))"""

# The Hub's pipeline tag for encoder-decoder text models (model card metadata only).
PIPELINE_TAG = "text2text-generation"
# A tokenizer this task adds a padding token to when it has none and the model is built from scratch.
PAD_TOKEN = "<pad>"
# The column of each tokenized split that keeps its source text (for the predictions files).
SOURCE_TEXT = "source_text"


def load_data(data: DataSection, seed: int) -> DatasetDict:
    """Load train/validation(/test) as two text columns, data.source_column and data.target_column.

    Each split comes from a csv/tsv/jsonl/parquet file with both columns, a `{source, target}` pair of
    line-aligned text files, or the Hub. Without validation data, `data.validation_split` of train is held out.

    Raises:
        DataError: unreadable files, misaligned parallel files, missing columns, or a row without source or target text.
    """
    columns = {"data.source_column": data.source_column, "data.target_column": data.target_column}
    splits = data_lib.load_splits(data, columns)
    check_texts(splits, data)
    return data_lib.with_validation(splits, data, seed)


def load_pairs(cfg: FinetuneConfig) -> DatasetDict:
    """The run's source/target splits before tokenizing (`load_data` of its data section and seed)."""
    return load_data(cfg.data, cfg.seed)


def check_texts(splits: DatasetDict, data: DataSection) -> None:
    """Every row needs a non-empty source and target string (parallel text files are checked as they load).

    Raises:
        DataError: naming the file and line (or Hub split and row), the column and the fix.
    """
    for role, ds in splits.items():
        for column in (data.source_column, data.target_column):
            for row, value in enumerate(ds[column][:]):
                if not isinstance(value, str) or not value.strip():
                    raise DataError(
                        f"{data_lib.where(data, role, row)}: no text in '{column}' (got {value!r}); every row needs a source "
                        "and a target. Fill it in or delete the row."
                    )


def adds_eos(tokenizer: Any) -> bool:
    """Whether the tokenizer ends every encoded text with its EOS token (T5, BART and Marian tokenizers do)."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.eos_token_id is not None and bool(ids) and ids[-1] == tokenizer.eos_token_id


def prepare_tokenizer(tokenizer: Any, cfg: FinetuneConfig) -> Any:
    """Make a tokenizer fit for seq2seq: it ends each text with EOS and has a padding token.

    A target must end with EOS or the model never learns where to stop. A tokenizer trained here (byte-level
    BPE) gets a post-processor appending EOS, saved in tokenizer.json so the model directory encodes inputs
    the way training did; any other tokenizer is left as it is (`preprocess` appends EOS to targets when it
    does not add one). A model built from scratch gets a padding token of its own (distinct from EOS, so the
    EOS embedding is not the padding row); a pretrained one pads with EOS when its tokenizer has no padding token.
    """
    if cfg.tokenizer.train is not None and not adds_eos(tokenizer):
        from tokenizers import processors

        eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, eos_id)]
        )
        tokenizer.model_max_length = max(cfg.data.max_source_length, cfg.data.max_target_length)
    if tokenizer.pad_token is None:
        if cfg.model.from_config is not None:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        else:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def preprocess(splits: DatasetDict, tokenizer: Any, data: DataSection) -> DatasetDict:
    """Tokenize sources (after data.source_prefix) and targets (as `labels`), truncated, unpadded.

    Padding is the collator's, per batch. Targets end with EOS even when the tokenizer adds none itself.
    """
    from llmtune.modeling import settings_kept

    prefix = data.source_prefix or ""
    append_eos = not adds_eos(tokenizer)
    if append_eos:
        logger.warning("the tokenizer adds no EOS token; appending %r to every target so the model learns where to stop", tokenizer.eos_token)

    def _tokenize(batch: dict[str, list]) -> dict[str, Any]:
        encoded = tokenizer([prefix + s for s in batch[data.source_column]], truncation=True, max_length=data.max_source_length)
        limit = data.max_target_length - 1 if append_eos else data.max_target_length
        labels = tokenizer(text_target=batch[data.target_column], truncation=True, max_length=limit)["input_ids"]
        encoded["labels"] = [ids + [tokenizer.eos_token_id] for ids in labels] if append_eos else labels
        return encoded

    out = {}
    with settings_kept(tokenizer):
        for role, ds in splits.items():
            out[role] = ds.map(_tokenize, batched=True, remove_columns=ds.column_names, desc=f"tokenizing ({role})")
    return type(splits)(out)


def prepare_data(cfg: FinetuneConfig, checkpoint: str | None) -> tuple[Any, DatasetDict]:
    """Load the source/target pairs, get the run's tokenizer (trained on both sides, or the model's) and tokenize.

    Returns:
        The tokenizer (ending every text with EOS, with a padding token) and the tokenized splits; each split
        keeps its source text column (Trainer drops it from batches) for the predictions files.

    Raises:
        DataError: unreadable or misaligned files, missing columns, empty texts.
    """
    splits = load_data(cfg.data, cfg.seed)
    train = splits["train"]
    train_texts = (text for column in (cfg.data.source_column, cfg.data.target_column) for text in train[column][:])
    tokenizer = prepare_tokenizer(runs.run_tokenizer(cfg, checkpoint, train_texts), cfg)
    encoded = preprocess(splits, tokenizer, cfg.data)
    for role in encoded:
        encoded[role] = encoded[role].add_column(SOURCE_TEXT, list(splits[role][cfg.data.source_column][:]))
    return tokenizer, encoded


def collator(cfg: FinetuneConfig, model: Any, tokenizer: Any, encoded: DatasetDict) -> tuple[Any, dict[str, Any]]:
    """transformers' DataCollatorForSeq2Seq: pads inputs and labels (-100) per batch, builds decoder_input_ids.

    Given the model, it shifts the labels into decoder_input_ids itself, which label smoothing
    (training.label_smoothing_factor) needs: Trainer then computes the loss from the logits.

    Returns:
        The collator, and the GenerationConfig evaluation decodes with (`build_generation_config`) as the
        run-time `generation_config` of Seq2SeqTrainingArguments.
    """
    from transformers import DataCollatorForSeq2Seq

    padding = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad_multiple(training_device_type(cfg.training)))
    return padding, {"generation_config": build_generation_config(model, tokenizer, cfg)}


def model_settings(cfg: FinetuneConfig, tokenizer: Any) -> dict[str, Any]:
    """Config fields that tie a from-scratch model's decoding to the tokenizer (none for a pretrained model).

    transformers' defaults name ids of the model's own vocabulary (BART: decoder start 2, forced EOS 2; T5:
    decoder start 0), which are ordinary tokens of a newly trained one. The decoder starts from the BOS token
    (BART's convention, BOS = EOS for byte-level BPE) or else the padding token (T5's), and a generation cut
    at max length ends with the tokenizer's EOS; BART-family weights start at a width-scaled std
    (`scratch_init_std`). Values set in model.from_config win.
    """
    if cfg.model.from_config is None:
        return {}
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id
    wanted = {"decoder_start_token_id": start, "forced_eos_token_id": tokenizer.eos_token_id}
    init = scratch_init_std(cfg.model.from_config)
    if init is not None:
        wanted["init_std"] = init
    return {k: v for k, v in wanted.items() if k not in cfg.model.from_config}


def scratch_init_std(fields: dict[str, Any]) -> float | None:
    """The weight initialisation std of a model built from config: d_model ** -0.5 where the config has `init_std`.

    BART-family configs (BART, mBART, Marian, Pegasus...) initialise every weight with init_std = 0.02, a value
    for 1024-wide pretrained models. A small model trained from scratch with Adam at a quickstart's learning
    rate then changes its weights by ~10% a step, and its encoder collapses within a few dozen steps: its
    self-attention averages every position into one large vector that is the same for every source, so the
    decoder writes one sentence for all inputs (measured on Multi30k: encoder output std across sources 1e-5,
    BLEU 2). d_model ** -0.5 (T5's scale; 0.072 at d_model 192) keeps it learning from the source.

    Returns:
        None for configs without init_std (T5 has its own, width-scaled initialisation).
    """
    from transformers import AutoConfig

    try:
        defaults = AutoConfig.for_model(fields["model_type"])
    except (ValueError, KeyError):
        return None  # an unknown model_type: load_model says so, with the fix
    d_model = fields.get("d_model", getattr(defaults, "d_model", None))
    if not hasattr(defaults, "init_std") or not d_model:
        return None
    return float(d_model) ** -0.5


def build_generation_config(model: Any, tokenizer: Any, cfg: FinetuneConfig) -> Any:
    """The GenerationConfig evaluation decodes with and the model directory keeps (generation_config.json).

    The model's own settings with `generation:` on top; max_new_tokens defaults to data.max_target_length.
    """
    from llmtune import generation

    settings = dict(cfg.generation)
    if "max_new_tokens" not in settings and "max_length" not in settings:
        settings["max_new_tokens"] = cfg.data.max_target_length
    return generation.build_generation_config(model, tokenizer, settings)


class Outputs:
    """What each evaluation decoded (texts and metric details), in call order, for predictions files and metrics_info."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []


def build_compute_metrics(names: list[str], tokenizer: Any, outputs: Outputs) -> Any:
    """A Seq2SeqTrainer `compute_metrics` scoring generated ids against the labels with llmtune's offline metrics.

    Both sides are decoded with skip_special_tokens; references are the targets as tokenized (truncated
    to data.max_target_length) and decoded. Reports bleu and chrf (sacreBLEU corpus scores, 0-100),
    rouge1/rouge2/rougeL/rougeLsum (mean F-measure, 0-100, from llmtune's rouge module) and gen_len
    (mean generated tokens). Each call's texts and the metrics' details go to `outputs`.
    """
    import numpy as np

    from llmtune import metrics as metrics_lib

    modules = {name: metrics_lib.load(name) for name in names}
    pad = tokenizer.pad_token_id

    def compute(eval_pred: Any) -> dict[str, float]:
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        # -100 marks label padding, and the padding between batches of different lengths.
        predictions = np.where(predictions < 0, pad, predictions)
        labels = np.where(labels < 0, pad, labels)
        hypotheses = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        references = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        results: dict[str, float] = {}
        details: dict[str, Any] = {}
        for name, module in modules.items():
            if name == "rouge":
                value = module.compute(predictions=hypotheses, references=references)
                for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
                    results[key] = float(value[key])
                details[name] = {k: v for k, v in value.items() if not isinstance(v, float)}
            else:
                value = module.compute(predictions=hypotheses, references=[[r] for r in references])
                results[name] = float(value["score"])
                details[name] = {k: v for k, v in value.items() if k != "score"}
        special = set(tokenizer.all_special_ids)
        results["gen_len"] = float(np.mean([sum(int(t) not in special for t in row) for row in predictions]))
        outputs.calls.append({"hypotheses": hypotheses, "references": references, "details": details})
        return results

    return compute


def metrics_info(metrics: dict[str, Any], call: dict[str, Any], prefix: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The definition and parameters of each `<prefix>_*` generation metric, as `llmtune evaluate` reports them."""
    scored = "each generated output (special tokens dropped) against the reference target (tokenized, truncated to data.max_target_length, decoded)"
    info: dict[str, Any] = {}
    details = call["details"]
    if f"{prefix}_bleu" in metrics:
        bleu = details["bleu"]
        info[f"{prefix}_bleu"] = {
            "definition": f"corpus BLEU (0-100) of {scored}",
            "implementation": "sacrebleu.BLEU via llmtune.metrics.load('bleu'), default settings",
            "signature": bleu.get("signature"),
            "tokenize": "13a",
            "brevity_penalty": bleu.get("bp"),
            "precisions": bleu.get("precisions"),
            "sys_len": bleu.get("sys_len"),
            "ref_len": bleu.get("ref_len"),
            "generation": settings,
        }
    if f"{prefix}_chrf" in metrics:
        chrf = details["chrf"]
        info[f"{prefix}_chrf"] = {
            "definition": f"corpus chrF (0-100) of {scored}",
            "implementation": "sacrebleu.CHRF via llmtune.metrics.load('chrf'), default settings",
            **{k: chrf.get(k) for k in ("signature", "char_order", "word_order", "beta")},
            "generation": settings,
        }
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        if f"{prefix}_{key}" in metrics:
            info[f"{prefix}_{key}"] = {
                "definition": f"mean {key} F-measure (0-100) of {scored}",
                "implementation": "rouge_score via llmtune.metrics.load('rouge')",
                "generation": settings,
            }
    if f"{prefix}_gen_len" in metrics:
        info[f"{prefix}_gen_len"] = {"definition": "mean number of tokens generated per source (special tokens not counted)"}
    if f"{prefix}_loss" in metrics:
        info[f"{prefix}_loss"] = {"definition": "mean token cross-entropy of the reference targets, teacher-forced (with training.label_smoothing_factor when set)"}
    return info


def evaluation_order(trainer: Any, dataset: Any) -> list[int]:
    """The row of `dataset` behind each evaluation output, in the order the trainer's eval sampler visits them."""
    from llmtune.batching import LongestFirstSampler, token_counts

    if trainer._grouping(dataset):
        return list(LongestFirstSampler(token_counts(dataset)))
    return list(range(len(dataset)))


def write_predictions(folder: Path, name: str, sources: list[str], call: dict[str, Any], order: list[int]) -> None:
    """Write `<name>_predictions.jsonl`: source, reference and prediction per row (in the data's order), as the metrics scored them."""
    from llmtune.files import write_text_atomically

    position = {row: k for k, row in enumerate(order)}
    rows = ((source, call["references"][position[i]], call["hypotheses"][position[i]]) for i, source in enumerate(sources))
    text = "".join(json.dumps({"source": s, "reference": r, "prediction": p}, ensure_ascii=False) + "\n" for s, r, p in rows)
    write_text_atomically(folder / f"{name}_predictions.jsonl", text)


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    """Train a sequence-to-sequence model, score its generated validation (and test) outputs, and save it.

    Args:
        cfg: the validated finetune config with `task: seq2seq` (`cfg.overwrite` / `cfg.resume`: what to do
            with an existing output directory).

    Returns:
        The final metrics: eval_bleu, eval_chrf (and rouge*), eval_gen_len, eval_loss, test_* with test data,
        train_*, and metrics_info (definition and parameters of each generation metric). The output
        directory also gets eval_predictions.jsonl (and test_predictions.jsonl).

    Raises:
        UserError: bad data, unreachable model, or an output directory that must not be touched.
    """
    from transformers import set_seed

    checkpoint = runs.check_output_dir(cfg.training["output_dir"], cfg.overwrite, cfg.resume, cfg)
    set_seed(cfg.seed)

    tokenizer, encoded = TASK.function("prepare_data")(cfg, checkpoint)
    model = load_model(TASK.model_class(), cfg.model, tokenizer, **model_settings(cfg, tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    padding, defaults = TASK.function("collator")(cfg, model, tokenizer, encoded)
    generation_config = defaults["generation_config"]
    settings = {
        "max_new_tokens": generation_config.max_new_tokens,
        "num_beams": generation_config.num_beams or 1,
        "do_sample": bool(generation_config.do_sample),
        **cfg.generation,
    }
    logger.info(
        "seq2seq: %d training and %d validation pairs; decoding %s",
        len(encoded["train"]),
        len(encoded["validation"]),
        ", ".join(f"{k}={v}" for k, v in settings.items()),
    )
    outputs = Outputs()
    trainer = runs.make_trainer(
        cfg, model, tokenizer, encoded, checkpoint,
        training_defaults=defaults,
        trainer_class=TASK.trainer(),
        data_collator=padding,
        compute_metrics=build_compute_metrics(cfg.metrics, tokenizer, outputs),
    )
    metrics = runs.train_and_evaluate(trainer, checkpoint, encoded.get("test"))
    # train_and_evaluate scores validation, then test: the last one or two calls are those.
    finals = {"eval": outputs.calls[-2 if "test" in encoded else -1]}
    if "test" in encoded:
        finals["test"] = outputs.calls[-1]
    info: dict[str, Any] = {}
    staging = Path(trainer.args.output_dir)
    for prefix, call in finals.items():
        info.update(metrics_info(metrics, call, prefix, settings))
        if trainer.is_world_process_zero():
            role = "validation" if prefix == "eval" else "test"
            order = evaluation_order(trainer, encoded[role])
            write_predictions(staging, prefix, list(encoded[role][SOURCE_TEXT][:]), call, order)
    metrics["metrics_info"] = info
    usage = USAGE.format(path=cfg.training["output_dir"], prefix=(cfg.data.source_prefix or "").replace('"', '\\"'))
    return runs.finish_run(trainer, cfg, metrics, TASK, usage=usage)
