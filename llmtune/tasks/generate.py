"""`llmtune generate`: read prompts, complete them with a causal LM, write one JSONL record per returned sequence."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llmtune.errors import DataError, UserError

if TYPE_CHECKING:
    from llmtune.config.schema import GenerateConfig

logger = logging.getLogger(__name__)

INPUT_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl"}
OUTPUT_KEYS = ("index", "sequence", "prompt", "completion", "prompt_tokens", "completion_tokens", "finish_reason")


@dataclass
class Prompt:
    """One prompt, where it came from (for error messages) and the input fields to pass through."""

    text: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def input_format(path: str, given: str | None) -> str:
    """`txt` or `jsonl`: as given, else from the file extension (stdin `-` defaults to txt)."""
    if given is not None:
        return given
    if path == "-":
        return "txt"
    fmt = INPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"--input: cannot tell the format of {path}; use a .txt (one prompt per line) or .jsonl file, or pass --input-format.")
    return fmt


def parse_prompts(text: str, fmt: str, name: str, prompt_field: str) -> list[Prompt]:
    """Parse input text: `txt` is one prompt per line, `jsonl` one JSON object per line with `prompt_field`.

    Raises:
        DataError: an empty line, invalid JSON, a record without a text prompt; naming the line.
    """
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{name}, line {number}"
        if not line.strip():
            raise DataError(f"{where}: empty line. Every line must hold a prompt; remove blank lines.")
        if fmt == "txt":
            prompts.append(Prompt(line, where))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}). Each line must be one JSON object.") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object like {{\"{prompt_field}\": \"...\"}}, got {type(record).__name__}.")
        if prompt_field not in record:
            raise DataError(
                f"{where}: no '{prompt_field}' field (fields: {', '.join(record) or 'none'}). "
                "Add it, or name the field holding the prompt with prompt_field=NAME."
            )
        value = record.pop(prompt_field)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: '{prompt_field}' must be a non-empty string, got {value!r}.")
        prompts.append(Prompt(value, where, record))
    if not prompts:
        raise DataError(f"{name}: no prompts in the input.")
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
        fmt = input_format(input_path, fmt)
        if input_path == "-":
            return parse_prompts(sys.stdin.read(), fmt, "stdin", cfg.prompt_field)
        path = Path(input_path)
        if not path.is_file():
            raise UserError(f"--input: file not found: {path}.")
        return parse_prompts(path.read_text(encoding="utf-8"), fmt, str(path), cfg.prompt_field)
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


def write_atomically(rows: list[dict[str, Any]], path: Path) -> None:
    """Write to a temporary file next to `path` and rename it, so a partial file never looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write_jsonl(rows, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from llmtune.generation import PromptTooLong, build_generation_config, generate_texts
    from llmtune.modeling import from_pretrained

    items = collect_prompts(cfg, prompts, input_path, input_fmt)
    set_seed(cfg.seed)
    name = cfg.model.name_or_path
    tok_key, tok_name = ("tokenizer.name_or_path", cfg.tokenizer.name_or_path) if cfg.tokenizer.name_or_path else ("model.name_or_path", name)
    tokenizer = from_pretrained(AutoTokenizer, tok_key, tok_name, revision=None if cfg.tokenizer.name_or_path else cfg.model.revision)
    model = from_pretrained(AutoModelForCausalLM, "model.name_or_path", name, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    import torch

    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
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
        write_atomically(rows, Path(output))
        logger.info("wrote %d records to %s", len(rows), output)
    elif stdout is not None:
        write_jsonl(rows, stdout)
    return {"prompts": len(items), "sequences": len(rows), "output": output}
