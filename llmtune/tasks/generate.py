"""`llmtune generate`: read prompts, complete them with a causal LM, write one JSONL record per returned sequence."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from llmtune.errors import DataError, UserError

if TYPE_CHECKING:
    from llmtune.config.schema import GenerateConfig

logger = logging.getLogger(__name__)

OUTPUT_KEYS = ("index", "sequence", "prompt", "completion", "prompt_tokens", "completion_tokens", "finish_reason")


@dataclass
class Prompt:
    """One prompt, where it came from (for error messages) and the input fields to pass through."""

    text: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def read_prompts(input_path: str, fmt: str | None, prompt_field: str) -> list[Prompt]:
    """Prompts from a file or stdin (`llmtune.inputs`): .txt one per line, .jsonl objects with `prompt_field`.

    Raises:
        DataError: invalid JSON, a missing field, an empty prompt; naming the line.
    """
    from llmtune.inputs import read_records

    name = "stdin" if input_path == "-" else input_path
    prompts = []
    for record in read_records(input_path, prompt_field, fmt=fmt, field_option="prompt_field=NAME"):
        text = record.fields.pop(prompt_field)
        if not text.strip():
            raise DataError(f"{name}, line {record.line}: empty prompt. Every line must hold a prompt; remove blank lines.")
        prompts.append(Prompt(text, f"{name}, line {record.line}", record.fields))
    return prompts


def collect_prompts(cfg: GenerateConfig, prompts: list[str] | None, input_path: str | None, fmt: str | None) -> list[Prompt]:
    """The prompts to complete: --prompt, else --input (a file or `-` for stdin), else the config's `prompts:`."""
    if prompts and input_path:
        raise UserError("pass either --prompt or --input, not both.")
    if prompts:
        empty = [i + 1 for i, p in enumerate(prompts) if not p.strip()]
        if empty:
            raise UserError(f"--prompt number {empty[0]} is empty; give it some text.")
        return [Prompt(p, f"--prompt {i + 1}") for i, p in enumerate(prompts)]
    if input_path:
        return read_prompts(input_path, fmt, cfg.prompt_field)
    if cfg.prompts:
        return [Prompt(p, f"prompts[{i}]") for i, p in enumerate(cfg.prompts)]
    raise UserError("no prompts: pass --prompt TEXT, --input FILE (or - for stdin), or list them under prompts: in the config.")


def records(prompts: list[Prompt], results: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One output record per returned sequence, in input order; input fields pass through.

    A passed-through field whose name llmtune uses itself (e.g. `completion`) is kept as `input_<name>`.
    """
    out = []
    for index, (prompt, sequences) in enumerate(zip(prompts, results)):
        extra = {(f"input_{k}" if k in OUTPUT_KEYS else k): v for k, v in prompt.extra.items()}
        for number, seq in enumerate(sequences):
            out.append({**extra, "index": index, "sequence": number, "prompt": prompt.text, **seq})
    return out


def write_jsonl(rows: list[dict[str, Any]], stream: IO[str]) -> None:
    for row in rows:
        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    stream.flush()


def _streamer(tokenizer: Any) -> Any:
    """A TextStreamer that shows the text as it is produced on stderr (stdout carries only JSONL)."""
    from transformers import TextStreamer

    class StderrStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            sys.stderr.write(text + ("\n" if stream_end else ""))
            sys.stderr.flush()

    return StderrStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def run(
    cfg: GenerateConfig,
    stdout: IO[str] | None = None,
    prompts: list[str] | None = None,
    input_path: str | None = None,
    input_fmt: str | None = None,
    output: str | None = None,
) -> dict[str, Any]:
    """Complete prompts and write JSONL records to `output` or `stdout`.

    Args:
        cfg: the validated generate config.
        stdout: where records go without `output` (the CLI's results stream).
        prompts: --prompt texts (take precedence over the config's `prompts:`).
        input_path: --input file, or `-` for stdin.
        input_fmt: txt or jsonl; by default from the file extension.
        output: write the records to this file (atomically) instead of stdout.

    Returns:
        A summary: number of prompts and sequences, and the output file (if any).

    Raises:
        UserError: bad input (naming the line), no prompts, an unreachable model, a prompt too long.
    """
    from transformers import AutoModelForCausalLM, set_seed

    from llmtune.generation import PromptTooLong, build_generation_config, generate_texts
    from llmtune.modeling import load_for_inference
    from llmtune.files import atomic_writer
    from llmtune.runs import check_writable

    if output is not None:
        check_writable(output, "--output", "file")
    items = collect_prompts(cfg, prompts, input_path, input_fmt)
    set_seed(cfg.seed)
    model, tokenizer = load_for_inference(AutoModelForCausalLM, cfg.model, cfg.tokenizer)
    generation_config = build_generation_config(model, tokenizer, cfg.generation)
    stream = None
    if len(items) == 1 and output is None and stdout is not None and stdout.isatty() and generation_config.num_beams == 1 and (generation_config.num_return_sequences or 1) == 1:
        stream = _streamer(tokenizer)

    def progress(done: int, total: int) -> None:
        logger.info("generated %d/%d prompts", done, total)

    try:
        results = generate_texts(model, tokenizer, [p.text for p in items], generation_config, cfg.batch_size, cfg.stop, progress, stream)
    except PromptTooLong as exc:
        raise DataError(f"{items[exc.index].source}: the prompt {exc.detail}") from None
    rows = records(items, results)
    if output is not None:
        with atomic_writer(output) as handle:  # a partial file never looks complete
            write_jsonl(rows, handle)
        logger.info("wrote %d records to %s", len(rows), output)
    elif stdout is not None:
        write_jsonl(rows, stdout)
    return {"prompts": len(items), "sequences": len(rows), "output": output}
