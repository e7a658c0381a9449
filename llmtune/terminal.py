"""What a command prints on stderr: quiet (`--quiet`), the default, or everything (`-v`).

The level is the `llmtune` logger's (set once by `cli.main`): WARNING under --quiet, INFO by default,
DEBUG under -v. Everything else reads it from there, so there is no second switch to keep in step:

- the libraries' own switches (datasets' and transformers' progress bars and log levels) follow it
  (`quiet_libraries`);
- Trainer's progress display is `TrainingDisplay`, which `runs.make_trainer` puts in place of
  transformers' ProgressCallback/PrinterCallback.

By default a training run shows one progress bar (with the latest loss), one line per evaluation and
the final metrics table; under --quiet errors, llmtune's own warnings and the result; under -v also
datasets' bars, transformers' info logs and every Trainer log dict.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from transformers import ProgressCallback

LOGGER = "llmtune"
# Trainer log fields that are about the run's speed, not its quality: left out of the one-line evaluations.
SPEED_FIELDS = ("_runtime", "_samples_per_second", "_steps_per_second", "total_flos")


def level() -> int:
    """The level the command runs at: logging.WARNING (--quiet), INFO (default, also when no command set one) or DEBUG (-v)."""
    return logging.getLogger(LOGGER).level or logging.INFO


def quiet() -> bool:
    """--quiet: print only errors, llmtune's warnings and the result."""
    return level() > logging.INFO


def verbose() -> bool:
    """-v: print everything the libraries have to say."""
    return level() < logging.INFO


def quiet_libraries() -> None:
    """Set datasets' and transformers' progress bars and log levels for the command's level.

    Both libraries print a bar for each small step of loading a tiny file ("Generating train split",
    "Casting the dataset", "Writing model shards"); those show only under -v. Under --quiet their
    warnings go too, and Python warnings with them (an error still ends the command with its message).
    """
    import datasets
    import transformers

    if verbose():
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
        datasets.logging.set_verbosity_info()
        transformers.utils.logging.set_verbosity_info()
        return
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    if quiet():
        datasets.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        warnings.filterwarnings("ignore")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def evaluation_line(logs: dict[str, Any], step: int, max_steps: int) -> str:
    """One evaluation as one line: `evaluation at step 10/10 (epoch 1): eval_loss 0.7293, eval_accuracy 0.48`."""
    metrics = {k: v for k, v in logs.items() if k != "epoch" and not k.endswith(SPEED_FIELDS)}
    epoch = f" (epoch {_number(logs['epoch'])})" if "epoch" in logs else ""
    return f"evaluation at step {step}/{max_steps}{epoch}: " + ", ".join(f"{k} {_number(v)}" for k, v in metrics.items())


# Seconds between redraws of the training bar when stderr is not a terminal (a file, a pipe, a CI log).
LOG_REDRAW_S = 30.0


class TrainingDisplay(ProgressCallback):
    """Trainer's progress display, trimmed to what a terminal needs.

    - One tqdm bar for training (unless `training.disable_tqdm` or --quiet), its postfix the latest
      loss and learning rate; no bar per evaluation. Redrawn every LOG_REDRAW_S when stderr is no terminal.
    - One line per evaluation (speed fields left out).
    - The end-of-training dict (train_runtime, ...) is not printed: the final metrics table has it.
    - Under -v every log dict is printed as Trainer prints it.
    """

    def __init__(self, bar: bool = True) -> None:
        super().__init__()
        self.bar = bar
        self.trained = False  # evaluations after training (train_and_evaluate's) are the final ones

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar and not quiet():
            super().on_train_begin(args, state, control, **kwargs)
            if self.training_bar is not None and not sys.stderr.isatty():
                # A log file or CI log keeps every redraw: one every LOG_REDRAW_S, not ten a second.
                self.training_bar.mininterval = LOG_REDRAW_S
        self.current_step = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.training_bar is not None:
            super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kwargs: Any) -> None:
        """No bar per evaluation: it is one line once done."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs or quiet():
            return
        if verbose():
            self._write(str({k: _number(v) for k, v in logs.items() if k != "total_flos"}))
            return
        if any(k.startswith(("eval_", "test_")) for k in logs):
            self._write(("final " if self.trained else "") + evaluation_line(logs, state.global_step, state.max_steps))
        elif "loss" in logs and self.training_bar is not None:
            self.training_bar.set_postfix({k: _number(logs[k]) for k in ("loss", "learning_rate") if k in logs}, refresh=False)
        elif "loss" in logs:  # no bar (training.disable_tqdm): the loss as a line instead
            self._write(f"step {state.global_step}/{state.max_steps}: loss {_number(logs['loss'])}")

    def _write(self, line: str) -> None:
        if self.training_bar is not None:
            self.training_bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trained = True
        if self.training_bar is not None:
            super().on_train_end(args, state, control, **kwargs)


def use_training_display(trainer: Any) -> None:
    """Replace Trainer's ProgressCallback (or PrinterCallback, with disable_tqdm) by `TrainingDisplay`."""
    from transformers import PrinterCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainingDisplay(bar=not trainer.args.disable_tqdm))
