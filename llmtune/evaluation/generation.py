"""`llmtune evaluate` of generation: corpus BLEU, chrF and ROUGE of a causal or encoder-decoder LM's outputs against references."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune.errors import DataError
from llmtune.evaluation.common import PREFIX, Context, load_eval_split

if TYPE_CHECKING:
    from datasets import DatasetDict

    from llmtune.config.schema import EvalDataSection

logger = logging.getLogger(__name__)


def metric_names(model_config: Any, metrics: list[str] | None = None) -> list[str]:
    """Corpus BLEU, chrF and ROUGE of the completions, their mean length and how many ran into max_new_tokens.

    Args:
        model_config: unused (every model reports the same names).
        metrics: report only these (of bleu, chrf, rouge) besides the two length figures; None = all.
    """
    reported = {"bleu": ("bleu",), "chrf": ("chrf",), "rouge": ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    chosen = [name for metric, names in reported.items() if metrics is None or metric in metrics for name in names]
    return [PREFIX + name for name in (*chosen, "mean_completion_tokens", "truncated_rate")]


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


def evaluate(ctx: Context) -> dict[str, Any]:
    """Complete each prompt with the `generation:` settings and score the completions with corpus BLEU, chrF and ROUGE.

    Writes generations.jsonl (prompt, reference, completion, completion_tokens, finish_reason per row) to
    output_dir when there is one.
    """
    splits = load_eval_split(ctx.data, ctx.cfg.eval.split, ctx.seed)
    prompts, references = prompt_reference_pairs(splits, ctx.data, ctx.cfg.eval.split)
    return score(ctx, prompts, references)


def score(ctx: Context, prompts: list[str], references: list[Any], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate for each prompt with the `generation:` settings (or `settings`) and score the outputs against the references.

    Returns:
        eval_bleu, eval_chrf, eval_rouge*, eval_mean_completion_tokens, eval_truncated_rate, their metrics_info,
        num_examples, the generation settings and the generations.jsonl written to output_dir (when set).
    """
    from llmtune import metrics as metrics_lib
    from llmtune.files import atomic_writer, write_jsonl
    from llmtune.generation import PromptTooLong, build_generation_config, generate_texts, load_generation_model

    cfg, split = ctx.cfg, ctx.cfg.eval.split
    model, tokenizer = load_generation_model(cfg.model, cfg.tokenizer)  # a causal LM, or an encoder-decoder (T5, BART...)
    requested = cfg.generation if settings is None else settings
    generation_config = build_generation_config(model, tokenizer, requested)
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
        **requested,
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
