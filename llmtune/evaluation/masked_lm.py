"""`llmtune evaluate` of a masked LM: masked-token accuracy and perplexity, the evaluation set masked once, seeded."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune.evaluation.common import PREFIX, Context, load_eval_split, load_model, saved_run
from llmtune.lm import LM_METRICS

if TYPE_CHECKING:
    from llmtune.config.schema import EvalDataSection, EvaluateConfig, MLMSection

logger = logging.getLogger(__name__)


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


def metric_names(model_config: Any) -> list[str]:
    """Token-weighted perplexity, mean NLL per token, token accuracy and the number of scored (masked) tokens."""
    return [PREFIX + name for name in LM_METRICS]


def evaluate(ctx: Context) -> dict[str, Any]:
    """Masked-token accuracy and token-weighted perplexity, with the evaluation set masked once, seeded.

    The text is encoded and masked exactly as `llmtune pretrain-mlm` encodes and masks its validation set
    (`llmtune.lm.encode_masked`, same seed and settings), and scored by `Trainer.evaluate` with the run's
    collator, `masked_preprocess` and `lm_metrics`, so a pretrain-mlm model directory scores its run's own
    eval_perplexity.
    """
    import tempfile

    from datasets import DatasetDict
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from llmtune.lm import MaskingCollator, encode_masked, lm_metrics, masked_preprocess
    from llmtune.modeling import pad_multiple

    cfg, split = ctx.cfg, ctx.cfg.eval.split
    mlm, data = resolve_masking(cfg, ctx.data)
    model, tokenizer = load_model("masked-lm", cfg)
    splits = load_eval_split(data, split, ctx.seed)
    data_lib.require_columns(splits, {"data.text_column": data.text_column})
    # encode_masked() masks every split but "train" once with the seed; the key keeps eval.split=train masked too.
    masked = encode_masked(DatasetDict({"eval": splits[split]}), tokenizer, data, mlm, ctx.seed)["eval"]
    where = next(model.parameters()).device
    collate = MaskingCollator(tokenizer, mlm.probability, mlm.whole_word, pad_multiple(where.type, mlm.pad_to_multiple_of))
    # Trainer wants an output_dir it may create; evaluate writes only where --output-dir says.
    from llmtune.terminal import quiet

    with tempfile.TemporaryDirectory(prefix="llmtune-evaluate-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=cfg.eval.batch_size,
            remove_unused_columns=False,  # the collator reads offset_mapping / special_tokens_mask
            dataloader_pin_memory=where.type == "cuda",  # pinning only speeds copies to a GPU; torch warns without one
            report_to="none",
            seed=ctx.seed,
            disable_tqdm=quiet(),  # the evaluation's progress bar, except under --quiet
        )
        trainer = Trainer(model=model, args=args, data_collator=collate, preprocess_logits_for_metrics=masked_preprocess, compute_metrics=lm_metrics)
        trainer.remove_callback(PrinterCallback)  # with disable_tqdm it would print the metrics dict: the JSON result has them
        # float32 stats summed in dataset order, as Trainer's compute_metrics sees them during pretrain-mlm.
        values = trainer.evaluate(masked, metric_key_prefix="eval")
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
    metrics = {PREFIX + name: values.get(PREFIX + name) for name in LM_METRICS}
    return {**metrics, "perplexity_definition": "masked-tokens", "masking": masking, "num_examples": len(masked), "metrics_info": info}
