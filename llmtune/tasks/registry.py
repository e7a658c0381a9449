"""The task registry: one row per task llmtune trains, and one per kind of evaluation.

Everything that needs to know which tasks exist looks them up here: the config schema (`task:` and
`eval.kind` values), `llmtune finetune`'s dispatch, `llmtune evaluate`'s kinds, the architecture -> kind
mapping of saved models, the model checks of `llmtune validate`, the model card's pipeline tag. A new
task is one module under `llmtune/tasks/` and one `Task` row below (plus its configs and tests).

The rows hold names, not objects (classes and functions are resolved when asked for), so importing
this module costs nothing: `llmtune --help` must not load torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Task:
    """One task llmtune trains.

    Attributes:
        name: the `task:` value (finetune) and the evaluation kind of its models.
        command: the training command that runs it (finetune, pretrain-mlm).
        schema: the config schema class (in llmtune.config.schema) of that command.
        module: the task module, with `run(cfg) -> dict` and the functions named below.
        auto_class: the transformers `AutoModelFor...` class that builds or loads its models.
        head_mapping: the `transformers.models.auto.modeling_auto` mapping of model types `auto_class` accepts.
        architectures: the endings of `config.architectures` entries that identify its saved models.
        words: how messages name such a model ("a sequence classifier").
        eval_kind: the `llmtune evaluate` kind (an `EVALUATIONS` key) that scores its models.
        pipeline_tag: the model card's `pipeline_tag` (transformers `pipeline()` task).
        metrics: the metrics `metrics:` can choose among (empty: fixed metrics, the `metrics:` key is refused).
        default_metrics: the metrics reported when `metrics:` is not set.
        inference: the command that runs its trained models (predict, generate), or None.
        prepare_data: the task module's function `(cfg, checkpoint) -> (tokenizer, splits)`: data loaded and tokenized.
        load_data: the task module's function `(cfg) -> splits`: the rows `prepare_data` tokenizes (`llmtune validate --stats`).
        collator: the task module's function `(cfg, model, tokenizer, splits) -> (collator, run-time training defaults)`;
            the run-time defaults (those that depend on the loaded model) are only set where `training:` leaves them.
        trainer_class: the Trainer class that trains it, as "module:Class" (transformers.Trainer or a subclass).
        arguments_class: the TrainingArguments class its Trainer takes, as "module:Class".
        training_defaults: TrainingArguments values the task needs, under the user's `training:` and over the machine's
            defaults; `load_config` builds the run's TrainingArguments with them, so a conflict fails validation.
        peft_task_type: the `peft.TaskType` name a LoRA run (`peft:`) wraps its model with (SEQ_CLS, CAUSAL_LM,
            SEQ_2_SEQ_LM), which picks peft's PeftModel class; None = a plain PeftModel (no peft task type fits).
    """

    name: str
    command: str
    schema: str
    module: str
    auto_class: str
    head_mapping: str
    architectures: tuple[str, ...]
    words: str
    eval_kind: str
    pipeline_tag: str
    metrics: tuple[str, ...]
    default_metrics: tuple[str, ...]
    inference: str | None
    prepare_data: str
    collator: str
    load_data: str
    trainer_class: str
    training_defaults: tuple[tuple[str, Any], ...] = ()
    arguments_class: str = "transformers:TrainingArguments"
    peft_task_type: str | None = None

    def load(self) -> Any:
        """The task module (imported now)."""
        return import_module(self.module)

    def function(self, role: str) -> Any:
        """The task module's function for `role` ("prepare_data" or "collator")."""
        return getattr(self.load(), getattr(self, role))

    def trainer(self) -> Any:
        """The Trainer class (imports transformers)."""
        module, _, name = self.trainer_class.partition(":")
        return getattr(import_module(module), name)

    def arguments(self) -> Any:
        """The TrainingArguments class (imports transformers)."""
        module, _, name = self.arguments_class.partition(":")
        return getattr(import_module(module), name)

    def model_class(self) -> Any:
        """The `AutoModelFor...` class (imports transformers)."""
        import transformers

        return getattr(transformers, self.auto_class)

    def model_types(self) -> Any:
        """The model types transformers can build `auto_class` for (a mapping keyed by model_type)."""
        from transformers.models.auto import modeling_auto

        return getattr(modeling_auto, self.head_mapping)

    @property
    def trained_by(self) -> str:
        """How a user trains such a model, for messages: `llmtune finetune with task: causal-lm`."""
        return f"llmtune {self.command}" + (f" with task: {self.name}" if self.command == "finetune" else "")


TASKS: tuple[Task, ...] = (
    Task(
        name="classification",
        command="finetune",
        schema="FinetuneConfig",
        module="llmtune.tasks.classification",
        auto_class="AutoModelForSequenceClassification",
        head_mapping="MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
        architectures=("ForSequenceClassification",),
        words="a sequence classifier",
        eval_kind="classification",
        pipeline_tag="text-classification",
        metrics=("accuracy", "f1", "precision", "recall"),
        default_metrics=("accuracy", "f1"),
        inference="predict",
        prepare_data="prepare_data",
        collator="collator",
        load_data="load_data",
        trainer_class="llmtune.batching:LengthGroupedTrainer",
        # Rows of similar length share a batch: less padding (llmtune.batching.LengthGroupedTrainer).
        training_defaults=(("train_sampling_strategy", "group_by_length"),),
        peft_task_type="SEQ_CLS",
    ),
    Task(
        name="causal-lm",
        command="finetune",
        schema="FinetuneConfig",
        module="llmtune.tasks.causal_lm",
        auto_class="AutoModelForCausalLM",
        head_mapping="MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        # GPT-2 saves as GPT2LMHeadModel.
        architectures=("ForCausalLM", "LMHeadModel"),
        words="a causal language model",
        eval_kind="causal-lm",
        pipeline_tag="text-generation",
        metrics=(),
        default_metrics=(),
        inference="generate",
        prepare_data="prepare_data",
        collator="batching",
        load_data="load_texts",
        # Groups by length only in the padded fallback (see llmtune.tasks.causal_lm.batching), seeded and resumable.
        trainer_class="llmtune.batching:LengthGroupedTrainer",
        peft_task_type="CAUSAL_LM",
    ),
    Task(
        name="masked-lm",
        command="pretrain-mlm",
        schema="PretrainMLMConfig",
        module="llmtune.tasks.pretrain_mlm",
        auto_class="AutoModelForMaskedLM",
        head_mapping="MODEL_FOR_MASKED_LM_MAPPING_NAMES",
        architectures=("ForMaskedLM",),
        words="a masked language model",
        eval_kind="masked-lm",
        pipeline_tag="fill-mask",
        metrics=(),
        default_metrics=(),
        inference=None,
        prepare_data="prepare_data",
        collator="collator",
        load_data="load_texts",
        trainer_class="transformers:Trainer",
        # The masking collator reads offset_mapping / special_tokens_mask, which Trainer would drop.
        training_defaults=(("remove_unused_columns", False),),
        # peft has no masked-LM task type; the plain PeftModel passes every input through to the model.
        peft_task_type=None,
    ),
    Task(
        name="seq2seq",
        command="finetune",
        schema="FinetuneConfig",
        module="llmtune.tasks.seq2seq",
        auto_class="AutoModelForSeq2SeqLM",
        head_mapping="MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
        # T5ForConditionalGeneration, BartForConditionalGeneration, MarianMTModel.
        architectures=("ForConditionalGeneration", "MTModel"),
        words="a sequence-to-sequence model",
        eval_kind="seq2seq",
        # The Hub's tag for encoder-decoder text models (transformers 5 has no such pipeline; model card metadata only).
        pipeline_tag="text2text-generation",
        metrics=("bleu", "chrf", "rouge"),
        default_metrics=("bleu", "chrf"),
        inference="generate",
        prepare_data="prepare_data",
        collator="collator",
        load_data="load_pairs",
        # Seq2SeqTrainer with llmtune's seeded length grouping; evaluation generates (predict_with_generate).
        trainer_class="llmtune.batching:Seq2SeqLengthGroupedTrainer",
        training_defaults=(("train_sampling_strategy", "group_by_length"), ("predict_with_generate", True)),
        arguments_class="transformers:Seq2SeqTrainingArguments",
        peft_task_type="SEQ_2_SEQ_LM",
    ),
)


@dataclass(frozen=True)
class Evaluation:
    """One kind of `llmtune evaluate`.

    Attributes:
        kind: the `eval.kind` value.
        module: the evaluation module, with `metric_names(model_config) -> list[str]` and `evaluate(ctx) -> dict`;
            a kind that accepts metrics also takes `metric_names(model_config, metrics)` (only those chosen).
        model_task: the task whose models it scores (its architecture check and its `AutoModelFor...` class).
        automatic: picked from a model's architecture under `eval.kind: auto`.
        metrics: the metrics evaluate's `metrics:` can choose among for this kind; None = those of `model_task`
            (empty: fixed metrics, `metrics:` is refused).
    """

    kind: str
    module: str
    model_task: str
    automatic: bool = True
    metrics: tuple[str, ...] | None = None

    @property
    def accepted_metrics(self) -> tuple[str, ...]:
        """The metrics `metrics:` may name for this kind (its own, else its model task's)."""
        return self.metrics if self.metrics is not None else task(self.model_task).metrics

    def load(self) -> Any:
        """The evaluation module (imported now)."""
        return import_module(self.module)


EVALUATIONS: tuple[Evaluation, ...] = (
    Evaluation("classification", "llmtune.evaluation.classification", "classification"),
    Evaluation("causal-lm", "llmtune.evaluation.causal_lm", "causal-lm"),
    Evaluation("masked-lm", "llmtune.evaluation.masked_lm", "masked-lm"),
    # BLEU/chrF/ROUGE of a causal (or encoder-decoder) LM's completions of data.prompt_column against
    # data.reference_column: needs references, so it is never chosen from the architecture.
    Evaluation("generation", "llmtune.evaluation.generation", "causal-lm", automatic=False, metrics=("bleu", "chrf", "rouge")),
    # The same scores for a seq2seq model, on data read as task: seq2seq trains (source/target columns or file pairs).
    Evaluation("seq2seq", "llmtune.evaluation.seq2seq", "seq2seq"),
)


def task(name: str) -> Task:
    """The task called `name` (a `task:` value or the evaluation kind of a trained model).

    Raises:
        KeyError: no such task.
    """
    for row in TASKS:
        if row.name == name:
            return row
    raise KeyError(name)


def evaluation(kind: str) -> Evaluation:
    """The evaluation kind called `kind`.

    Raises:
        KeyError: no such kind.
    """
    for row in EVALUATIONS:
        if row.kind == kind:
            return row
    raise KeyError(kind)


def task_names(command: str | None = None) -> tuple[str, ...]:
    """The names of the tasks (those `command` trains, when given), in registry order."""
    return tuple(row.name for row in TASKS if command is None or row.command == command)


def eval_kinds() -> tuple[str, ...]:
    """The `eval.kind` values other than auto, in registry order."""
    return tuple(row.kind for row in EVALUATIONS)


def evaluation_metrics() -> tuple[str, ...]:
    """Every metric evaluate's `metrics:` can name, over all kinds, in registry order."""
    return tuple(dict.fromkeys(name for row in EVALUATIONS for name in row.accepted_metrics))


def training_commands() -> tuple[str, ...]:
    """The commands that train a model (finetune, pretrain-mlm), in registry order."""
    return tuple(dict.fromkeys(row.command for row in TASKS))


def task_of(command: str, cfg: Any = None) -> Task:
    """The task a training command's config runs: `cfg.task` for finetune, the command's only task otherwise.

    Raises:
        KeyError: `command` trains no task.
    """
    rows = [row for row in TASKS if row.command == command]
    if len(rows) == 1:
        return rows[0]
    name = getattr(cfg, "task", None)
    for row in rows:
        if row.name == name:
            return row
    raise KeyError(f"{command}: {name}")


def task_for_config(cfg: Any) -> Task:
    """The task a validated training config runs, from its schema class (and `task:` where the command has several).

    Raises:
        KeyError: `cfg` is not a training config.
    """
    command = next(row.command for row in TASKS if row.schema == type(cfg).__name__)
    return task_of(command, cfg)


def by_architecture(config: Any) -> Task | None:
    """The task of a saved model, from its config's `architectures` (e.g. BertForSequenceClassification -> classification)."""
    for architecture in getattr(config, "architectures", None) or []:
        for row in TASKS:
            if architecture.endswith(row.architectures):
                return row
    return None


def by_inference(command: str) -> Task:
    """The task whose trained models `command` (predict, generate) runs."""
    return next(row for row in TASKS if row.inference == command)
