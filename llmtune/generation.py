"""Batched text generation with a causal LM: the core of `llmtune generate`, free of any CLI or file I/O.

`generate_texts` takes prompts and returns, per prompt, its completions with token counts, so other
commands (e.g. scoring generations against references) can reuse it as is.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from llmtune.errors import UserError
from llmtune.modeling import model_positions

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


def build_generation_config(model: Any, tokenizer: Any, settings: dict[str, Any]) -> Any:
    """The model's own generation config with the user's `generation:` settings on top.

    Args:
        model: a loaded causal LM.
        tokenizer: its tokenizer (its pad/EOS ids fill in what the model config lacks).
        settings: GenerationConfig fields, already checked by the config loader.

    Returns:
        A validated `transformers.GenerationConfig`.
    """
    from transformers import GenerationConfig

    base = copy.deepcopy(model.generation_config) if getattr(model, "generation_config", None) is not None else GenerationConfig()
    base.update(**settings)
    if "max_new_tokens" not in settings and "max_length" not in settings:
        base.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    if base.eos_token_id is None:
        base.eos_token_id = tokenizer.eos_token_id
    if base.pad_token_id is None:
        base.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        base.validate(strict=True, user_set_attributes=set(settings))
    except ValueError as exc:
        raise UserError(f"generation: the model's generation config combined with yours is invalid: {exc}") from exc
    return base


def _eos_ids(generation_config: Any) -> set[int]:
    eos = generation_config.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` before the first occurrence of any stop string; say whether one was found."""
    positions = [pos for pos in (text.find(s) for s in stop) if pos >= 0]
    return (text[: min(positions)], True) if positions else (text, False)


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    generation_config: Any,
    batch_size: int = 8,
    stop: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    streamer: Any = None,
) -> list[list[dict[str, Any]]]:
    """Complete prompts in batches: left padding, prompts grouped by length, results in input order.

    Greedy decoding gives the same text as generating one prompt at a time.

    Args:
        model: a causal LM (already on its device, in eval mode).
        tokenizer: its tokenizer; a missing pad token falls back to EOS.
        prompts: the texts to complete.
        generation_config: a `transformers.GenerationConfig` (see `build_generation_config`).
        batch_size: prompts per forward pass.
        stop: strings that end a completion; the text from the first one on is dropped.
        progress: called with (prompts done, total) after each batch.
        streamer: a transformers streamer (only for one prompt and one returned sequence).

    Returns:
        For each prompt, in input order, one dict per returned sequence: `completion` (the new text
        only), `prompt_tokens`, `completion_tokens` (tokens generated, up to EOS or through the stop string)
        and `finish_reason` (`stop`: EOS or a stop string; `length`: the token limit).

    Raises:
        PromptTooLong: a prompt plus max_new_tokens does not fit the model's context.
    """
    import torch

    stop = list(stop or [])
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    limit = model_positions(model.config)
    new_tokens, max_length = generation_config.max_new_tokens, generation_config.max_length
    for i, ids in enumerate(encoded):
        if not ids:
            raise PromptTooLong(i, "encodes to no tokens; give it some text.")
        if new_tokens is not None and limit is not None and len(ids) + new_tokens > limit:
            raise PromptTooLong(
                i,
                f"has {len(ids)} tokens; with max_new_tokens={new_tokens} that exceeds the model's context "
                f"of {limit} tokens. Shorten the prompt or lower generation.max_new_tokens.",
            )
        if new_tokens is None and max_length is not None and len(ids) >= max_length:
            raise PromptTooLong(
                i, f"has {len(ids)} tokens, leaving no room under generation.max_length={max_length}; use max_new_tokens."
            )
    if stop and not generation_config.stop_strings:
        # Let generate stop as soon as a stop string appears instead of running on to max_new_tokens.
        generation_config = copy.deepcopy(generation_config)
        generation_config.stop_strings = stop

    side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"  # generation continues from the last position, so padding goes first
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Sequences that finished early are filled with pad tokens (often = EOS) up to the batch's longest.
    ends = _eos_ids(generation_config) | {generation_config.pad_token_id} - {None}
    per_prompt = max(1, generation_config.num_return_sequences or 1)
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    results: list[list[dict[str, Any]]] = [[] for _ in prompts]
    extra = {"tokenizer": tokenizer} if generation_config.stop_strings else {}
    device = next(model.parameters()).device
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt").to(device)
            with torch.inference_mode():
                output = model.generate(**batch, generation_config=generation_config, streamer=streamer, **extra)
            width = batch["input_ids"].shape[1]
            for row, sequence in enumerate(output.tolist()):
                index = chunk[row // per_prompt]
                generated = sequence[width:]
                ended = next((k for k, tok in enumerate(generated) if tok in ends), None)
                generated = generated[:ended] if ended is not None else generated
                prompt_text = tokenizer.decode(encoded[index], skip_special_tokens=True)
                full = tokenizer.decode(encoded[index] + generated, skip_special_tokens=True)
                # Decoding prompt and completion together keeps characters split across the boundary whole.
                completion = full[len(prompt_text) :] if full.startswith(prompt_text) else tokenizer.decode(generated, skip_special_tokens=True)
                completion, stopped = cut_at_stop(completion, stop)
                results[index].append(
                    {
                        "completion": completion,
                        "prompt_tokens": len(encoded[index]),
                        "completion_tokens": len(generated),
                        "finish_reason": "stop" if stopped or ended is not None else "length",
                    }
                )
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    finally:
        tokenizer.padding_side = side
        if pad_token is None:
            tokenizer.pad_token = None
    return results
