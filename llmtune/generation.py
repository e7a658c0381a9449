"""Batched text generation: the core of `llmtune generate`, free of any CLI or file I/O.

`generate_texts` takes prompts and returns, per prompt, its completions with token counts, so other
commands (e.g. scoring generations against references) can reuse it as is; `iter_generations` does the
same lazily, yielding each prompt's completions as soon as they and the earlier prompts' are ready.

Two kinds of model generate: a causal LM continues its prompt (the completion is the text after it),
and an encoder-decoder model (T5, BART, Marian) reads the prompt with its encoder and writes a new
text with its decoder (the completion is that whole decoded text). `load_generation_model` picks the
Auto class from the model's config, and the functions here follow `model.config.is_encoder_decoder`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from llmtune.errors import UserError
from llmtune.modeling import is_seq2seq_lm, load_for_inference, model_positions
from llmtune.streaming import WINDOW_BATCHES, in_input_order, windows

if TYPE_CHECKING:
    from llmtune.config.schema import ModelSection, TokenizerSection

logger = logging.getLogger(__name__)

# Without max_new_tokens or max_length, transformers stops at 20 tokens in total, prompt included.
DEFAULT_MAX_NEW_TOKENS = 64


class PromptTooLong(UserError):
    """A prompt (plus the tokens to generate) does not fit the model's context.

    Attributes:
        index: position of the prompt in the list given to `generate_texts`.
        detail: what is wrong and the fix, without naming the prompt.
    """

    def __init__(self, index: int, detail: str):
        self.index = index
        self.detail = detail
        super().__init__(f"prompt {index + 1} {detail}")


def load_generation_model(model: ModelSection, tokenizer: TokenizerSection) -> tuple[Any, Any]:
    """Load a model that generates text, and its tokenizer, for inference (`llmtune.modeling.load_for_inference`).

    An encoder-decoder language model (T5, BART, Marian: `llmtune.modeling.is_seq2seq_lm` on its config.json)
    is loaded with AutoModelForSeq2SeqLM, anything else with AutoModelForCausalLM.

    Raises:
        UserError: the model or tokenizer cannot be loaded.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(model.name_or_path, revision=model.revision, trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError):
        config = None  # unreachable or unreadable: loading the model below says so, naming model.name_or_path
    auto_cls = AutoModelForSeq2SeqLM if config is not None and is_seq2seq_lm(config) else AutoModelForCausalLM
    return load_for_inference(auto_cls, model, tokenizer)


def generation_config(settings: dict[str, Any], base: Any = None, tokenizer: Any = None) -> Any:
    """The `transformers.GenerationConfig` a command decodes with: `base` (or transformers' defaults), the user's
    `generation:` settings on top, llmtune's max_new_tokens default, strictly validated.

    The config loader calls it without a model (`llmtune.config.validate.check_generation`), the commands with the
    model's own generation config and tokenizer (`build_generation_config`): one recipe, checked before the model loads.

    Args:
        settings: GenerationConfig fields (names already checked).
        base: the model's generation config (copied, not changed); None = GenerationConfig's defaults.
        tokenizer: fills in the EOS and pad ids the config lacks.

    Returns:
        The GenerationConfig.

    Raises:
        ValueError, TypeError: GenerationConfig refuses the combination.
    """
    from transformers import GenerationConfig

    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.update(**settings)
    if "max_new_tokens" not in settings and "max_length" not in settings:
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    if config.max_new_tokens is not None and "max_length" not in settings:
        # max_new_tokens decides; a max_length the model's config carries (BART's 20) would only make
        # generate() warn "Both `max_new_tokens` and `max_length` seem to have been set".
        config.max_length = None
    if tokenizer is not None and config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if tokenizer is not None and config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config.validate(strict=True, user_set_attributes=set(settings))
    return config


def build_generation_config(model: Any, tokenizer: Any, settings: dict[str, Any]) -> Any:
    """The model's own generation config with the user's `generation:` settings on top (`generation_config`).

    Args:
        model: a loaded causal LM.
        tokenizer: its tokenizer (its pad/EOS ids fill in what the model config lacks).
        settings: GenerationConfig fields, already checked by the config loader.

    Returns:
        A validated `transformers.GenerationConfig`.

    Raises:
        UserError: the model's generation config and the settings do not go together.
    """
    try:
        config = generation_config(settings, getattr(model, "generation_config", None), tokenizer)
    except ValueError as exc:
        raise UserError(f"generation: the model's generation config combined with yours is invalid: {exc}") from exc
    if config.max_length is None and getattr(model, "generation_config", None) is not None:
        model.generation_config.max_length = None  # generate() also looks at the model's own (see generation_config)
    return config


def _eos_ids(generation_config: Any) -> set[int]:
    eos = generation_config.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` before the first occurrence of any stop string; say whether one was found."""
    positions = [pos for pos in (text.find(s) for s in stop) if pos >= 0]
    return (text[: min(positions)], True) if positions else (text, False)


def check_prompt(ids: list[int], index: int, generation_config: Any, limit: int | None, encoder_decoder: bool = False) -> None:
    """Refuse a prompt that encodes to nothing or leaves no room for new tokens in the model's context.

    Args:
        ids: the prompt's token ids.
        index: its position in the input (0-based), for the error.
        generation_config: the `GenerationConfig` that will be used (max_new_tokens / max_length).
        limit: the model's context length (`llmtune.modeling.model_positions`), None if unbounded.
        encoder_decoder: the model is an encoder-decoder: the prompt (encoder) and the new tokens (decoder)
            each have `limit` positions of their own, and max_length counts the new tokens only.

    Raises:
        PromptTooLong: naming the prompt's position and the fix.
    """
    new_tokens, max_length = generation_config.max_new_tokens, generation_config.max_length
    if not ids:
        raise PromptTooLong(index, "encodes to no tokens; give it some text.")
    if encoder_decoder:
        if limit is not None and len(ids) > limit:
            raise PromptTooLong(index, f"has {len(ids)} tokens, more than the {limit} positions of the model's encoder. Shorten the prompt.")
        # The decoder reads its start token and all new tokens but the last: max_new_tokens positions.
        if new_tokens is not None and limit is not None and new_tokens > limit:
            raise PromptTooLong(
                index,
                f"cannot be completed: max_new_tokens={new_tokens} is more than the model's {limit} decoder positions. "
                f"Lower generation.max_new_tokens to {limit} or less.",
            )
        return
    if new_tokens is not None and limit is not None and len(ids) + new_tokens > limit:
        raise PromptTooLong(
            index,
            f"has {len(ids)} tokens; with max_new_tokens={new_tokens} that exceeds the model's context "
            f"of {limit} tokens. Shorten the prompt or lower generation.max_new_tokens.",
        )
    if new_tokens is None and max_length is not None and len(ids) >= max_length:
        raise PromptTooLong(index, f"has {len(ids)} tokens, leaving no room under generation.max_length={max_length}; use max_new_tokens.")


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    generation_config: Any,
    batch_size: int = 8,
    stop: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
    streamer: Any = None,
) -> list[list[dict[str, Any]]]:
    """Complete prompts in batches: prompts grouped by length, results in input order.

    Every prompt is checked before the first batch runs, and the whole list is grouped by length (the
    batches `iter_generations` forms within one window). Greedy decoding gives the same text as
    generating one prompt at a time. A causal LM's prompts are padded on the left (generation continues
    from the last position), an encoder-decoder's on the right (its encoder reads them as in training).

    Args:
        model: a causal LM or an encoder-decoder LM (already on its device, in eval mode).
        tokenizer: its tokenizer; a missing pad token falls back to EOS.
        prompts: the texts to complete.
        generation_config: a `transformers.GenerationConfig` (see `build_generation_config`).
        batch_size: prompts per forward pass.
        stop: strings that end a completion; the text from the first one on is dropped.
        progress: called with the number of prompts done after each batch.
        streamer: a transformers streamer (only for one prompt and one returned sequence).

    Returns:
        For each prompt, in input order, one dict per returned sequence: `completion` (the new text
        only: a causal LM's text after the prompt, an encoder-decoder's decoded output), `prompt_tokens`,
        `completion_tokens` (tokens generated, up to EOS or through the stop string) and `finish_reason`
        (`stop`: EOS or a stop string; `length`: the token limit, also when the model's
        `forced_eos_token_id` put EOS in the last allowed place).

    Raises:
        PromptTooLong: a prompt plus max_new_tokens does not fit the model's context.
    """
    return list(iter_generations(model, tokenizer, prompts, generation_config, batch_size, stop, progress, streamer, window=None))


def iter_generations(
    model: Any,
    tokenizer: Any,
    prompts: Iterable[str],
    generation_config: Any,
    batch_size: int = 8,
    stop: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
    streamer: Any = None,
    window: int | None = WINDOW_BATCHES,
) -> Iterator[list[dict[str, Any]]]:
    """Complete prompts as `generate_texts` does, yielding each prompt's completions as soon as they are ready.

    Prompts are read from `prompts` a window of `window` batches at a time, checked, grouped by length
    within the window and generated; a prompt's completions are yielded once it and every earlier
    prompt are done (`llmtune.streaming.in_input_order`), so the first comes after one batch.

    Args:
        model, tokenizer, generation_config, batch_size, stop, progress, streamer: as for `generate_texts`.
        prompts: the texts to complete; pulled lazily, one window at a time.
        window: batches per window; None reads and groups every prompt before the first batch.

    Yields:
        For each prompt, in input order, the list `generate_texts` returns for it.

    Raises:
        PromptTooLong: a prompt of the window about to run does not fit (earlier windows were yielded).
    """
    import torch

    stop = list(stop or [])
    limit = model_positions(model.config)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if stop and not generation_config.stop_strings:
        # Let generate stop as soon as a stop string appears instead of running on to max_new_tokens.
        generation_config = copy.deepcopy(generation_config)
        generation_config.stop_strings = stop
    # Sequences that finished early are filled with pad tokens (often = EOS) up to the batch's longest.
    ends = _eos_ids(generation_config) | {generation_config.pad_token_id} - {None}
    forced_eos = generation_config.forced_eos_token_id
    forced_eos = set(forced_eos) if isinstance(forced_eos, (list, tuple)) else ({forced_eos} if forced_eos is not None else set())
    per_prompt = max(1, generation_config.num_return_sequences or 1)
    extra = {"tokenizer": tokenizer} if generation_config.stop_strings else {}
    device = next(model.parameters()).device
    done = 0

    def run_batch(batch: list[list[int]]) -> list[list[dict[str, Any]]]:
        nonlocal done
        padded = tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(device)
        with torch.inference_mode():
            output = model.generate(**padded, generation_config=generation_config, streamer=streamer, **extra)
        # A causal LM's output starts with the padded prompts; an encoder-decoder's with the decoder start token.
        width = 1 if encoder_decoder else padded["input_ids"].shape[1]
        allowed = generation_config.max_new_tokens if generation_config.max_new_tokens is not None else generation_config.max_length - width
        results: list[list[dict[str, Any]]] = [[] for _ in batch]
        for row, sequence in enumerate(output.tolist()):
            ids = batch[row // per_prompt]
            generated = sequence[width:]
            ended = next((k for k, tok in enumerate(generated) if tok in ends), None)
            # ForcedEOSTokenLogitsProcessor writes EOS as the last allowed token (BART, Marian): the limit ended it.
            forced = ended is not None and ended == allowed - 1 and generated[ended] in forced_eos
            generated = generated[:ended] if ended is not None else generated
            if encoder_decoder:
                completion = tokenizer.decode(generated, skip_special_tokens=True)
            else:
                prompt_text = tokenizer.decode(ids, skip_special_tokens=True)
                full = tokenizer.decode(ids + generated, skip_special_tokens=True)
                # Decoding prompt and completion together keeps characters split across the boundary whole.
                completion = full[len(prompt_text) :] if full.startswith(prompt_text) else tokenizer.decode(generated, skip_special_tokens=True)
            completion, stopped = cut_at_stop(completion, stop)
            results[row // per_prompt].append(
                {
                    "completion": completion,
                    "prompt_tokens": len(ids),
                    "completion_tokens": len(generated) + forced,  # the forced EOS took the last place
                    "finish_reason": "stop" if stopped or (ended is not None and not forced) else "length",
                }
            )
        done += len(batch)
        if progress is not None:
            progress(done)
        return results

    side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    # A causal LM continues from the last position, so padding goes first; an encoder reads its input from
    # position 0 as in training (learned positions would shift under left padding), so padding goes last.
    tokenizer.padding_side = "right" if encoder_decoder else "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    first = 0
    try:
        for texts in windows(prompts, None if window is None else window * batch_size):
            encoded = [tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]
            for offset, ids in enumerate(encoded):
                check_prompt(ids, first + offset, generation_config, limit, encoder_decoder)
            first += len(texts)
            # Longest first, as before streaming: the same batches, so the same greedy output.
            yield from in_input_order(encoded, run_batch, batch_size, lambda ids: -len(ids))
    finally:
        tokenizer.padding_side = side
        if pad_token is None:
            tokenizer.pad_token = None
