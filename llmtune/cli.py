"""The `llmtune` command line: the only module that knows Typer.

Each command loads its config, imports its task module lazily and calls `run(cfg)`. Results go to
stdout as JSON; everything else (logs, warnings, progress bars) goes to stderr. `main()` maps
llmtune's errors to exit codes: 2 for the user's mistakes, 1 for failures, 3 for missed gates.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llmtune import __version__

# Plain-text help (rich_markup_mode=None): typer then formats help and usage errors with its own click
# formatter instead of importing rich (~0.1 s, half of `llmtune --help`'s start-up). Tracebacks under
# --debug still use rich, imported only then.
app = typer.Typer(
    name="llmtune",
    help="Train and use transformer language models from a YAML config.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,  # --install-completion / --show-completion (Typer's shell completion)
    rich_markup_mode=None,
)


def _command(name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`app.command`, with the docstring's whole first paragraph as the line in `llmtune --help`.

    Without rich, click cuts a command's summary at ~45 characters ("... and..."); `short_help` is shown
    whole and wrapped instead.
    """

    def register(function: Callable[..., None]) -> Callable[..., None]:
        summary = " ".join((function.__doc__ or "").strip().split("\n\n")[0].split())
        return app.command(name, short_help=summary or None)(function)

    return register

DEBUG = {"on": False}
# How much goes to stderr is the `llmtune` logger's level (see llmtune.terminal), set from these root options.
VERBOSITY_FLAGS = ("--quiet", "-q", "--verbose", "-v")

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
OverridesArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="key.path=value overrides, e.g. training.learning_rate=3e-5; ~key.path removes a key.", show_default=False),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in the output directory.")]


def _print_json(result: Any, stream: Any) -> None:
    stream.write(json.dumps(result, ensure_ascii=False) + "\n")
    stream.flush()


@contextmanager
def _results_only_stdout() -> Iterator[Any]:
    """Route everything written to stdout to stderr, and yield a stream to the real stdout for results.

    Libraries print to stdout from Python (Trainer's log lines) and from native code (the Rust
    tokenizers trainer), so the redirect is done at the file-descriptor level when there is one.

    A reader that closes the pipe early (`llmtune predict ... | head -1`) ends the command quietly: the
    BrokenPipeError the next write (or `llmtune.streaming.stop_if_reader_gone`) raises is swallowed when
    the results pipe has indeed lost its reader, and /dev/null then takes stdout's place so that nothing
    flushed at exit fails again ("Exception ignored ... BrokenPipeError"). The exit status stays 0: the
    reader chose to stop, and `set -o pipefail` scripts must not fail for it.
    """
    real = sys.stdout
    try:
        fd, err_fd = real.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        # No real descriptors (e.g. typer.testing.CliRunner): a Python-level redirect is all there is.
        with redirect_stdout(sys.stderr):
            yield real
        return
    real.flush()
    saved = os.dup(fd)
    results = os.fdopen(os.dup(saved), "w", encoding="utf-8", buffering=1)
    os.dup2(err_fd, fd)
    reader_gone = False
    try:
        with redirect_stdout(sys.stderr):
            yield results
    except BrokenPipeError:
        from llmtune.streaming import reader_gone as gone

        if results.closed or not gone(results):
            raise  # some other pipe broke: a real failure
        reader_gone = True
    finally:
        try:
            results.close()
        except BrokenPipeError:  # `llmtune ... | head` closed the pipe early; nothing left to tell
            reader_gone = True
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        if reader_gone:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)


def _execute(work: Callable[[Any], Any]) -> None:
    """Run `work(results)` with stdout kept for results only, mapping llmtune's errors to exit codes.

    `work` receives the stream to write its results (JSON/JSONL) to; anything else printed goes to stderr.
    """
    from llmtune.errors import LlmtuneError, redact

    try:
        with _results_only_stdout() as stdout:
            from llmtune.terminal import quiet_libraries

            quiet_libraries()
            work(stdout)
    except LlmtuneError as exc:
        if DEBUG["on"]:
            raise
        typer.echo(f"error: {redact(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line unless --debug
        if DEBUG["on"]:
            raise
        typer.echo(f"error: {type(exc).__name__}: {redact(str(exc))}\n(run with --debug for the traceback)", err=True)
        raise typer.Exit(1) from None


def _main_process_results(stdout: Any, output: str | None) -> tuple[Any, str | None]:
    """Where a streaming command (generate, predict) writes its records: `stdout`/`output` on the main process only.

    Under torchrun / `accelerate launch` every process runs the whole command; the others write to
    /dev/null, so the records appear once and one process writes the --output file.
    """
    from llmtune.modeling import launch_rank

    if launch_rank() == 0:
        return stdout, output
    return open(os.devnull, "w", encoding="utf-8"), None  # noqa: SIM115 - closed with the process


def _config_with_model(command: str, config: str | None, overrides: list[str] | None, model: str | None) -> tuple[str | None, list[str]]:
    """The config file and overrides of a command whose CONFIG is optional with --model.

    Without a config file, a first argument holding `=` (or starting with `~`) is an override; `--model` becomes
    `model.name_or_path` (JSON-quoted: a YAML scalar that stays a string, whatever the path looks like).

    Raises:
        UserError: neither a config file nor --model.
    """
    from llmtune.errors import UserError

    extra = list(overrides or [])
    if config is not None and ("=" in config or config.startswith("~")) and not Path(config).is_file():
        config, extra = None, [config, *extra]
    if config is None and model is None:
        raise UserError(f"{command} needs a CONFIG file or --model DIR (a trained model directory or Hub id).")
    if model is not None:
        extra.append(f"model.name_or_path={json.dumps(model)}")
    return config, extra


# The module whose `run(cfg)` does each inference command's work. A training command runs the module of
# the task its config names (`llmtune.tasks.registry`: pretrain-mlm's one task, finetune's `task:`).
COMMANDS = {
    "evaluate": "llmtune.tasks.evaluate",
    "predict": "llmtune.tasks.predict",
    "generate": "llmtune.tasks.generate",
}


def _load(command: str, path: str | Path | None, overrides: list[str] | None = None, **flags: Any) -> tuple[Any, Any]:
    """The validated config of `command` (its file, overrides and command-line options) and the module that runs it."""
    from importlib import import_module

    from llmtune.config import load_config
    from llmtune.tasks import registry

    cfg = load_config(command, path, overrides, flags=flags)
    if command in registry.training_commands():
        return cfg, registry.task_of(command, cfg).load()
    return cfg, import_module(COMMANDS[command])


def _train_command(command: str, config: Path, overrides: list[str] | None, overwrite: bool, resume: bool) -> None:
    def work(stdout: Any) -> None:
        cfg, task = _load(command, config, overrides, overwrite=overwrite, resume=resume)
        if getattr(cfg, "search", None) is not None:
            logging.getLogger("llmtune").info("search: is for llmtune tune; %s trains the config as it is", command)
        result = task.run(cfg)
        # Under torchrun / accelerate launch every process runs this; the metrics are global (gathered
        # by Trainer), so one JSON object from the main process says it all. The state is accelerate's
        # PartialState, which TrainingArguments set up during the run (torch is loaded by now).
        from accelerate import PartialState

        if PartialState().is_main_process:
            _print_json(result, stdout)

    _execute(work)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmtune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (also accepted after the command).")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors, warnings and the result: no progress bars, no info lines (for CI logs).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print everything: the libraries' progress bars, info logs and every Trainer log.")
    ] = False,
) -> None:
    """Train and use transformer language models from a YAML config."""
    DEBUG["on"] = DEBUG["on"] or debug
    if quiet and verbose:
        typer.echo("error: --quiet and --verbose ask for opposite things; pass one of them.", err=True)
        raise typer.Exit(2)
    # Set on every invocation (the default too), so one command's level never outlives it in a test process.
    logging.getLogger("llmtune").setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


@_command()
def finetune(config: ConfigArg, overrides: OverridesArg = None, overwrite: OverwriteOpt = False, resume: ResumeOpt = False) -> None:
    """Fine-tune a model (task: classification, causal-lm or seq2seq) and print its final metrics as JSON."""
    _train_command("finetune", config, overrides, overwrite, resume)


@_command("pretrain-mlm")
def pretrain_mlm(config: ConfigArg, overrides: OverridesArg = None, overwrite: OverwriteOpt = False, resume: ResumeOpt = False) -> None:
    """Pretrain a masked language model (from scratch or continued) and print its final metrics as JSON."""
    _train_command("pretrain-mlm", config, overrides, overwrite, resume)


@_command()
def tune(
    config: ConfigArg,
    overrides: OverridesArg = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Finished trials the study runs to (default: search.trials).")] = None,
    overwrite: OverwriteOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted (or finished) study in the output directory.")] = False,
    command: Annotated[Optional[str], typer.Option("--for", help="finetune or pretrain-mlm; inferred from the config's keys when omitted.")] = None,
) -> None:
    """Search hyperparameters (the config's search: section) with Optuna; one JSON line per trial, then the best."""

    def work(stdout: Any) -> None:
        from llmtune.tasks import tune as tune_task

        tune_task.run(tune_task.load(config, overrides, trials, command, overwrite=overwrite, resume=resume), stdout)

    _execute(work)


@_command()
def validate(
    config: ConfigArg,
    overrides: OverridesArg = None,
    command: Annotated[Optional[str], typer.Option("--for", help="The command the config is for; inferred from its keys when omitted.")] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Dry run of a training config: load the data and tokenizer (never the weights) and print its figures.")
    ] = False,
    processes: Annotated[
        Optional[int], typer.Option("--processes", min=1, help="With --stats: plan the steps for N training processes (default: the launch's, else 1).")
    ] = None,
) -> None:
    """Check a config (and overrides) without loading a model; print the resolved config as JSON."""

    def work(stdout: Any) -> None:
        from llmtune.config import infer_command, load_config, read_yaml

        name = command or infer_command(read_yaml(config).data)
        if stats or processes is not None:
            from llmtune.errors import UserError
            from llmtune.tasks import registry

            if not stats:
                raise UserError("--processes goes with --stats.")
            if name not in registry.training_commands():
                raise UserError(f"--stats is for training configs (finetune, pretrain-mlm, or a tune config), not {name}; drop --stats.")
        # Configs for GPU machines are validated on CPU-only CI: what this machine lacks is only a warning.
        cfg = load_config(name, config, overrides, on_this_machine=False)
        if getattr(cfg, "search", None) is not None:
            from llmtune.config.search import search_problems
            from llmtune.errors import ConfigError

            problems = search_problems(name, config, overrides, cfg)
            if problems:
                raise ConfigError(problems, source=str(config))
        search = getattr(cfg, "search", None)
        what = f"{name} config" if search is None else f"tune config ({len(search.space)} searched keys, {search.trials} trials; {name} trains it as written)"
        typer.echo(f"{config}: valid {what}", err=True)
        if stats:
            from llmtune import stats as dry_run
            from llmtune.terminal import quiet

            figures = dry_run.collect(name, cfg, processes)
            if not quiet():
                typer.echo(dry_run.table(figures), err=True)
            _print_json(figures, stdout)
            return
        _print_json({"command": name, "config": cfg.model_dump(mode="json")}, stdout)

    _execute(work)


@_command()
def evaluate(
    config: Annotated[
        Optional[str], typer.Argument(help="YAML config file; optional with --model (then overrides may come first).", show_default=False)
    ] = None,
    overrides: OverridesArg = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Trained model directory (sets model.name_or_path).")] = None,
    output_dir: Annotated[Optional[str], typer.Option("--output-dir", help="Also write metrics.json (and pictures) here.")] = None,
    fail_under: Annotated[
        Optional[list[str]], typer.Option("--fail-under", metavar="METRIC=VALUE", help="Exit 3 if METRIC < VALUE (repeatable).")
    ] = None,
    fail_over: Annotated[
        Optional[list[str]], typer.Option("--fail-over", metavar="METRIC=VALUE", help="Exit 3 if METRIC > VALUE (repeatable).")
    ] = None,
) -> None:
    """Evaluate a trained model without training; print the metrics as JSON (exit 3 if a gate fails)."""

    def work(stdout: Any) -> None:
        path, extra = _config_with_model("evaluate", config, overrides, model)
        if output_dir:
            extra.append(f"output_dir={json.dumps(output_dir)}")
        cfg, task = _load("evaluate", path, extra, fail_under=fail_under or [], fail_over=fail_over or [])
        result = task.run(cfg)
        _print_json(result, stdout)
        task.check_gates(result, task.gates(cfg))

    _execute(work)


@_command()
def predict(
    model: Annotated[str, typer.Option("--model", help="Trained classifier directory.", show_default=False)],
    input: Annotated[str, typer.Option("--input", help="A .txt, .jsonl, .csv or .tsv file, or - for stdin.", show_default=False)],
    input_format: Annotated[
        Optional[str], typer.Option("--input-format", help="txt, jsonl, csv or tsv; by default from the file extension (stdin: jsonl if it starts with {, else txt).")
    ] = None,
    output: Annotated[Optional[str], typer.Option("--output", help="Write the JSONL here instead of stdout.")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Field/column holding the text.")] = "text",
    text_pair_field: Annotated[Optional[str], typer.Option("--text-pair-field", help="Field/column holding the second text of a pair.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Examples per forward pass.")] = 32,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="Keep the k most likely labels in probabilities.")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", min=1, help="Truncate inputs to this many tokens (default: the model's maximum).")] = None,
) -> None:
    """Classify texts with a trained model: one JSON line per input record, in input order."""

    def work(stdout: Any) -> None:
        stdout, target = _main_process_results(stdout, output)
        options = {"text_field": text_field, "text_pair_field": text_pair_field, "batch_size": batch_size, "top_k": top_k, "max_length": max_length}
        options["input_format"] = input_format
        cfg, task = _load("predict", None, model=model, input=input, output=target, **options)
        summary = task.run(cfg, stdout)
        typer.echo(f"predicted {summary['rows']} rows ({summary['truncated']} truncated to {summary['max_length']} tokens)", err=True)

    _execute(work)


@_command()
def generate(
    config: Annotated[Optional[str], typer.Argument(help="YAML config file (optional with --model).", show_default=False)] = None,
    overrides: OverridesArg = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model directory or Hub id (instead of model.name_or_path).")] = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", help="A prompt to complete (repeatable).")] = None,
    input_path: Annotated[Optional[str], typer.Option("--input", help="Prompts file: .txt (one per line) or .jsonl; - reads stdin.")] = None,
    input_format: Annotated[Optional[str], typer.Option("--input-format", help="txt or jsonl; by default from the file extension (stdin: jsonl if it starts with {, else txt).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Write the JSONL here instead of stdout.")] = None,
) -> None:
    """Complete prompts with a causal LM; print one JSON line per returned sequence."""

    def work(stdout: Any) -> None:
        path, extra = _config_with_model("generate", config, overrides, model)
        stdout, target = _main_process_results(stdout, str(output) if output else None)
        cfg, task = _load("generate", path, extra, prompt=prompt, input=input_path, input_format=input_format, output=target)
        summary = task.run(cfg, stdout)
        if target is not None:
            _print_json(summary, stdout)

    _execute(work)


def main() -> None:
    """Console-script entry point: `--debug`, `--quiet` and `-v` work anywhere on the command line."""
    if "--debug" in sys.argv[1:]:
        DEBUG["on"] = True
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--debug"]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s llmtune: %(message)s"))
    logger = logging.getLogger("llmtune")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # --quiet / -v, like --debug, work anywhere on the command line: moved before the command for the root options.
    flags = [a for a in sys.argv[1:] if a in VERBOSITY_FLAGS]
    sys.argv = [sys.argv[0], *flags, *(a for a in sys.argv[1:] if a not in VERBOSITY_FLAGS)]
    # Only this handler prints llmtune's lines: a library that gives the root logger a handler of its own (absl,
    # imported by rouge-score) would otherwise print each of them a second time in its format.
    logger.propagate = False
    app()
