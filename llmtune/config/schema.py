"""The config schema: one typed model per command, the single source of truth for keys and defaults.

`training:` and `generation:` are deliberately untyped dicts here: they belong to
`transformers.TrainingArguments` and `transformers.GenerationConfig`, and `llmtune.config.validate`
checks them against those classes instead of copying their fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from llmtune.tasks import registry


def changed(section: BaseModel, keys: tuple[str, ...]) -> list[str]:
    """The `keys` of `section` set to something other than their default.

    A key written with its default value changes nothing, and a saved llmtune.yaml writes every key: such a
    file must load again (`llmtune finetune runs/x/llmtune.yaml`), so checks of keys that do not apply to a
    task look at what is set to a value of its own.
    """
    fields = type(section).model_fields
    return [
        key for key in keys
        if key in section.model_fields_set and getattr(section, key) != fields[key].get_default(call_default_factory=True)
    ]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def flag(option: str, default: Any, description: str, **constraints: Any) -> Any:
    """A field the CLI fills from a command-line option, never read from a config file.

    Excluded from `model_dump` (so from the saved llmtune.yaml, `llmtune validate`'s output and --resume's
    comparison) and from the config reference; `load_config` refuses it in a file or an override.
    """
    return Field(default, description=f"{option}: {description}", exclude=True, json_schema_extra={"flag": option}, **constraints)


def flag_option(field: Any) -> str | None:
    """The command-line option that fills a field made with `flag`, or None for a config key."""
    extra = field.json_schema_extra
    return extra.get("flag") if isinstance(extra, dict) else None


class ModelSection(Section):
    """Which model to start from."""

    name_or_path: str | None = Field(
        None, description="Hub id (bert-base-uncased, gpt2) or local model directory to load weights from."
    )
    from_config: dict[str, Any] | None = Field(
        None,
        description="Build a randomly initialised model from these config fields instead "
        "(model_type plus any AutoConfig field, e.g. {model_type: bert, hidden_size: 128}).",
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit of name_or_path; null = main.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the Hub; off because it runs remote code.")
    resize_embeddings: bool = Field(
        False,
        description="Training only: let a pretrained model take a new (tokenizer.train) or larger tokenizer, resizing its "
        "embeddings (new rows start random); off, that is an error, since it discards what the rows learned.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.name_or_path is None) == (self.from_config is None):
            raise ValueError("set exactly one of model.name_or_path (load weights) or model.from_config (random init)")
        if self.from_config is not None and "model_type" not in self.from_config:
            raise ValueError("model.from_config needs a model_type, e.g. {model_type: bert, hidden_size: 128, ...}")
        return self


class TokenizerTrainSection(Section):
    """Train a tokenizer from scratch on the training text with Hugging Face `tokenizers`."""

    type: Literal["wordpiece", "bpe"] = Field(
        "wordpiece", description="wordpiece for BERT-style models, bpe (byte-level) for GPT-2-style models."
    )
    vocab_size: int = Field(8000, gt=100, description="Target vocabulary size; 8k is plenty for a small corpus.")
    min_frequency: int = Field(2, ge=1, description="Drop merges/pieces seen fewer times; 2 skips one-off typos.")
    lowercase: bool = Field(True, description="Lower-case text before tokenizing (wordpiece only; uncased models).")


class TokenizerSection(Section):
    """Which tokenizer to use; by default the model's own."""

    name_or_path: str | None = Field(None, description="Hub id or directory; null = the model's tokenizer.")
    train: TokenizerTrainSection | None = Field(None, description="Train a new tokenizer on the training split instead.")

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerSection:
        if self.name_or_path is not None and self.train is not None:
            raise ValueError("set at most one of tokenizer.name_or_path or tokenizer.train")
        return self


class HubDataSection(Section):
    """A data set from the Hugging Face Hub (needs the network, or a local datasets cache)."""

    path: str = Field(description="Data set id, e.g. glue or stanfordnlp/imdb.")
    name: str | None = Field(None, description="Configuration name, e.g. sst2 for glue.")
    train_split: str = Field("train", description="Split used for training.")
    validation_split: str | None = Field("validation", description="Split used for evaluation; null = carve one out of train.")
    test_split: str | None = Field(None, description="Split used for the final test metrics, if any.")
    revision: str | None = Field(None, description="Branch, tag or commit of the data set.")


class ParallelFiles(Section):
    """task: seq2seq: a line-aligned pair of plain-text files, one per side (how translation corpora ship)."""

    source: str = Field(description="The source side, one example per line (e.g. train.en).")
    target: str = Field(description="The target side, line i translating line i of source (e.g. train.fr).")


class DataSection(Section):
    """Where the data comes from and how it is turned into model inputs."""

    train_file: str | ParallelFiles | None = Field(
        None,
        description="Training data: .csv, .tsv, .json, .jsonl, .parquet or .txt; task: seq2seq also takes "
        "{source: train.en, target: train.fr}, two line-aligned text files.",
    )
    validation_file: str | ParallelFiles | None = Field(None, description="Evaluation data in the same format; or use validation_split.")
    test_file: str | ParallelFiles | None = Field(None, description="Optional held-out data, scored once at the end as test_*.")
    validation_split: float | None = Field(
        None, gt=0, lt=1, description="Without a validation file: hold out this fraction of train (seeded, stratified by label)."
    )
    hub: HubDataSection | None = Field(None, description="Load from the Hub instead of files (online only).")
    text_column: str = Field("text", description="Column holding the input text.")
    text_pair_column: str | None = Field(None, description="Second text column for sentence-pair tasks (MRPC, NLI).")
    label_column: str = Field("label", description="Column holding the label: ints or strings (strings map to ids saved in the model config).")
    label_names: list[str] | None = Field(
        None, description="Names for integer labels 0..n-1, e.g. [negative, positive]; saved as id2label."
    )
    column_names: list[str] | None = Field(None, description="Column names for headerless csv/tsv files, e.g. [text, label].")
    format: Literal["txt", "csv", "tsv", "json", "jsonl", "parquet"] | None = Field(
        None,
        description="How to read the data files, overriding their extension (WikiText's wiki.train.raw: txt); "
        "null = from each file's extension.",
    )
    max_length: int = Field(128, gt=0, description="Truncate (or, for language modelling, pack) to this many tokens.")
    max_train_samples: int | None = Field(None, gt=0, description="Use only the first N training rows (smoke runs).")
    max_eval_samples: int | None = Field(None, gt=0, description="Use only the first N validation/test rows.")
    packing: bool = Field(True, description="Language modelling: concatenate texts and cut them into fixed max_length blocks (true) or keep one example per row (false; causal-lm batches them padding-free where the model allows).")
    source_column: str = Field("source", description="task: seq2seq: column holding the input text (the sentence to translate, the document to summarize).")
    target_column: str = Field("target", description="task: seq2seq: column holding the output text the model learns to write.")
    source_prefix: str | None = Field(
        None, description="task: seq2seq: text put before every source, e.g. 'translate English to French: ' for T5; null = none."
    )
    max_source_length: int = Field(128, gt=0, description="task: seq2seq: truncate sources to this many tokens (prefix included).")
    max_target_length: int = Field(
        128, gt=0, description="task: seq2seq: truncate targets to this many tokens; also the default generation.max_new_tokens."
    )

    @model_validator(mode="after")
    def _sources(self) -> DataSection:
        if self.hub is None and self.train_file is None:
            raise ValueError("set data.train_file (a local file) or data.hub (a Hub data set)")
        if self.hub is not None and any([self.train_file, self.validation_file, self.test_file]):
            raise ValueError("use either data.hub or data.*_file, not both")
        if self.validation_file is not None and self.validation_split is not None:
            raise ValueError("set data.validation_file or data.validation_split, not both")
        pairs = [f for f in (self.train_file, self.validation_file, self.test_file) if isinstance(f, ParallelFiles)]
        if pairs and self.format not in (None, "txt"):
            raise ValueError(f"data.format: {self.format} does not apply to {{source, target}} file pairs, which are plain text lines; remove it")
        return self


class PeftSection(Section):
    """Parameter-efficient fine-tuning with the `peft` library: train small LoRA adapters, keep the base weights frozen."""

    method: Literal["lora"] = Field("lora", description="The PEFT method; lora (low-rank adapters, peft.LoraConfig) is the one supported.")
    r: int = Field(8, gt=0, description="Rank of each adapter's update matrices; 8 is peft's default, 16-64 for harder tasks.")
    alpha: int | float = Field(
        16, gt=0, description="LoRA scaling numerator (the update is scaled by alpha/r); 2*r is the usual choice."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapters' input; 0.05 regularises small data sets a little.")
    target_modules: Literal["auto"] | list[str] = Field(
        "auto",
        description="Which Linear modules get adapters, by name or name suffix (peft's target_modules), e.g. [query, value]; "
        "auto = peft's choice for the model type (the attention projections), else the model's q/k/v projections.",
    )
    merge: bool = Field(
        True,
        description="Also save merged/: the adapters folded into the base weights (merge_and_unload), a plain transformers "
        "model that from_pretrained/pipeline() load without peft and that runs as fast as the base; the adapter is kept too.",
    )

    @field_validator("target_modules")
    @classmethod
    def _named_modules(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or any(not name.strip() for name in value)):
            raise ValueError("give module names such as [query, value] (no empty ones), or auto")
        return value


class ParamSpec(Section):
    """One dimension of a `search.space`: the values `llmtune tune` tries for one config key (Optuna's distributions)."""

    type: Literal["float", "int", "categorical"] = Field(
        description="float (suggest_float: a real range), int (suggest_int: whole numbers) or categorical (one of choices)."
    )
    low: int | float | None = Field(None, description="float/int: the smallest value tried.")
    high: int | float | None = Field(None, description="float/int: the largest value tried (included).")
    log: bool = Field(False, description="float/int: sample on a log scale (learning rates, weight decay); needs low > 0.")
    step: int | float | None = Field(None, gt=0, description="float/int: only values low + k*step; null = any value (float) or 1 (int).")
    choices: list[Any] | None = Field(None, description="categorical: the values to choose among (numbers, strings, booleans, null).")

    @model_validator(mode="after")
    def _fits_type(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("type: categorical needs choices, e.g. choices: [16, 32]")
            ranged = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (["log"] if self.log else [])
            if ranged:
                verb = "applies" if len(ranged) == 1 else "apply"
                raise ValueError(f"{', '.join(ranged)} only {verb} to type: float or int; a categorical takes choices alone (remove {', '.join(ranged)})")
            return self
        if self.choices is not None:
            raise ValueError(f"choices only apply to type: categorical; type: {self.type} takes low and high (or use type: categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"type: {self.type} needs low and high, e.g. {{type: {self.type}, low: 1, high: 8}}")
        if self.type == "int":
            fractional = [f"{k} {v:g}" for k, v in (("low", self.low), ("high", self.high), ("step", self.step)) if v is not None and not float(v).is_integer()]
            if fractional:
                raise ValueError(
                    f"type: int takes whole numbers, but {', '.join(fractional)} {'is not one' if len(fractional) == 1 else 'are not'}; "
                    "use type: float for a real-valued key"
                )
        if self.low >= self.high:
            raise ValueError(f"empty range: low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (a log scale has no 0 or negative values), got low {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples a log scale continuously); drop one")
        return self

    def distribution(self) -> Any:
        """The Optuna distribution of this dimension (imports optuna)."""
        from optuna import distributions

        if self.type == "categorical":
            return distributions.CategoricalDistribution(self.choices)
        if self.type == "int":
            return distributions.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def probes(self) -> list[tuple[str, Any]]:
        """The values validation loads the config with: (what the value is, value): low and high, or every choice."""
        if self.type == "categorical":
            return [(f"choices[{i}]", choice) for i, choice in enumerate(self.choices or [])]
        cast = int if self.type == "int" else float
        return [("low", cast(self.low)), ("high", cast(self.high))]


class SearchSection(Section):
    """`llmtune tune`: the hyperparameter search over this training config (Optuna). Training commands ignore it."""

    metric: str = Field(
        "eval_loss", description="What the search optimizes: a validation metric the run reports (eval_loss, eval_accuracy, eval_bleu, ...)."
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="minimize or maximize metric; null = minimize a metric ending in loss or perplexity, maximize any other."
    )
    trials: int = Field(20, gt=0, description="Finished trials (complete or pruned) the study runs to; --trials N overrides it.")
    space: dict[str, ParamSpec] = Field(
        description="Config key (as in a key.path=value override, e.g. training.learning_rate) -> the values to try: "
        "{type: float or int, low, high, log, step} or {type: categorical, choices: [...]}."
    )
    pruning: bool = Field(
        True,
        description="Stop a trial early when its intermediate evaluations are worse than the median of earlier trials at the "
        "same step (Optuna's MedianPruner; needs training.eval_strategy steps or epoch).",
    )

    @model_validator(mode="after")
    def _direction(self) -> SearchSection:
        if not self.space:
            raise ValueError("search.space is empty: name at least one config key to search, e.g. training.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}")
        if self.direction is None:
            lower_is_better = self.metric.lower().endswith(("loss", "perplexity"))
            self.direction = "minimize" if lower_is_better else "maximize"
        return self


class RunConfig(Section):
    """Keys shared by every training command."""

    seed: int = Field(42, description="Seeds Python, NumPy, torch, data splits and masking, for repeatable runs.")
    model: ModelSection
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection, description="Optional: defaults to the model's tokenizer.")
    data: DataSection
    training: dict[str, Any] = Field(
        description="Any transformers.TrainingArguments field (output_dir is required), plus early_stopping_patience "
        "and early_stopping_threshold for Trainer's EarlyStoppingCallback, and precision (auto|bf16|fp16|fp32, default "
        "auto: bf16 on GPUs that support it, fp16 on older ones, fp32 on CPU; see README, Speed)."
    )

    peft: PeftSection | None = Field(
        None, description="Train LoRA adapters (peft) instead of every weight, e.g. {method: lora, r: 8}; null = full fine-tuning."
    )

    search: SearchSection | None = Field(
        None, description="The hyperparameter search `llmtune tune` runs over this config (see README); finetune and pretrain-mlm ignore it."
    )

    overwrite: bool = flag("--overwrite", False, "replace a non-empty output directory (once the new run is complete).")
    resume: bool = flag("--resume", False, "continue from the last checkpoint in the output directory.")
    # The run's TrainingArguments, machine plan and callbacks (llmtune.runs.RunSetup), built by load_config.
    _setup: Any = PrivateAttr(None)

    @property
    def setup(self) -> Any:
        """The `llmtune.runs.RunSetup` load_config built for this run, or None (not validated for this machine)."""
        return self._setup

    @model_validator(mode="after")
    def _tokenizer_source(self) -> RunConfig:
        if self.model.from_config is not None and self.tokenizer.name_or_path is None and self.tokenizer.train is None:
            raise ValueError(
                "a model built from model.from_config has no tokenizer: set tokenizer.train (train one on the data) "
                "or tokenizer.name_or_path"
            )
        return self

    @model_validator(mode="after")
    def _peft_adapts_pretrained(self) -> RunConfig:
        if self.peft is None:
            return self
        # LoRA freezes the base weights and learns a small update: over random weights there is nothing to adapt,
        # and new embedding rows (a trained vocabulary) would stay random, since LoRA does not train embeddings.
        if self.model.from_config is not None:
            raise ValueError(
                "peft: LoRA adapts a pretrained model, but model.from_config builds a randomly initialised one; set "
                "model.name_or_path to a pretrained model, or remove peft: to train every weight"
            )
        if self.tokenizer.train is not None:
            raise ValueError(
                "peft: tokenizer.train gives the model a new vocabulary whose embeddings LoRA would leave untrained; "
                "remove tokenizer.train (use the model's own tokenizer), or remove peft: to train every weight"
            )
        if self.model.resize_embeddings:
            raise ValueError(
                "peft: model.resize_embeddings adds randomly initialised embedding rows that LoRA would leave untrained; "
                "remove model.resize_embeddings (and use the model's own tokenizer), or remove peft: to train every weight"
            )
        return self

    @model_validator(mode="after")
    def _seq2seq_only_keys(self) -> RunConfig:
        task = getattr(self, "task", None)
        if task == "seq2seq":
            return self
        # Set for another task, these would silently do nothing: say so instead.
        keys = [f"data.{k}" for k in changed(self.data, SEQ2SEQ_DATA_KEYS)]
        keys += [f"data.{k}" for k in ("train_file", "validation_file", "test_file") if isinstance(getattr(self.data, k), ParallelFiles)]
        if keys:
            what = f"task: {task}" if task else "this command"
            them = "it" if len(keys) == 1 else "them"
            raise ValueError(
                f"{', '.join(keys)} only {'applies' if len(keys) == 1 else 'apply'} to task: seq2seq; remove {them} for {what} "
                "(it reads one data file per split and data.text_column), or set task: seq2seq"
            )
        return self


class FinetuneConfig(RunConfig):
    """`llmtune finetune`: sequence classification, causal-LM or sequence-to-sequence fine-tuning."""

    task: Literal[registry.task_names("finetune")] = Field(  # type: ignore[valid-type]  # the registry's finetune tasks
        registry.task_names("finetune")[0],
        description="What to fine-tune for: classification (a sequence classifier), causal-lm "
        "(next-token prediction, e.g. GPT-2; reports token-weighted perplexity) or seq2seq (translation, "
        "summarization: an encoder-decoder such as T5, BART or Marian; reports BLEU/chrF of generated text).",
    )
    metrics: list[str] = Field(
        list(registry.task("classification").default_metrics),
        description="Reported on validation/test: accuracy, f1, precision, recall (binary average for 2 labels, macro otherwise) "
        "for classification; bleu, chrf, rouge for seq2seq (default there: [bleu, chrf]). Not for causal-lm.",
    )
    generation: dict[str, Any] = Field(
        {},
        description="task: seq2seq: how validation/test outputs are generated: any transformers.GenerationConfig field "
        "(max_new_tokens defaults to data.max_target_length, decoding to greedy; num_beams: 4 for beam search). Saved as the "
        "model's generation_config.json. Checked against GenerationConfig before the model loads.",
    )

    @model_validator(mode="after")
    def _seq2seq_keys(self) -> FinetuneConfig:
        if self.task != "seq2seq":
            if changed(self, ("generation",)):
                raise ValueError(f"generation only applies to task: seq2seq (it decodes the validation outputs); remove it for task: {self.task}")
            return self
        # Set explicitly, these keys would silently do nothing for a seq2seq model: say so instead.
        unused = [f"data.{k}" for k in changed(self.data, (*CLASSIFICATION_DATA_KEYS, "text_column", "max_length", "packing"))]
        if unused:
            raise ValueError(
                f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used by task: seq2seq; remove "
                f"{'it' if len(unused) == 1 else 'them'} (it reads data.source_column and data.target_column, truncated to "
                "data.max_source_length / data.max_target_length)"
            )
        if "metrics" not in self.model_fields_set:
            self.metrics = list(SEQ2SEQ_DEFAULT_METRICS)
        wrong = [m for m in self.metrics if m not in SEQ2SEQ_METRICS]
        if wrong or not self.metrics:
            raise ValueError(
                f"metrics: {', '.join(wrong) or 'an empty list'}: task: seq2seq reports {', '.join(SEQ2SEQ_METRICS)}; "
                f"choose among them (default {list(SEQ2SEQ_DEFAULT_METRICS)})"
            )
        if self.tokenizer.train is not None and self.tokenizer.train.type == "wordpiece":
            raise ValueError(
                "tokenizer.train.type: wordpiece has no end-of-sequence token, so a seq2seq model could not learn where "
                "its output ends; use type: bpe (byte-level BPE)"
            )
        returned = self.generation.get("num_return_sequences")
        if isinstance(returned, int) and returned > 1:
            raise ValueError("generation.num_return_sequences: validation scores one output per source; remove it (or set 1)")
        return self

    @model_validator(mode="after")
    def _causal_lm_keys(self) -> FinetuneConfig:
        if registry.task(self.task).metrics:
            return self
        # Set explicitly, these keys would silently do nothing for a language model: say so instead.
        label_only = list(changed(self, ("metrics",)))
        label_only += [f"data.{k}" for k in changed(self.data, CLASSIFICATION_DATA_KEYS)]
        if label_only:
            raise ValueError(
                f"{', '.join(label_only)} only apply to task: classification; remove them for task: causal-lm "
                "(it trains on data.text_column alone and reports perplexity)"
            )
        return self

class EvalDataSection(DataSection):
    """`data:` for evaluation: any one split is enough (no training file needed)."""

    prompt_column: str = Field("prompt", description="eval.kind generation: column holding the prompt to complete.")
    reference_column: str = Field(
        "reference",
        description="eval.kind generation: column holding the reference completion, a string or a list of strings "
        "(several references per prompt).",
    )

    @model_validator(mode="after")
    def _sources(self) -> EvalDataSection:
        if self.hub is None and not any([self.train_file, self.validation_file, self.test_file]):
            raise ValueError("set data.validation_file (or data.test_file / data.train_file, or data.hub) to evaluate on")
        if self.hub is not None and any([self.train_file, self.validation_file, self.test_file]):
            raise ValueError("use either data.hub or data.*_file, not both")
        if self.validation_file is not None and self.validation_split is not None:
            raise ValueError("set data.validation_file or data.validation_split, not both")
        pairs = [f for f in (self.train_file, self.validation_file, self.test_file) if isinstance(f, ParallelFiles)]
        if pairs and self.format not in (None, "txt"):
            raise ValueError(f"data.format: {self.format} does not apply to {{source, target}} file pairs, which are plain text lines; remove it")
        return self


class EvalSection(Section):
    """How `llmtune evaluate` scores the model."""

    kind: Literal[("auto", *registry.eval_kinds())] = Field(  # type: ignore[valid-type]  # the registry's evaluation kinds
        "auto",
        description="auto = from the model's architectures (*ForSequenceClassification -> classification, "
        "*ForCausalLM/*LMHeadModel -> causal-lm, *ForMaskedLM -> masked-lm, *ForConditionalGeneration/*MTModel -> seq2seq: "
        "BLEU/chrF/ROUGE of its outputs for data.source_column against data.target_column); generation (BLEU/chrF/ROUGE of a "
        "causal or encoder-decoder LM's completions of data.prompt_column against data.reference_column) is never picked "
        "automatically.",
    )
    split: Literal["validation", "test", "train"] = Field(
        "validation", description="Which data split to score: data.<split>_file, the Hub split, or the carved-out validation_split."
    )
    batch_size: int = Field(16, gt=0, description="Examples (or windows) per forward pass; 16 fits small models on a CPU.")
    stride: int | None = Field(
        None,
        gt=0,
        description="causal-lm: sliding-window perplexity over the concatenated texts, windows of data.max_length tokens moved "
        "by this many; null = each text scored on its own, truncated to data.max_length.",
    )


class EvaluateConfig(Section):
    """`llmtune evaluate`: score a trained model on a data set without training."""

    seed: int | None = Field(None, description="Seeds the validation_split carve-out; null = the model's training seed (its llmtune.yaml), else 42.")
    model: ModelSection = Field(description="The trained model (name_or_path); --model DIR sets it.")
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection, description="Optional: defaults to the model's tokenizer.")
    data: EvalDataSection | None = Field(
        None, description="The data to score; null = the data section of the model directory's llmtune.yaml (how it was trained)."
    )
    eval: EvalSection = Field(default_factory=EvalSection, description="What to compute and on which split.")
    output_dir: str | None = Field(
        None, description="Write metrics.json, pictures (confusion_matrix.png) and generations.jsonl here; null = stdout only."
    )
    mlm: MLMSection | None = Field(
        None,
        description="eval.kind masked-lm: how the evaluation set is masked (once, seeded); unset keys come from the model "
        "directory's llmtune.yaml (how pretrain-mlm masked it), else BERT's defaults.",
    )
    generation: dict[str, Any] = Field(
        {},
        description="eval.kind generation: any transformers.GenerationConfig field (as in llmtune generate; max_new_tokens "
        "defaults to 64, decoding to greedy). Checked against GenerationConfig before the model loads.",
    )
    stop: list[str] = Field([], description="eval.kind generation: cut each completion at the first of these strings, e.g. ['\\n\\n'].")
    metrics: list[str] | None = Field(
        None,
        description="Which metrics to report: classification accuracy, f1, precision, recall (eval_loss always); generation "
        "bleu, chrf, rouge (eval_mean_completion_tokens and eval_truncated_rate always); null = all of the kind's. "
        "A training config's metrics: apply.",
    )
    fail_under: list[str] = flag("--fail-under", [], "METRIC=VALUE gates: exit 3 if METRIC < VALUE.")
    fail_over: list[str] = flag("--fail-over", [], "METRIC=VALUE gates: exit 3 if METRIC > VALUE.")
    # The training config this one was read from (llmtune.config.training_view.TrainingSource), or None.
    _trained: Any = PrivateAttr(None)

    @property
    def trained(self) -> Any:
        """The `TrainingSource` when this config was read from a training config (`llmtune evaluate TRAIN_CONFIG`), else None."""
        return self._trained

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str] | None) -> list[str] | None:
        import difflib

        known = registry.evaluation_metrics()
        for name in metrics or []:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"'{name}' is not a metric evaluate reports{hint}; choose among {', '.join(known)}")
        return metrics

    @model_validator(mode="after")
    def _weights(self) -> EvaluateConfig:
        if self.model.from_config is not None:
            raise ValueError("evaluate needs trained weights: set model.name_or_path (or pass --model DIR), not model.from_config")
        if self.tokenizer.train is not None:
            raise ValueError("evaluate cannot train a tokenizer: drop tokenizer.train (the model directory has its tokenizer)")
        if self.model.resize_embeddings:
            raise ValueError("model.resize_embeddings is for training commands: new embedding rows would be untrained here; remove it")
        if any(not s for s in self.stop):
            raise ValueError("stop: an empty stop string would cut every completion to nothing; remove it")
        returned = self.generation.get("num_return_sequences")
        if isinstance(returned, int) and returned > 1:
            raise ValueError("generation.num_return_sequences: evaluate scores one completion per prompt; remove it (or set 1)")
        return self



class MLMSection(Section):
    """How tokens are masked for masked-language-model training (transformers' DataCollatorForLanguageModeling)."""

    probability: float = Field(0.15, gt=0, lt=1, description="Fraction of tokens chosen for prediction; 0.15 as in BERT.")
    whole_word: bool = Field(
        False,
        description="Mask every piece of a word together (needs a fast tokenizer; chosen words are all replaced by [MASK], "
        "no 80/10/10); off = BERT's token masking.",
    )
    pad_to_multiple_of: int | Literal["auto"] | None = Field(
        "auto",
        description="Pad batches to a multiple of this; auto = 8 on a CUDA GPU (tensor-core kernels), no rounding on a CPU "
        "(there it only adds work); null = no rounding.",
    )

    @model_validator(mode="after")
    def _positive_multiple(self) -> MLMSection:
        multiple = self.pad_to_multiple_of
        if isinstance(multiple, int) and multiple < 1:
            raise ValueError(f"mlm.pad_to_multiple_of: must be at least 1, got {multiple}. Use auto, null or a positive number such as 8")
        return self


class PretrainMLMConfig(RunConfig):
    """`llmtune pretrain-mlm`: masked-language-model pretraining, from scratch (model.from_config) or continued (model.name_or_path)."""

    mlm: MLMSection = Field(default_factory=MLMSection, description="Masking settings; the defaults are BERT's.")

    @model_validator(mode="before")
    @classmethod
    def _bert_by_default(cls, data: Any) -> Any:
        from_config = data.get("model", {}).get("from_config") if isinstance(data, dict) and isinstance(data.get("model"), dict) else None
        if isinstance(from_config, dict) and "model_type" not in from_config:
            data = {**data, "model": {**data["model"], "from_config": {"model_type": "bert", **from_config}}}
        return data




CLASSIFICATION_DATA_KEYS = ("label_column", "label_names", "text_pair_column")
SEQ2SEQ_DATA_KEYS = ("source_column", "target_column", "source_prefix", "max_source_length", "max_target_length")
# The seq2seq row of the task registry lists them; rouge reports rouge1, rouge2, rougeL and rougeLsum.
SEQ2SEQ_METRICS = registry.task("seq2seq").metrics
SEQ2SEQ_DEFAULT_METRICS = registry.task("seq2seq").default_metrics


class GenerateConfig(Section):
    """`llmtune generate`: complete prompts with a causal or encoder-decoder language model, JSONL out."""

    seed: int = Field(42, description="Seeds sampling (generation.do_sample), so a run repeats exactly.")
    model: ModelSection | None = Field(None, description="The model: model.name_or_path (Hub id or directory), or --model DIR.")
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection, description="Optional: defaults to the model's tokenizer.")
    prompts: list[str] | None = Field(
        None, description="Prompts to complete when neither --prompt nor --input is given."
    )
    prompt_field: str = Field("prompt", description="The field holding the prompt in .jsonl input records; other fields are passed through.")
    batch_size: int = Field(8, gt=0, description="Prompts per forward pass (left-padded for a causal LM, right-padded for an encoder-decoder; grouped by length); lower it if memory runs out.")
    stop: list[str] = Field(
        [], description="Cut each completion at the first of these strings (not included), e.g. ['\\n\\n']; generation stops there too."
    )
    generation: dict[str, Any] = Field(
        {},
        description="Any transformers.GenerationConfig field: max_new_tokens (llmtune default 64), do_sample, temperature, "
        "top_k, top_p, typical_p, num_beams, length_penalty, early_stopping, repetition_penalty, no_repeat_ngram_size, "
        "num_return_sequences, ... Checked against GenerationConfig before the model loads.",
    )

    prompt: list[str] | None = flag("--prompt", None, "prompts to complete, instead of the config's prompts.")
    input: str | None = flag("--input", None, "prompts file (.txt one per line, or .jsonl); - reads stdin.")
    input_format: str | None = flag("--input-format", None, "txt or jsonl; by default from the file extension.")
    output: str | None = flag("--output", None, "write the JSONL here instead of stdout.")

    @model_validator(mode="after")
    def _generate_sources(self) -> GenerateConfig:
        if self.model is None:
            raise ValueError("no model: set model.name_or_path (a Hub id or a trained model directory) or pass --model DIR")
        if self.model.from_config is not None:
            raise ValueError("model.from_config builds an untrained model; generate needs model.name_or_path (trained weights)")
        if self.tokenizer.train is not None:
            raise ValueError("tokenizer.train is for training commands; generate uses the model's tokenizer (or tokenizer.name_or_path)")
        if self.model.resize_embeddings:
            raise ValueError("model.resize_embeddings is for training commands: new embedding rows would be untrained here; remove it")
        empty = [f"prompts[{i}]" for i, p in enumerate(self.prompts or []) if not p.strip()]
        if empty:
            raise ValueError(f"{', '.join(empty)} is empty; every prompt needs some text")
        if any(not s for s in self.stop):
            raise ValueError("stop: an empty stop string would cut every completion to nothing; remove it")
        return self


class PredictConfig(Section):
    """`llmtune predict`: classify texts with a trained sequence classifier, JSONL out (its options are command-line flags)."""

    model: str = Field(description="--model: the trained classifier directory (or Hub id).")
    input: str = Field(description="--input: a .txt, .jsonl, .csv or .tsv file, or - for stdin.")
    input_format: str | None = Field(
        None, description="--input-format: txt, jsonl, csv or tsv, overriding the extension (stdin: jsonl if it starts with {, else txt)."
    )
    output: str | None = Field(None, description="--output: write the JSONL here instead of stdout.")
    text_field: str = Field("text", description="--text-field: the field/column holding the text.")
    text_pair_field: str | None = Field(None, description="--text-pair-field: the field/column holding the second text of a pair.")
    batch_size: int = Field(32, ge=1, description="--batch-size: examples per forward pass.")
    top_k: int | None = Field(None, ge=1, description="--top-k: keep the k most likely labels in probabilities; null = all.")
    max_length: int | None = Field(None, ge=1, description="--max-length: truncate inputs to this many tokens; null = the model's maximum.")


# EvaluateConfig.mlm refers to MLMSection, defined after it.
EvaluateConfig.model_rebuild()

# The training commands and their schemas come from the task registry (each task names its schema class).
SCHEMAS: dict[str, type[Section]] = {
    **{task.command: globals()[task.schema] for task in registry.TASKS},
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
    "predict": PredictConfig,
}
