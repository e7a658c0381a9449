"""Loading and building models and tokenizers, with one clear message when a Hub id cannot be reached."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.errors import UserError

if TYPE_CHECKING:
    from llmtune.config.schema import ModelSection, TokenizerSection, TokenizerTrainSection

WORDPIECE_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
BPE_SPECIAL = "<|endoftext|>"


def _unreachable(key: str, name: str, exc: Exception) -> UserError:
    local = Path(name).expanduser()
    if local.exists():
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return UserError(f"{key}: cannot load '{name}': {detail}. Is it a complete Hugging Face model directory (config.json, weights, tokenizer files)?")
    return UserError(
        f"{key}: '{name}' is not a local directory and could not be fetched from the Hugging Face Hub "
        "(offline, e.g. HF_HUB_OFFLINE=1, or no network or unknown id). Download it once while online "
        "(it is then cached), or point to a local model directory."
    )


def from_pretrained(cls: Any, key: str, name: str, **kwargs: Any) -> Any:
    """Call `cls.from_pretrained(name, **kwargs)`, turning 'not found / offline' into a UserError naming `key`."""
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise _unreachable(key, name, exc) from exc


def train_tokenizer(spec: TokenizerTrainSection, texts: Iterable[str], max_length: int) -> Any:
    """Train a tokenizer from scratch with Hugging Face `tokenizers` and wrap it for transformers.

    Args:
        spec: `tokenizer.train` (wordpiece for BERT-style models, byte-level bpe for GPT-2-style ones).
        texts: the training text.
        max_length: saved as the tokenizer's model_max_length.

    Returns:
        A `PreTrainedTokenizerFast` that `save_pretrained` / `AutoTokenizer.from_pretrained` round-trip.
    """
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == 1000:
                yield batch
                batch = []
        if batch:
            yield batch

    if spec.type == "wordpiece":
        tok = BertWordPieceTokenizer(lowercase=spec.lowercase)
        tok.train_from_iterator(
            batches(), vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=list(WORDPIECE_SPECIALS.values())
        )
        specials = WORDPIECE_SPECIALS
        # BertWordPieceTokenizer only adds [CLS] ... [SEP] when built from an existing vocabulary; a
        # BERT-style model needs them (pooler/classifier on [CLS], document boundaries when packing).
        from tokenizers.processors import BertProcessing

        tok._tokenizer.post_processor = BertProcessing(
            (specials["sep_token"], tok.token_to_id(specials["sep_token"])), (specials["cls_token"], tok.token_to_id(specials["cls_token"]))
        )
    else:
        tok = ByteLevelBPETokenizer(add_prefix_space=False)
        tok.train_from_iterator(batches(), vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=[BPE_SPECIAL])
        specials = {"bos_token": BPE_SPECIAL, "eos_token": BPE_SPECIAL, "unk_token": BPE_SPECIAL}
    return PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, model_max_length=max_length, **specials)


def load_tokenizer(model: ModelSection, tokenizer: TokenizerSection, texts: Iterable[str] | None, max_length: int | None = None) -> Any:
    """The tokenizer a run uses: trained from scratch, named in `tokenizer:`, or the model's own.

    `texts` and `max_length` matter only when `tokenizer.train` is set (commands that do not train pass None).
    """
    from transformers import AutoTokenizer

    if tokenizer.train is not None:
        if texts is None:
            raise UserError("tokenizer.train needs training text; this command has none.")
        return train_tokenizer(tokenizer.train, texts, max_length)
    if tokenizer.name_or_path is not None:
        return from_pretrained(AutoTokenizer, "tokenizer.name_or_path", tokenizer.name_or_path, revision=None)
    return from_pretrained(
        AutoTokenizer, "model.name_or_path", model.name_or_path, revision=model.revision, trust_remote_code=model.trust_remote_code
    )


def load_model(auto_cls: Any, model: ModelSection, tokenizer: Any, **config_kwargs: Any) -> Any:
    """Load `model.name_or_path` or build `model.from_config`, sized to the tokenizer.

    A pretrained model's embeddings are resized to a larger tokenizer only when `model.resize_embeddings`
    asks for it (inference configs refuse that key).

    Args:
        auto_cls: e.g. `AutoModelForSequenceClassification`.
        model: the `model:` section.
        tokenizer: the run's tokenizer (its vocabulary size and special ids go into a new model's config).
        config_kwargs: task settings for the config, e.g. num_labels, id2label, label2id.

    Raises:
        UserError: the model cannot be loaded or built, or the tokenizer has more tokens than the embeddings
            have rows (and resizing was not asked for).
    """
    from transformers import AutoConfig

    special_ids = {
        f"{name}_id": getattr(tokenizer, f"{name}_id", None) for name in ("pad_token", "bos_token", "eos_token")
    }
    special_ids = {k: v for k, v in special_ids.items() if v is not None}
    if model.from_config is not None:
        fields = dict(model.from_config)
        model_type = fields.pop("model_type")
        fields.setdefault("vocab_size", len(tokenizer))
        if fields["vocab_size"] < len(tokenizer):
            raise UserError(
                f"model.from_config.vocab_size: {fields['vocab_size']} embedding rows, but the tokenizer has {len(tokenizer)} "
                "tokens. Remove model.from_config.vocab_size (it then follows the tokenizer) or raise it."
            )
        try:
            config = AutoConfig.for_model(model_type, **{**special_ids, **fields, **config_kwargs})
        except (ValueError, KeyError) as exc:
            raise UserError(f"model.from_config: {exc}") from exc
        return auto_cls.from_config(config)
    loaded = from_pretrained(
        auto_cls,
        "model.name_or_path",
        model.name_or_path,
        revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        **config_kwargs,
    )
    rows = loaded.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        # The config-time check (llmtune.config.model_checks) only sees a trained tokenizer's target size;
        # this is the actual one. Growing the matrix silently would leave ids without trained rows.
        if not model.resize_embeddings:
            raise UserError(
                f"tokenizer: {len(tokenizer)} tokens, but '{model.name_or_path}' has {rows} embedding rows: ids past "
                f"{rows - 1} have no trained embedding. Use the model's own tokenizer, or set model.resize_embeddings: true "
                "(training only) to add randomly initialised rows on purpose."
            )
        loaded.resize_token_embeddings(len(tokenizer))
    return loaded


def load_for_inference(auto_cls: Any, model: ModelSection, tokenizer: TokenizerSection) -> tuple[Any, Any]:
    """Load a trained model and its tokenizer for inference: on `device()`, in eval mode.

    Returns:
        (model, tokenizer).
    """
    loaded_tokenizer = load_tokenizer(model, tokenizer, None)
    return load_model(auto_cls, model, loaded_tokenizer).to(device()).eval(), loaded_tokenizer


# Architecture name endings -> the kind of model, for `llmtune evaluate` (eval.kind: auto) and `predict`.
ARCHITECTURE_KINDS = (
    ("ForSequenceClassification", "classification"),
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForMaskedLM", "masked-lm"),
)


def architecture_kind(config: Any) -> str | None:
    """The kind of a saved model from its config's `architectures` (e.g. BertForSequenceClassification -> classification)."""
    for architecture in getattr(config, "architectures", None) or []:
        for ending, kind in ARCHITECTURE_KINDS:
            if architecture.endswith(ending):
                return kind
    return None


def device() -> Any:
    """Where inference runs: the accelerator when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# The environment variables launchers set to the number of processes (torchrun, `accelerate launch`, mpirun),
# the ones accelerate's PartialState reads to decide on multi-CPU training.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_on_cpus() -> bool:
    """Whether several processes were launched (torchrun, accelerate launch, mpirun) on a machine with no GPU.

    There, accelerate's PartialState with `cpu=False` finds no device backend (CUDA, XPU, NPU, ...) and says
    DistributedType.NO, so Trainer neither wraps the model in DDP nor shards the data: every process trains
    its own copy into the same directory. With `cpu=True` it runs multi-CPU DDP over gloo; Trainer passes
    `cpu=True` when `training.use_cpu` is set (or ACCELERATE_USE_CPU, which `accelerate launch --cpu` sets).
    """
    import os

    import torch

    if max(int(os.environ.get(name) or 1) for name in WORLD_SIZE_VARIABLES) <= 1:
        return False
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    # MPS has no multi-process backend in accelerate either: such a launch trains on the CPUs.
    return accelerator is None or accelerator.type == "mps"


def lone_accelerate_cpu_process() -> bool:
    """Whether this is the one process `accelerate launch --cpu --num_processes N` (N > 1) started.

    accelerate 1.x starts CPU jobs with its simple launcher, which runs the script once (several processes
    only through mpirun and `--mpirun_hostfile`); it still sets ACCELERATE_USE_CPU and, for N > 1, MASTER_ADDR.
    """
    import os

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    alone = max(int(os.environ.get(name) or 1) for name in WORLD_SIZE_VARIABLES) <= 1
    return cpu and alone and "MASTER_ADDR" in os.environ


def model_positions(config: Any) -> int | None:
    """How many positions a model can attend to, from its config (None when the config does not say)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def context_length(tokenizer: Any, config: Any, requested: int | None = None) -> int:
    """The longest input the model takes: `requested`, capped by the tokenizer's and the model's limits.

    `config` may be None (before the model is built): then only the tokenizer's limit applies.
    """
    limits = [requested, model_positions(config)]
    # Tokenizers without a limit report a huge sentinel (int(1e30)); only a real one counts.
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    limits.append(tokenizer_max if tokenizer_max and tokenizer_max < 1_000_000 else None)
    known = [limit for limit in limits if limit]
    if not known:
        raise UserError("cannot tell the model's maximum input length; pass it explicitly (--max-length / data.max_length).")
    return min(known)
