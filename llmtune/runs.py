"""What every training command shares: the output directory contract, TrainingArguments, saving results.

An output directory is a normal Hugging Face model directory plus `llmtune.yaml` (the resolved
config), `manifest.json` (how to repeat the run), `metrics.json`, `training_curves.png` and a model card (README.md).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune import manifest
from llmtune.config.validate import TRAINING_EXTRAS
from llmtune.errors import UserError

if TYPE_CHECKING:
    from transformers import Trainer, TrainingArguments

    from llmtune.config.schema import RunConfig

logger = logging.getLogger(__name__)

# llmtune's defaults under the user's `training:` (which always wins). report_to "none": no
# experiment tracker is contacted unless asked for, so offline and CI runs never hang on one.
TRAINING_DEFAULTS: dict[str, Any] = {"report_to": "none"}


def check_output_dir(output_dir: str | Path, overwrite: bool, resume: bool, cfg: RunConfig | None = None) -> str | None:
    """Decide what to do with an existing output directory, before any work is done.

    Args:
        output_dir: `training.output_dir`.
        overwrite: `--overwrite`: replace what is there (only once the run has loaded its data and model).
        resume: `--resume`: continue from the last checkpoint there.
        cfg: the run config, checked against the checkpoint's saved one on --resume.

    Returns:
        The checkpoint to resume from, or None.

    Raises:
        UserError: the directory is not empty and neither flag was given, both flags were given, or
            --resume finds no checkpoint, or the config cannot continue the checkpoint's run.
    """
    from transformers.trainer_utils import get_last_checkpoint

    path = Path(output_dir)
    if overwrite and resume:
        raise UserError("--overwrite and --resume contradict each other: pick one.")
    if path.exists() and not path.is_dir():
        raise UserError(f"training.output_dir: {path} is a file, not a directory. Choose another output_dir.")
    if resume:
        last = get_last_checkpoint(str(path)) if path.is_dir() else None
        if last is None:
            raise UserError(f"--resume: no checkpoint-* folder in {path} to resume from. Run without --resume to start fresh.")
        if cfg is not None:
            manifest.check_resume(cfg, last)
        logger.info("resuming from %s", last)
        return last
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(
            f"training.output_dir: {path} is not empty. Pass --overwrite to replace it, --resume to continue from its "
            "last checkpoint, or set training.output_dir=another/dir."
        )
    return None


def clear_output_dir(output_dir: str | Path) -> None:
    """Empty the output directory (for --overwrite), called only once the run is about to train."""
    path = Path(output_dir)
    if path.is_dir():
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def training_arguments(cfg: RunConfig, **defaults: Any) -> tuple[TrainingArguments, list[Any]]:
    """Build TrainingArguments from `training:` (over llmtune's and the task's defaults) and the callbacks it asks for.

    Args:
        cfg: the run config.
        defaults: task defaults, overridden by the user's `training:` values.

    Returns:
        The TrainingArguments and Trainer callbacks (EarlyStoppingCallback when early_stopping_patience is set).
    """
    from transformers import EarlyStoppingCallback, TrainingArguments

    user = dict(cfg.training)
    extras = {k: user.pop(k) for k in list(user) if k in TRAINING_EXTRAS}
    kwargs = {**TRAINING_DEFAULTS, **defaults, "seed": cfg.seed, **user}
    callbacks = []
    if extras.get("early_stopping_patience") is not None:
        # EarlyStoppingCallback needs the best model tracked, so evaluation and saving must line up.
        kwargs.setdefault("eval_strategy", "epoch")
        kwargs.setdefault("save_strategy", kwargs["eval_strategy"])
        kwargs.setdefault("load_best_model_at_end", True)
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=extras["early_stopping_patience"],
                early_stopping_threshold=extras.get("early_stopping_threshold") or 0.0,
            )
        )
    try:
        return TrainingArguments(**kwargs), callbacks
    except (ValueError, TypeError) as exc:
        raise UserError(f"training: {exc}") from exc


def make_trainer(
    cfg: RunConfig,
    model: Any,
    tokenizer: Any,
    encoded: Any,
    overwrite: bool,
    training_defaults: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> Trainer:
    """Build the Trainer of a training command over its train/validation splits.

    Clears the output directory for --overwrite here, the last step before training: by then the
    data, tokenizer and model have all loaded, so a mistake in any of them leaves the directory as it was.

    Args:
        cfg: the run config (`training:` and seed).
        model: the model to train.
        tokenizer: saved with the model (`processing_class`).
        encoded: splits with `train` and `validation`.
        overwrite: empty the output directory first.
        training_defaults: the task's TrainingArguments defaults, under the user's `training:`.
        trainer_kwargs: the task's collator, metrics and the like.
    """
    from transformers import Trainer

    args, callbacks = training_arguments(cfg, **(training_defaults or {}))
    callbacks.append(manifest.run_recorder(cfg, manifest.for_training(cfg, args)))
    if overwrite:
        clear_output_dir(args.output_dir)
    return Trainer(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        callbacks=callbacks,
        **trainer_kwargs,
    )


def train_and_evaluate(trainer: Trainer, checkpoint: str | None, test_dataset: Any = None) -> dict[str, Any]:
    """Train (or resume), then evaluate on the validation set and, when there is one, the test set.

    Returns:
        train_* metrics from training, eval_* from the validation set, test_* from the test set.
    """
    if checkpoint is not None and (record := manifest.run_manifest(trainer)) is not None:
        record["resumed_from"] = str(checkpoint)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {k if k.startswith("train_") else f"train_{k}": v for k, v in train_result.metrics.items()}
    metrics.update(trainer.evaluate())
    if test_dataset is not None:
        metrics.update(trainer.evaluate(test_dataset, metric_key_prefix="test"))
    trainer.log_metrics("final", metrics)
    return metrics


def clean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Make metrics JSON-safe (NaN/inf -> None) and round-trip numpy scalars to Python numbers."""
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def write_model_card(output_dir: Path, cfg: RunConfig, metrics: dict[str, Any], command: str, pipeline_tag: str) -> None:
    """Write a model card (README.md) saying how the model was made and how to use it."""
    from llmtune import __version__

    base = cfg.model.name_or_path or f"random init ({cfg.model.from_config.get('model_type')} from config)"
    data = cfg.data.hub.path if cfg.data.hub else Path(cfg.data.train_file).name
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    card = f"""---
library_name: transformers
pipeline_tag: {pipeline_tag}
tags: [llmtune]
---

# {output_dir.name}

Trained with `llmtune {command}` (llmtune {__version__}).

- Base model: {base}
- Training data: {data}
- Seed: {cfg.seed}
- Full configuration: `llmtune.yaml` in this folder (re-run with `llmtune {command} llmtune.yaml`).

## Results

| metric | value |
| --- | --- |
{rows}

## Use

```python
from transformers import pipeline

pipe = pipeline("{pipeline_tag}", model="{output_dir}")
```
"""
    (output_dir / "README.md").write_text(card, encoding="utf-8")


def finish_run(trainer: Trainer, cfg: RunConfig, metrics: dict[str, Any], command: str, pipeline_tag: str) -> dict[str, Any]:
    """Save the model, tokenizer, resolved config, manifest.json, metrics, model card and training_curves.png into the output directory.

    Only the main process writes (under torchrun/accelerate every rank runs this).

    Returns:
        The JSON-safe metrics.
    """
    from llmtune.config import save_config

    metrics = clean_metrics(metrics)
    output_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(output_dir))
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_config(cfg, output_dir / "llmtune.yaml")
        manifest.write(manifest.run_manifest(trainer) or manifest.for_training(cfg, trainer.args), output_dir)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        write_model_card(output_dir, cfg, metrics, command, pipeline_tag)
        from llmtune.plots import training_curves

        training_curves(trainer.state.log_history, output_dir / "training_curves.png")
    return metrics
