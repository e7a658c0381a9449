"""`llmtune generate`: read prompts, complete them with a causal or encoder-decoder LM, stream one JSONL record per returned sequence."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from llmtune.errors import DataError, UserError
from llmtune.files import write_jsonl

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


def read_prompts(input_path: str, fmt: str | None, prompt_field: str) -> Iterator[Prompt]:
    """Stream prompts from a file or stdin (`llmtune.inputs`): .txt one per line, .jsonl objects with `prompt_field`.

    The file's existence and format are checked now, each line as the iterator reaches it.

    Raises:
        DataError: invalid JSON, a missing field, an empty prompt; naming the line.
    """
    from llmtune.inputs import open_records

    name = "stdin" if input_path == "-" else input_path
    records = open_records(input_path, prompt_field, fmt=fmt, field_option="prompt_field=NAME")

    def prompts() -> Iterator[Prompt]:
        for record in records:
            text = record.fields.pop(prompt_field)
            if not text.strip():
                raise DataError(f"{name}, line {record.line}: empty prompt. Every line must hold a prompt; remove blank lines.")
            yield Prompt(text, f"{name}, line {record.line}", record.fields)

    return prompts()


def collect_prompts(cfg: GenerateConfig) -> Iterator[Prompt]:
    """The prompts to complete: --prompt, else --input (a file or `-` for stdin, read lazily), else the config's `prompts:`."""
    prompts, input_path, fmt = cfg.prompt, cfg.input, cfg.input_format
    if prompts and input_path:
        raise UserError("pass either --prompt or --input, not both.")
    if prompts:
        empty = [i + 1 for i, p in enumerate(prompts) if not p.strip()]
        if empty:
            raise UserError(f"--prompt number {empty[0]} is empty; give it some text.")
        return iter([Prompt(p, f"--prompt {i + 1}") for i, p in enumerate(prompts)])
    if input_path:
        return read_prompts(input_path, fmt, cfg.prompt_field)
    if cfg.prompts:
        return iter([Prompt(p, f"prompts[{i}]") for i, p in enumerate(cfg.prompts)])
    raise UserError("no prompts: pass --prompt TEXT, --input FILE (or - for stdin), or list them under prompts: in the config.")


def prompt_records(index: int, prompt: Prompt, sequences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The output records of one prompt, one per returned sequence; its input fields pass through.

    A passed-through field whose name llmtune uses itself (e.g. `completion`) is kept as `input_<name>`.
    """
    extra = {(f"input_{k}" if k in OUTPUT_KEYS else k): v for k, v in prompt.extra.items()}
    return [{**extra, "index": index, "sequence": number, "prompt": prompt.text, **seq} for number, seq in enumerate(sequences)]


def _streamer(tokenizer: Any) -> Any:
    """A TextStreamer that shows the text as it is produced on stderr (stdout carries only JSONL)."""
    from transformers import TextStreamer

    class StderrStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            sys.stderr.write(text + ("\n" if stream_end else ""))
            sys.stderr.flush()

    return StderrStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def run(cfg: GenerateConfig, stdout: IO[str] | None = None) -> dict[str, Any]:
    """Complete prompts and stream JSONL records to `cfg.output` or `stdout`, in input order, as batches finish.

    Prompts are read lazily (`llmtune.streaming`): a window of `WINDOW_BATCHES` batches is read, checked
    and generated at a time, and each prompt's records are written and flushed once it and every earlier
    prompt are done. The first window is read before the model loads, so a mistake near the top of the
    input is reported at once. A bad prompt further on ends the run with a DataError naming its line;
    records already written to stdout stay there, while `cfg.output` (written through `atomic_writer`) is
    then never created.

    Args:
        cfg: the validated generate config; its command-line fields say where prompts come from (`prompt`,
            --prompt texts, before the config's `prompts:`; `input`, a file or `-` for stdin, read as
            `input_format`) and where records go (`output`, a file written atomically, instead of stdout).
        stdout: where records go without `cfg.output` (the CLI's results stream).

    Returns:
        A summary: number of prompts and sequences, and the output file (if any).

    Raises:
        UserError: bad input (naming the line), no prompts, an unreachable model, a prompt too long.
        BrokenPipeError: the reader of `stdout` closed it (`| head -1`); checked before each batch.
    """
    import contextlib
    from itertools import chain

    from transformers import set_seed

    from llmtune.files import atomic_writer
    from llmtune.generation import PromptTooLong, build_generation_config, iter_generations, load_generation_model
    from llmtune.runs import check_writable
    from llmtune.streaming import WINDOW_BATCHES, stop_if_reader_gone, windows

    output = cfg.output
    if output is not None:
        check_writable(output, "--output", "file")
    # Read (and check) the first window before the slow model load; the rest is read as it is needed.
    chunks = windows(collect_prompts(cfg), WINDOW_BATCHES * cfg.batch_size)
    first = next(chunks, [])
    items = chain(first, chain.from_iterable(chunks))
    set_seed(cfg.seed)
    model, tokenizer = load_generation_model(cfg.model, cfg.tokenizer)
    generation_config = build_generation_config(model, tokenizer, cfg.generation)
    stream = None
    # A window shorter than its size is the whole input: one prompt in it is the only prompt.
    if len(first) == 1 and output is None and stdout is not None and stdout.isatty() and generation_config.num_beams == 1 and (generation_config.num_return_sequences or 1) == 1:
        stream = _streamer(tokenizer)

    pending: dict[int, Prompt] = {}  # the prompts read whose records are not written yet

    def texts() -> Iterator[str]:
        for index, item in enumerate(items):
            pending[index] = item
            yield item.text

    def progress(done: int) -> None:
        if stdout is not None and output is None:
            stop_if_reader_gone(stdout)  # `| head -1` has what it wanted: stop before the next batch
        logger.info("generated %d prompt%s", done, "" if done == 1 else "s")

    count = sequences = 0
    with contextlib.ExitStack() as stack:
        # To a file: streamed to a temporary name, renamed when complete, removed if the run fails.
        target = stack.enter_context(atomic_writer(output)) if output is not None else stdout
        try:
            for results in iter_generations(model, tokenizer, texts(), generation_config, cfg.batch_size, cfg.stop, progress, stream):
                rows = prompt_records(count, pending.pop(count), results)
                if target is not None:
                    write_jsonl(rows, target)
                count, sequences = count + 1, sequences + len(rows)
        except PromptTooLong as exc:
            raise DataError(f"{pending[exc.index].source}: the prompt {exc.detail}") from None
    if output is not None:
        logger.info("wrote %d records to %s", sequences, output)
    return {"prompts": count, "sequences": sequences, "output": output}
