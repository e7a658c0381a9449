"""Loading and building models and tokenizers, with one clear message when a Hub id cannot be reached."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
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
    """Call `cls.from_pretrained(name, **kwargs)`, turning 'not found / offline' into a UserError naming `key`.

    A model class asked for a LoRA adapter dir (`is_adapter_dir`) gets the merged model of `load_adapter_model`,
    so every command that loads a model through here (evaluate, predict, generate) takes an adapter dir as it
    takes a full model dir; a config or tokenizer is read from the adapter dir's own files as from any folder.
    """
    if is_adapter_dir(name) and _is_model_class(cls):
        return load_adapter_model(cls, name, key=key, **kwargs)
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise _unreachable(key, name, exc) from exc



ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """Whether `path` is a local folder holding a PEFT adapter (an `adapter_config.json`), as a LoRA run's output_dir does."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def _is_model_class(cls: Any) -> bool:
    """Whether `cls` loads model weights: a PreTrainedModel subclass or an `AutoModel...` factory (not a config or tokenizer)."""
    from transformers import PreTrainedModel

    # The AutoModel... factories are no PreTrainedModel subclasses; they are the auto classes with a model mapping.
    return isinstance(cls, type) and (issubclass(cls, PreTrainedModel) or hasattr(cls, "_model_mapping"))


def _adapter_config(path: Path, key: str) -> dict[str, Any]:
    """The adapter dir's adapter_config.json as a mapping, or a UserError naming `key`, the file, the problem and the fix."""
    import json

    file = path / ADAPTER_CONFIG
    remedy = "Save the adapter again with peft's save_pretrained, or load the run's merged/ folder instead."
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{key}: {file}: not UTF-8 text (byte {exc.start}). {remedy}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{key}: {file}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). {remedy}") from exc
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    if not isinstance(base, str) or not base:
        raise UserError(f"{key}: {file}: no base_model_name_or_path, so the base model the adapter applies to is unknown. {remedy}")
    return data


def _missing_local_base(base: str) -> bool:
    """Whether `base` names a local folder (absolute, ./, ../ or ~ path: not a Hub id) that is not there."""
    looks_local = base.startswith(("/", "./", "../", "~")) or Path(base).is_absolute()
    return looks_local and not Path(base).expanduser().is_dir()


def load_adapter_model(auto_cls: Any, path: str | Path, key: str = "model.name_or_path", **kwargs: Any) -> Any:
    """Load a LoRA adapter dir as one plain model: the base model with the adapter merged into its weights.

    The base is the one adapter_config.json names (base_model_name_or_path: a Hub id or a local path; the
    revision peft recorded for it), built with the adapter dir's config.json when there is one, so a
    classifier keeps its labels and head size (a base head of another size is dropped: peft restores the
    trained head from the adapter's modules_to_save). Then `PeftModel.from_pretrained` applies the adapter
    and `merge_and_unload` folds it into the base weights: inference then runs at the speed of the plain
    model, with no LoRA matmuls per layer. transformers' own PEFT hook in `from_pretrained` is not used: it
    takes a folder with config.json for a full model and looks there for weights an adapter dir does not have.

    peft is imported only here, so it is needed only to load an adapter dir.

    Args:
        auto_cls: the `AutoModelFor...` class of the task (the base is loaded with it).
        path: the adapter dir.
        key: the config key or option that named `path`, for messages.
        kwargs: `from_pretrained` options for the base (trust_remote_code...). `revision` is dropped: it
            would name a revision of the adapter dir, which is a local folder.

    Returns:
        The merged model (a plain transformers model, no peft wrapper).

    Raises:
        UserError: peft is not installed, adapter_config.json is unreadable, the base model cannot be loaded,
            the adapter does not fit it, or the base lacks weights (e.g. a new head) the adapter does not hold.
    """
    from transformers import AutoConfig

    folder = Path(path).expanduser()
    adapter = _adapter_config(folder, key)
    base = adapter["base_model_name_or_path"]
    try:
        from peft import PeftModel, load_peft_weights
    except ImportError as exc:
        raise UserError(
            f"{key}: {path} is a LoRA adapter dir ({ADAPTER_CONFIG}); loading it needs peft: pip install peft "
            "(or load the run's merged/ folder, which needs no peft)."
        ) from exc
    if _missing_local_base(base):
        raise UserError(
            f"{key}: {path} is a LoRA adapter dir whose base model {base} (base_model_name_or_path in {folder / ADAPTER_CONFIG}) "
            "does not exist. Put the base model back at that path, or load the run's merged/ folder, which holds the whole model."
        )
    kwargs.pop("revision", None)
    options = {"revision": adapter.get("revision"), **kwargs}
    if (folder / "config.json").is_file():
        options["config"] = from_pretrained(AutoConfig, key, str(folder), trust_remote_code=kwargs.get("trust_remote_code", False))
        options["ignore_mismatched_sizes"] = True
    try:
        model, info = auto_cls.from_pretrained(base, output_loading_info=True, **options)
    except (OSError, ValueError) as exc:
        cause = _unreachable(f"{folder / ADAPTER_CONFIG}: base_model_name_or_path", base, exc)
        raise UserError(f"{key}: {path} is a LoRA adapter dir; its base model cannot be loaded: {cause} Or load the run's merged/ folder.") from exc
    try:
        adapted = PeftModel.from_pretrained(model, str(folder))
        restored = set(load_peft_weights(str(folder)))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        # KeyError: peft found no weight for a module the adapter config names (a damaged adapter_model file).
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{key}: cannot apply the LoRA adapter in {path} to its base model {base}: {detail}") from exc
    # Weights the base lacks (a new head) or has in another shape are drawn at random by from_pretrained;
    # only the adapter's own copies (modules_to_save) make them the trained ones. Any left random would
    # give different answers on every load, so that is refused.
    unrestored = sorted(k for k in info["missing_keys"] | {m[0] for m in info["mismatched_keys"]} if f"base_model.model.{k}" not in restored)
    if unrestored:
        shown = ", ".join(unrestored[:4]) + (f" and {len(unrestored) - 4} more" if len(unrestored) > 4 else "")
        raise UserError(
            f"{key}: {path} is a LoRA adapter dir whose base model {base} lacks weights the adapter does not hold either "
            f"({shown}): they would be random. Load the run's merged/ folder, which holds every weight."
        )
    merged = adapted.merge_and_unload()
    # The merged model answers to the adapter dir, as a model loaded from a folder answers to that folder.
    merged.name_or_path = merged.config.name_or_path = str(path)
    return merged


# tokenizers' default for BertWordPieceTokenizer: at most this many distinct characters start the vocabulary.
WORDPIECE_ALPHABET_LIMIT = 1000
WORDPIECE_PREFIX = "##"


def _text_batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_words(texts: Iterable[str], normalizer: Any, pre_tokenizer: Any) -> Counter[str]:
    """Count the words the WordPiece trainer would see: each text normalized and pre-tokenized as BERT does."""
    words: Counter[str] = Counter()
    for text in texts:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return words


def wordpiece_alphabet(words: Counter[str], limit: int = WORDPIECE_ALPHABET_LIMIT) -> tuple[list[str], list[str]]:
    """The characters a WordPiece vocabulary starts from, and their word-inner pieces ("##c"), in a fixed order.

    tokenizers' WordPiece trainer (its BPE trainer with a "##" prefix) gives each "##c" piece the next
    id in the iteration order of a Rust HashMap of words, which is seeded at random in every process;
    ties between equally frequent merges are broken by those ids, so the same text gave a different
    vocabulary in each process. It also breaks ties at the alphabet limit in that random order. Both
    orders are fixed here: the alphabet is the `limit` most frequent characters (ties by code point),
    and every piece is numbered up front, sorted, so no id depends on a hash order.

    Args:
        words: word counts from `_count_words`.
        limit: keep at most this many distinct characters (rarer ones become [UNK]).

    Returns:
        (alphabet, pieces): the kept characters, and "##c" for each kept character seen inside a word.
    """
    chars: Counter[str] = Counter()
    inner: set[str] = set()
    for word, count in words.items():
        for char in word:
            chars[char] += count
        inner.update(word[1:])
    alphabet = sorted(sorted(chars, key=lambda c: (-chars[c], c))[:limit])
    kept = set(alphabet)
    return alphabet, [WORDPIECE_PREFIX + c for c in sorted(inner & kept)]


def _tokenizer_progress() -> bool:
    """The Rust trainer's progress bars (and the blank lines it prints even without them) show only under -v."""
    from llmtune.terminal import verbose

    return verbose()


def _train_wordpiece(spec: TokenizerTrainSection, texts: Iterable[str]) -> Any:
    """Train a BERT WordPiece tokenizer whose vocabulary is the same in every process (see `wordpiece_alphabet`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from tokenizers.implementations import BertWordPieceTokenizer

    bert = BertWordPieceTokenizer(lowercase=spec.lowercase)
    words = _count_words(texts, bert.normalizer, bert.pre_tokenizer)
    alphabet, pieces = wordpiece_alphabet(words)
    trainer = trainers.WordPieceTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        # The pieces go in as "special" tokens only because the trainer numbers those first; the
        # tokenizer is rebuilt from the vocabulary below, where only the real specials are special.
        special_tokens=list(WORDPIECE_SPECIALS.values()) + pieces,
        # The kept alphabet is given whole and the limit set to its size, so the trainer drops exactly the rest.
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        continuing_subword_prefix=WORDPIECE_PREFIX,
        show_progress=_tokenizer_progress(),
    )
    # The words are already normalized and split: train on them as counted (whitespace never occurs
    # inside one), which also reads the text only once.
    counter = Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIALS["unk_token"]))
    counter.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    counter.train_from_iterator(_text_batches(_repeated(words)), trainer=trainer)
    return BertWordPieceTokenizer(counter.get_vocab(with_added_tokens=False), lowercase=spec.lowercase, wordpieces_prefix=WORDPIECE_PREFIX)


def _repeated(words: Counter[str], chunk: int = 10_000) -> Iterator[str]:
    """Each word as often as it was counted, a chunk of repetitions per string, in a fixed order."""
    for word in sorted(words):
        count = words[word]
        while count > 0:
            n = min(count, chunk)
            yield " ".join([word] * n)
            count -= n


def train_tokenizer(spec: TokenizerTrainSection, texts: Iterable[str], max_length: int, cache_key: str | None = None) -> Any:
    """Train a tokenizer from scratch with Hugging Face `tokenizers` and wrap it for transformers.

    The same text and settings give byte-identical tokenizer files in every process, which is what makes
    the cache (`llmtune.cache`) safe: with a `cache_key`, a tokenizer trained before under that key is
    loaded instead, and `texts` is not read at all.

    Args:
        spec: `tokenizer.train` (wordpiece for BERT-style models, byte-level bpe for GPT-2-style ones).
        texts: the training text (read once).
        max_length: saved as the tokenizer's model_max_length.
        cache_key: `llmtune.cache.tokenizer_key` of the run; None = train without the cache.

    Returns:
        A `PreTrainedTokenizerFast` that `save_pretrained` / `AutoTokenizer.from_pretrained` round-trip.
    """
    from transformers import PreTrainedTokenizerFast

    from llmtune import cache

    backend = cache.load_tokenizer_backend(cache_key) if cache_key else None
    if backend is None:
        backend = _train_backend(spec, texts)
        if cache_key:
            cache.store_tokenizer_backend(cache_key, backend)
    specials = WORDPIECE_SPECIALS if spec.type == "wordpiece" else {"bos_token": BPE_SPECIAL, "eos_token": BPE_SPECIAL, "unk_token": BPE_SPECIAL}
    # The wrapper is built the same way for a trained and a cached backend, so both save the same files.
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=max_length, **specials)


def _train_backend(spec: TokenizerTrainSection, texts: Iterable[str]) -> Any:
    """The trained `tokenizers.Tokenizer` (what the cache stores)."""
    from tokenizers import ByteLevelBPETokenizer

    if spec.type == "wordpiece":
        # Built from a vocabulary, BertWordPieceTokenizer adds the [CLS] ... [SEP] post-processor that a
        # BERT-style model needs (pooler/classifier on [CLS], document boundaries when packing).
        return _train_wordpiece(spec, texts)._tokenizer
    # Byte-level BPE needs no fix: every symbol comes from the fixed 256-byte alphabet, numbered in order.
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(
        _text_batches(texts), vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=[BPE_SPECIAL],
        show_progress=_tokenizer_progress(),
    )
    return tok._tokenizer


@contextmanager
def settings_kept(tokenizer: Any) -> Iterator[None]:
    """Undo what encoding leaves in a fast tokenizer: its backend's truncation and padding settings.

    Calling a fast tokenizer with `truncation=True, max_length=N` stores that truncation in its
    backend, and `save_pretrained` writes it into tokenizer.json. Whether it was called depends on
    the datasets cache (a cached `map` never calls it), so without this two identical runs could save
    different tokenizer files.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        yield
        return
    truncation, padding = backend.truncation, backend.padding
    try:
        yield
    finally:
        if truncation is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**truncation)
        if padding is None:
            backend.no_padding()
        else:
            backend.enable_padding(**padding)


def load_tokenizer(
    model: ModelSection, tokenizer: TokenizerSection, texts: Iterable[str] | None, max_length: int | None = None, cache_key: str | None = None
) -> Any:
    """The tokenizer a run uses: trained from scratch, named in `tokenizer:`, or the model's own.

    `texts`, `max_length` and `cache_key` (see `train_tokenizer`) matter only when `tokenizer.train` is set
    (commands that do not train pass None).
    """
    from transformers import AutoTokenizer

    if tokenizer.train is not None:
        if texts is None:
            raise UserError("tokenizer.train needs training text; this command has none.")
        return train_tokenizer(tokenizer.train, texts, max_length, cache_key)
    if tokenizer.name_or_path is not None:
        return from_pretrained(AutoTokenizer, "tokenizer.name_or_path", tokenizer.name_or_path, revision=None)
    return from_pretrained(
        AutoTokenizer, "model.name_or_path", model.name_or_path, revision=model.revision, trust_remote_code=model.trust_remote_code
    )


def meta_model(auto_cls: Any, config: Any, trust_remote_code: bool = False) -> Any:
    """The model `auto_cls` builds from `config` on PyTorch's meta device: its modules and parameter shapes, no memory, no weights read.

    `llmtune validate` inspects it (peft.target_modules, `--stats` parameter counts) as the run will build the model.
    """
    import torch

    with torch.device("meta"):
        return auto_cls.from_config(config, trust_remote_code=trust_remote_code)


def new_model_config(model: ModelSection, tokenizer: Any, **config_kwargs: Any) -> Any:
    """The config of the random-init model `model.from_config` builds: its fields, sized to the tokenizer, with its special ids.

    Raises:
        UserError: the config cannot be built, or has fewer embedding rows than the tokenizer has tokens.
    """
    from transformers import AutoConfig

    special_ids = {
        f"{name}_id": getattr(tokenizer, f"{name}_id", None) for name in ("pad_token", "bos_token", "eos_token")
    }
    special_ids = {k: v for k, v in special_ids.items() if v is not None}
    fields = dict(model.from_config)
    model_type = fields.pop("model_type")
    fields.setdefault("vocab_size", len(tokenizer))
    if fields["vocab_size"] < len(tokenizer):
        raise UserError(
            f"model.from_config.vocab_size: {fields['vocab_size']} embedding rows, but the tokenizer has {len(tokenizer)} "
            "tokens. Remove model.from_config.vocab_size (it then follows the tokenizer) or raise it."
        )
    try:
        return AutoConfig.for_model(model_type, **{**special_ids, **fields, **config_kwargs})
    except (ValueError, KeyError) as exc:
        raise UserError(f"model.from_config: {exc}") from exc


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
    if model.from_config is not None:
        return _with_loss_type(auto_cls, auto_cls.from_config(new_model_config(model, tokenizer, **config_kwargs)))
    loaded = from_pretrained(
        auto_cls,
        "model.name_or_path",
        model.name_or_path,
        revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        **config_kwargs,
    )
    if needs_more_rows(model, tokenizer, loaded.get_input_embeddings().num_embeddings):
        loaded.resize_token_embeddings(len(tokenizer))
    return _with_loss_type(auto_cls, loaded)


def needs_more_rows(model: ModelSection, tokenizer: Any, rows: int) -> bool:
    """Whether the pretrained `model`, with `rows` embedding rows, is to grow to the tokenizer's size (model.resize_embeddings).

    Raises:
        UserError: the tokenizer has more tokens than the model has rows, and resizing was not asked for.
    """
    if len(tokenizer) <= rows:
        return False
    # The config-time check (llmtune.config.model_checks) only sees a trained tokenizer's target size;
    # this is the actual one. Growing the matrix silently would leave ids without trained rows.
    if not model.resize_embeddings:
        raise UserError(
            f"tokenizer: {len(tokenizer)} tokens, but '{model.name_or_path}' has {rows} embedding rows: ids past "
            f"{rows - 1} have no trained embedding. Use the model's own tokenizer, or set model.resize_embeddings: true "
            "(training only) to add randomly initialised rows on purpose."
        )
    return True


def _with_loss_type(auto_cls: Any, model: Any) -> Any:
    """Name the causal-LM loss of a model whose class name does not (GPT2LMHeadModel), as transformers then
    picks it anyway, so that it does not warn "`loss_type=None` was set in the config but it is unrecognized"."""
    if getattr(auto_cls, "__name__", "") == "AutoModelForCausalLM" and getattr(model, "loss_type", "") is None:
        model.loss_type = "ForCausalLM"
    return model


def load_for_inference(auto_cls: Any, model: ModelSection, tokenizer: TokenizerSection) -> tuple[Any, Any]:
    """Load a trained model and its tokenizer for inference: on `device()`, in eval mode.

    Returns:
        (model, tokenizer).
    """
    loaded_tokenizer = load_tokenizer(model, tokenizer, None)
    return load_model(auto_cls, model, loaded_tokenizer).to(device()).eval(), loaded_tokenizer


def is_seq2seq_lm(config: Any) -> bool:
    """Whether a model config is an encoder-decoder language model (T5, BART, Marian...), loaded with AutoModelForSeq2SeqLM.

    Its `architectures` decide when the config names them (a BART classifier is encoder-decoder too, but has
    no language-model head); a config without them goes by `is_encoder_decoder` and its model type.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    architectures = getattr(config, "architectures", None) or []
    if architectures:
        heads = set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values())
        return any(architecture in heads for architecture in architectures)
    return bool(getattr(config, "is_encoder_decoder", False)) and config.model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES


# Architecture name endings -> the kind of model, for `llmtune evaluate` (eval.kind: auto) and `predict`.
def architecture_kind(config: Any) -> str | None:
    """The kind of a saved model from its config's `architectures` (e.g. BertForSequenceClassification -> classification).

    The endings come from the task registry (`llmtune.tasks.registry.TASKS`).
    """
    from llmtune.tasks import registry

    found = registry.by_architecture(config)
    return found.eval_kind if found is not None else None


def device() -> Any:
    """Where inference runs: the accelerator when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def training_device_type(training: dict[str, Any]) -> str:
    """The kind of device a run with this `training:` mapping trains on: "cuda", "mps", "xpu", ... or "cpu".

    As Trainer decides: the accelerator torch finds, unless `use_cpu` is set.
    """
    import torch

    if training.get("use_cpu") or not torch.accelerator.is_available():
        return "cpu"
    return torch.accelerator.current_accelerator().type


def pad_multiple(device_type: str, setting: int | str | None = "auto") -> int | None:
    """What to round a padded batch length up to on this kind of device (None: no rounding).

    On CUDA, matrix multiplies whose dimensions are multiples of 8 run on tensor cores (fp16/bf16/TF32), so
    a few padding positions buy faster kernels. A CPU gains nothing from them: each one is only extra work.
    Other accelerators are left unrounded until measured.

    Args:
        device_type: "cuda", "cpu", ... (`training_device_type`, or `device().type` for inference).
        setting: a config's value: "auto" (the rule above), a number (kept), or None (no rounding).
    """
    if setting != "auto":
        return setting
    return 8 if device_type == "cuda" else None


# The environment variables launchers set to the number of processes (torchrun, `accelerate launch`, mpirun),
# the ones accelerate's PartialState reads to decide on multi-CPU training.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launch_world_size() -> int:
    """The number of processes the launcher started (1 without a launcher), read before torch.distributed starts."""
    import os

    sizes = [os.environ.get(name) or "1" for name in WORLD_SIZE_VARIABLES]
    return max(int(size) if size.isdigit() else 1 for size in sizes)


# The variables launchers set to this process's global rank, in the order accelerate reads them (utils.environment).
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def launch_rank() -> int:
    """This process's rank as the launcher set it (0 without a launcher), read without starting torch.distributed."""
    import os

    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0

def launched_on_cpus() -> bool:
    """Whether several processes were launched (torchrun, accelerate launch, mpirun) on a machine with no GPU.

    There, accelerate's PartialState with `cpu=False` finds no device backend (CUDA, XPU, NPU, ...) and says
    DistributedType.NO, so Trainer neither wraps the model in DDP nor shards the data: every process trains
    its own copy into the same directory. With `cpu=True` it runs multi-CPU DDP over gloo; Trainer passes
    `cpu=True` when `training.use_cpu` is set (or ACCELERATE_USE_CPU, which `accelerate launch --cpu` sets).
    """
    import torch

    if launch_world_size() <= 1:
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
    return cpu and launch_world_size() <= 1 and "MASTER_ADDR" in os.environ


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
