"""What every training command shares: the output directory contract, TrainingArguments, saving results.

An output directory is a normal Hugging Face model directory plus `llmtune.yaml` (the resolved
config), `manifest.json` (how to repeat the run), `metrics.json`, `training_curves.png` and a model card (README.md).

Nothing a user already has is lost: a run trains into a staging folder beside the output directory
(`<output_dir>.incomplete`, where its checkpoints live too) and replaces the output directory only
once everything is saved there, in one rename. A failure before that leaves the old directory as it
was; a kill leaves the staging folder for `--resume`.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import math
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune import hardware, manifest
from llmtune.config.validate import TRAINING_EXTRAS
from llmtune.errors import UserError, redact
from llmtune.files import write_text_atomically
from llmtune.modeling import launch_rank, launched_on_cpus, lone_accelerate_cpu_process

if TYPE_CHECKING:
    from transformers import Trainer, TrainingArguments

    from llmtune.config.schema import RunConfig
    from llmtune.tasks.registry import Task

logger = logging.getLogger(__name__)

# llmtune's defaults under the user's `training:` (which always wins). report_to "none": no
# experiment tracker is contacted unless asked for, so offline and CI runs never hang on one.
TRAINING_DEFAULTS: dict[str, Any] = {"report_to": "none"}
# Where Trainer's TensorBoardCallback writes (report_to: tensorboard): <output_dir>/runs/<date>_<host>/events.out.tfevents.*
TENSORBOARD_DIR = "runs"

# The staging folder of `<output_dir>` is `<output_dir>.incomplete`; an old output directory being
# swapped out without renameat2 waits at `<output_dir>.replaced`. Both are siblings of the output
# directory, so every move between them is a rename on one filesystem.
STAGING_SUFFIX = ".incomplete"
REPLACED_SUFFIX = ".replaced"
# A file at the root of those folders saying what they hold, so that a swap cut short by a crash
# is finished (or undone) on the next start and nothing is deleted that llmtune did not make:
# "training" (a run in progress or interrupted), "complete" (a finished run waiting to be swapped in),
# "replaced" (an old output directory being swapped out, to delete).
MARKER = ".llmtune-staging"


# ---------------------------------------------------------------------------------------------------
# Output locations


def check_writable(path: str | Path, key: str, kind: str) -> None:
    """Refuse, before any work, an output location that cannot be written.

    Args:
        path: where the command will write.
        key: how the user named it (`training.output_dir`, `--output`, ...), for the message.
        kind: "dir" (a folder the command creates or fills) or "file" (a file written atomically).

    Raises:
        UserError: the path is a file where a folder is wanted (or the reverse), lies under a file,
            or its folder cannot be written (permissions, read-only filesystem).
    """
    path = Path(path)
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise UserError(f"{key}: {path} is a file, not a directory. Choose another {key} (a new or existing folder).")
        if kind == "file" and path.is_dir():
            raise UserError(f"{key}: {path} is a directory. Give a file path, e.g. {path / 'out.jsonl'}.")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{key}: {path} lies under {ancestor}, which is a file, not a folder. Choose another {key}.")
    # The folder that gets the new entry (the file's or staging folder's parent) must take writes.
    for folder in [ancestor] + ([path] if kind == "dir" and path.is_dir() else []):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"{key}: cannot write in {folder} (permission denied or a read-only filesystem). Choose a writable {key}.")


# ---------------------------------------------------------------------------------------------------
# Output directory, staging folder and checkpoints


def staging_dir(output_dir: str | Path) -> Path:
    """The folder a run trains into before it replaces `output_dir`: `<output_dir>.incomplete`."""
    path = Path(output_dir)
    return path.with_name(path.name + STAGING_SUFFIX)


def _marker(folder: Path) -> str | None:
    try:
        return (folder / MARKER).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _set_marker(folder: Path, state: str) -> None:
    write_text_atomically(folder / MARKER, state + "\n")


def _remove_marked_tree(folder: Path) -> None:
    """Delete a folder llmtune made, its marker last, so a deletion cut short is still recognised as ours."""
    for child in folder.iterdir():
        if child.name != MARKER:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    folder.rmdir()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where it is not supported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_into_place(staging: Path, output_dir: Path) -> None:
    """Replace `output_dir` by the complete run in `staging`, so that a crash at any point leaves one of them whole.

    With renameat2 the two folders trade places atomically (`output_dir` never disappears); elsewhere
    the old folder is renamed aside first. `recover_interrupted_swap` finishes either on the next start.
    """
    _set_marker(staging, "complete")
    if not output_dir.exists():
        os.rename(staging, output_dir)
    else:
        _set_marker(output_dir, "replaced")
        if _exchange(staging, output_dir):
            old = staging
        else:
            old = output_dir.with_name(output_dir.name + REPLACED_SUFFIX)
            os.rename(output_dir, old)
            os.rename(staging, output_dir)
        _remove_marked_tree(old)
    (output_dir / MARKER).unlink(missing_ok=True)


def recover_interrupted_swap(output_dir: str | Path) -> None:
    """Finish (or undo) a swap that a crash cut short, from what the marker files say.

    Only folders carrying llmtune's marker are moved or deleted; a staging folder of an interrupted
    training run ("training") is left for --resume / --overwrite to decide.
    """
    output_dir = Path(output_dir)
    staging = staging_dir(output_dir)
    replaced = output_dir.with_name(output_dir.name + REPLACED_SUFFIX)
    if _marker(replaced) == "replaced":
        if not output_dir.exists():
            # Cut between the two renames of the fallback swap: the new run is whole in staging.
            source = staging if _marker(staging) == "complete" else replaced
            logger.warning("finishing an interrupted swap: moving %s to %s", source, output_dir)
            os.rename(source, output_dir)
        if replaced.exists():
            logger.warning("removing %s, the previous output directory left by an interrupted swap", replaced)
            _remove_marked_tree(replaced)
    state = _marker(staging)
    if state == "complete":
        logger.warning("finishing an interrupted swap: the completed run in %s replaces %s", staging, output_dir)
        swap_into_place(staging, output_dir)
    elif state == "replaced":
        logger.warning("removing %s, the previous output directory left by an interrupted swap", staging)
        _remove_marked_tree(staging)
    if output_dir.is_dir() and _marker(output_dir) is not None:
        (output_dir / MARKER).unlink()


def _is_main_process() -> bool:
    """Rank 0 (or a single process), from the launcher's environment: usable before torch.distributed starts."""
    return launch_rank() == 0


def checkpoint_is_complete(checkpoint: str | Path) -> bool:
    """A checkpoint folder is complete once Trainer has written trainer_state.json, the last file of `_save_checkpoint`.

    A kill while a checkpoint is saved leaves the folder without it (or with a truncated one).
    """
    try:
        json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(folder: str | Path, delete: bool = True) -> str | None:
    """The last complete `checkpoint-N` in `folder`; incomplete ones after it are reported and deleted.

    They are deleted (by the main process) because Trainer would otherwise trip on them later (when
    rotating checkpoints or picking the last one), and they hold nothing to resume from. With
    `delete=False` (validation, which changes nothing on disk) they are only skipped.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(folder)
    if not folder.is_dir():
        return None
    numbered = []
    for child in folder.iterdir():
        prefix, _, number = child.name.partition("-")
        if prefix == PREFIX_CHECKPOINT_DIR and number.isdigit() and child.is_dir():
            numbered.append((int(number), child))
    for _, checkpoint in sorted(numbered, reverse=True):
        if checkpoint_is_complete(checkpoint):
            return str(checkpoint)
        if not delete:
            continue
        logger.warning(
            "skipping %s: it is incomplete (no trainer_state.json; the run was stopped while saving it); deleting it", checkpoint
        )
        if _is_main_process():
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def check_output_dir(output_dir: str | Path, overwrite: bool, resume: bool, cfg: RunConfig | None = None) -> str | None:
    """Decide what to do with an existing output directory, before any work is done.

    Also finishes a swap that a crash cut short (see `recover_interrupted_swap`).

    Args:
        output_dir: `training.output_dir`.
        overwrite: `--overwrite`: replace what is there (once the new run is complete) and discard an
            interrupted run's staging folder.
        resume: `--resume`: continue from the last complete checkpoint of an interrupted run (in the
            staging folder) or of a completed one (in the output directory).
        cfg: the run config, checked against the checkpoint's saved one on --resume.

    Returns:
        The checkpoint to resume from, or None.

    Raises:
        UserError: an output location that cannot be written, a non-empty directory or an interrupted
            run and neither flag given, both flags given, --resume finding no checkpoint, or a config
            that cannot continue the checkpoint's run.
    """
    path = Path(output_dir)
    staging = staging_dir(path)
    if overwrite and resume:
        raise UserError("--overwrite and --resume contradict each other: pick one.")
    check_writable(path, "training.output_dir", "dir")
    if _is_main_process():
        recover_interrupted_swap(path)
    if resume:
        last = last_complete_checkpoint(staging) or last_complete_checkpoint(path)
        if last is None:
            raise UserError(f"--resume: no checkpoint-* folder in {path} to resume from. Run without --resume to start fresh.")
        if cfg is not None:
            manifest.check_resume(cfg, last)
        logger.info("resuming from %s", last)
        return last
    if staging.exists() and not overwrite:
        raise UserError(
            f"training.output_dir: {staging} holds an interrupted run of {path}. Pass --resume to continue it, or "
            "--overwrite to discard it and start over."
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(
            f"training.output_dir: {path} is not empty. Pass --overwrite to replace it, --resume to continue from its "
            "last checkpoint, or set training.output_dir=another/dir."
        )
    return None


def resume_checkpoint(output_dir: str | Path) -> str | None:
    """The checkpoint `--resume` would continue from (an interrupted run's first), found without changing anything on disk."""
    return last_complete_checkpoint(staging_dir(output_dir), delete=False) or last_complete_checkpoint(output_dir, delete=False)


def prepare_staging(output_dir: str | Path, checkpoint: str | None) -> Path:
    """Make the staging folder the run trains into, keeping it when resuming from one of its checkpoints.

    Called by the main process as the last step before training, so a mistake found while loading
    data or model leaves an interrupted run's staging folder as it was. Resuming from a completed
    run's checkpoint starts a fresh staging folder holding (hard links to) that run's checkpoints, so
    they are still there after the swap.

    Returns:
        The staging folder.
    """
    output_dir = Path(output_dir)
    staging = staging_dir(output_dir)
    if checkpoint is not None and Path(checkpoint).parent.resolve() == staging.resolve():
        logger.info("continuing the interrupted run in %s", staging)
        return staging
    if staging.exists():
        # Trainer's constructor has already made its (empty) output_dir; only a folder with content is an old run.
        if any(staging.iterdir()):
            logger.info("discarding the interrupted run in %s", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _set_marker(staging, "training")
    if checkpoint is not None:
        # TensorBoard's event files (training.report_to: tensorboard, in runs/) come along too, so the resumed
        # run's curves continue the earlier ones; each run writes new files, never into old ones.
        previous_runs = [*Path(checkpoint).parent.glob("checkpoint-*"), Path(checkpoint).parent / TENSORBOARD_DIR]
        for previous in previous_runs:
            if previous.is_dir():
                # Trainer never rewrites a checkpoint's files in place (a resumed run saves later steps
                # under new names and rotation unlinks), so links are safe and cost no space.
                shutil.copytree(previous, staging / previous.name, copy_function=_link_or_copy)
    logger.info("training into %s; it replaces %s once the run is complete", staging, output_dir)
    return staging


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# ---------------------------------------------------------------------------------------------------
# Training


def machine_plan(cfg: RunConfig, checkpoint: str | None = None) -> hardware.Plan:
    """What llmtune picks for this run on this machine (precision, TF32, optimizer, data loading; see llmtune.hardware).

    Args:
        cfg: the run config.
        checkpoint: the checkpoint the run resumes from: under `precision: auto` its run's precision is kept
            where this machine can continue it (read from its manifest.json).
    """
    machine = hardware.detect(use_cpu=cfg.training.get("use_cpu") is True)
    return hardware.plan(cfg.training, machine, resumed=manifest.recorded_precision(checkpoint) if checkpoint else None)


def training_arguments(
    cfg: RunConfig, plan: hardware.Plan | None = None, args_class: type[TrainingArguments] | None = None, **defaults: Any
) -> tuple[TrainingArguments, list[Any]]:
    """Build TrainingArguments from `training:` (over llmtune's, the machine's and the task's defaults) and the callbacks it asks for.

    Trainer's output_dir is the staging folder (`staging_dir`): checkpoints and the final save go
    there, and `finish_run` swaps it into `training.output_dir`.

    Args:
        cfg: the run config.
        plan: the machine's defaults (`machine_plan`), computed here when not given.
        args_class: a TrainingArguments subclass for the task (Seq2SeqTrainingArguments), default TrainingArguments.
        defaults: task defaults, over the machine's and under the user's `training:` values.

    Returns:
        The TrainingArguments and Trainer callbacks (EarlyStoppingCallback when early_stopping_patience is set).
    """
    from transformers import EarlyStoppingCallback, TrainingArguments

    user = dict(cfg.training)
    extras = {k: user.pop(k) for k in list(user) if k in TRAINING_EXTRAS}
    plan = plan or machine_plan(cfg)
    kwargs = {**TRAINING_DEFAULTS, **plan.defaults, **defaults, "seed": cfg.seed, **user}
    if kwargs.get("dataloader_num_workers", 0) > 0:
        # DataLoader workers are forked after the tokenizer ran in this process; the Rust tokenizers would
        # print a warning in each and turn their threads off anyway. The workers only pad (Python).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "use_cpu" not in user and launched_on_cpus():
        # torchrun / accelerate launch on a machine without GPUs: real DDP over gloo, not N independent runs.
        kwargs["use_cpu"] = True
    elif lone_accelerate_cpu_process():
        logger.warning(
            "accelerate launch --cpu runs ONE process whatever --num_processes says (accelerate starts several CPU "
            "processes only through mpirun). For DDP on CPUs use `accelerate launch --multi_gpu --num_processes N -m "
            "llmtune ...` or `torchrun --nproc_per_node N -m llmtune ...`; see README, Multi-GPU and multi-node."
        )
    kwargs["output_dir"] = str(staging_dir(user["output_dir"]))
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
        return (args_class or TrainingArguments)(**kwargs), callbacks
    except (ValueError, TypeError) as exc:
        raise UserError(f"training: transformers.TrainingArguments rejects these settings: {redact(str(exc))}") from exc


@dataclass
class RunSetup:
    """What a training run is set up with, built once by `load_config` (`run_setup`) and used by `make_trainer`.

    Attributes:
        checkpoint: the checkpoint --resume continues from, as found at validation (its precision counts under auto).
        plan: the machine's defaults (`machine_plan`).
        args: the run's TrainingArguments.
        callbacks: the Trainer callbacks `training:` asks for (early stopping).
    """

    checkpoint: str | None
    plan: hardware.Plan
    args: TrainingArguments
    callbacks: list[Any]


def run_setup(cfg: RunConfig, checkpoint: str | None = None) -> RunSetup:
    """Build the run's TrainingArguments from `training:` over the task's defaults (its registry row) and the machine's.

    Raises:
        UserError: TrainingArguments rejects the merged values (including a conflict with a task default).
    """
    from llmtune.tasks import registry

    plan = machine_plan(cfg, checkpoint)
    task = registry.task_for_config(cfg)
    args, callbacks = training_arguments(cfg, plan, task.arguments(), **dict(task.training_defaults))
    return RunSetup(checkpoint, plan, args, callbacks)


def log_before_save() -> Any:
    """A Trainer callback that logs the training loss at every step that evaluates or saves a checkpoint.

    Trainer keeps the loss of the steps since its last log in memory only; logged, it lands in
    `log_history`, which each checkpoint's trainer_state.json carries. A run resumed from any
    checkpoint then knows the summed loss of every step before it (see `whole_run_train_loss`).
    """
    from transformers import TrainerCallback

    class LogBeforeSave(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if control.should_save or control.should_evaluate:
                control.should_log = True
            return control

        on_epoch_end = on_step_end

    return LogBeforeSave()


def run_tokenizer(cfg: RunConfig, checkpoint: str | None, texts: Any) -> Any:
    """The tokenizer of a training run: the one saved in the checkpoint when resuming, else `load_tokenizer`.

    A resumed run must see the token ids its weights were trained with; training a tokenizer again
    (tokenizer.train) could give other ids. A tokenizer trained by an earlier run on the same data and
    settings is taken from llmtune's cache (`llmtune.cache`).

    Raises:
        UserError: resuming a run that trains its tokenizer from a checkpoint without tokenizer files.
    """
    from llmtune.cache import tokenizer_key
    from llmtune.modeling import load_tokenizer

    if checkpoint is not None:
        if (Path(checkpoint) / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            logger.info("resuming with the tokenizer saved in %s", checkpoint)
            return AutoTokenizer.from_pretrained(checkpoint)
        if cfg.tokenizer.train is not None:
            raise UserError(
                f"--resume: {checkpoint} has no tokenizer files, and tokenizer.train would train a different one. "
                "Start over with --overwrite."
            )
    return load_tokenizer(cfg.model, cfg.tokenizer, texts, cfg.data.max_length, tokenizer_key(cfg))


def make_trainer(
    cfg: RunConfig,
    model: Any,
    tokenizer: Any,
    encoded: Any,
    checkpoint: str | None,
    training_defaults: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    trainer_class: type[Trainer] | None = None,
    **trainer_kwargs: Any,
) -> Trainer:
    """Build the Trainer of a training command over its train/validation splits, training into the staging folder.

    The staging folder is made (or an interrupted run's discarded, unless resuming from it) here, the
    last step before training: by then data, tokenizer and model have all loaded, so a mistake in any
    of them changes nothing on disk. The output directory itself is untouched until `finish_run`.

    Args:
        cfg: the run config (`training:` and seed).
        model: the model to train.
        tokenizer: saved with the model (`processing_class`).
        encoded: splits with `train` and `validation`.
        checkpoint: the checkpoint the run resumes from (from `check_output_dir`), or None.
        training_defaults: the task's run-time TrainingArguments defaults (from its collator), set where the
            user's `training:` leaves them on the TrainingArguments `load_config` built (`cfg.setup`).
        callbacks: the task's own Trainer callbacks.
        trainer_class: a Trainer subclass for the task (default transformers.Trainer).
        trainer_kwargs: the task's collator, metrics and the like.
    """
    from transformers import Trainer

    setup = cfg.setup
    if setup is None or setup.checkpoint != checkpoint:
        # A config validated without this machine in mind (on_this_machine=False), or a checkpoint that moved
        # since validation (an interrupted swap finished by check_output_dir): set up for this run now.
        setup = run_setup(cfg, checkpoint)
    plan, args, requested = setup.plan, setup.args, list(setup.callbacks)
    for key, value in (training_defaults or {}).items():
        if key not in cfg.training:
            setattr(args, key, value)
    # Attention is transformers' choice: SDPA wherever the model supports it (eager otherwise); said here, not set.
    logger.info("%s; attention: %s", plan.summary(), getattr(model.config, "_attn_implementation", None) or "the model's default")
    if getattr(cfg, "peft", None) is not None:
        # One place for every task: the registry row says which peft task type fits. Before the staging folder
        # exists, so a bad peft.target_modules changes nothing on disk.
        from llmtune import lora
        from llmtune.tasks import registry

        model = lora.wrap(model, cfg.peft, registry.task_for_config(cfg), lora.base_name(cfg.model.name_or_path), cfg.model.revision)
    record = manifest.for_training(cfg, args, precision=plan.record())
    requested.append(manifest.run_recorder(cfg, record))
    trainer = (trainer_class or Trainer)(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        callbacks=[log_before_save(), *requested, *(callbacks or [])],
        **trainer_kwargs,
    )
    if getattr(cfg, "peft", None) is not None:
        lora.keep_generation_config_on_base(trainer.model)
    from llmtune.terminal import use_training_display

    use_training_display(trainer)
    # Every process has passed check_output_dir before the main one creates the staging folder,
    # and none starts training before it exists.
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        prepare_staging(cfg.training["output_dir"], checkpoint)
    trainer.accelerator.wait_for_everyone()
    return trainer


def whole_run_train_loss(trainer: Trainer, training_loss: float, checkpoint: str | None) -> float | None:
    """The mean training loss over every step of the run, including those before a resume.

    Trainer's `train_loss` covers only the steps of this `train()` call. The steps before the
    checkpoint are summed from the logged losses in its `log_history` (`LogBeforeSave` guarantees
    a log at the checkpoint's step).

    Returns:
        The whole-run mean, or None when the checkpoint's log does not reach its step (a checkpoint
        written without `LogBeforeSave`).
    """
    end = trainer.state.global_step
    if checkpoint is None:
        return training_loss
    start = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    summed, last = 0.0, 0
    for entry in trainer.state.log_history:
        if "loss" in entry and last < entry["step"] <= start:
            summed += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    if last != start:
        return None
    return (summed + training_loss * (end - start)) / max(end, 1)


def train_and_evaluate(trainer: Trainer, checkpoint: str | None, test_dataset: Any = None) -> dict[str, Any]:
    """Train (or resume), then evaluate on the validation set and, when there is one, the test set.

    Returns:
        train_* metrics from training (train_loss over the whole run, also after a resume),
        eval_* from the validation set, test_* from the test set.
    """
    if checkpoint is not None and (record := manifest.run_manifest(trainer)) is not None:
        record["resumed_from"] = str(checkpoint)
    try:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException:
        # A failed run's staging folder is kept for --resume only when it holds a checkpoint to resume from.
        staging = Path(trainer.args.output_dir)
        if trainer.is_world_process_zero() and staging.is_dir() and last_complete_checkpoint(staging) is None:
            logger.info("removing %s: the run failed before its first checkpoint", staging)
            _remove_marked_tree(staging)
        raise
    metrics = {k if k.startswith("train_") else f"train_{k}": v for k, v in train_result.metrics.items()}
    whole = whole_run_train_loss(trainer, train_result.training_loss, checkpoint)
    if whole is not None:
        metrics["train_loss"] = whole
    else:
        # Say what the number covers rather than pass it off as the whole run's.
        metrics["train_loss_since_resume"] = metrics.pop("train_loss")
        logger.warning("train_loss_since_resume covers only the steps after %s (its log does not reach its step)", checkpoint)
    metrics.update(trainer.evaluate())
    if test_dataset is not None:
        metrics.update(trainer.evaluate(test_dataset, metric_key_prefix="test"))
    from llmtune.terminal import quiet

    if not quiet():
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


def write_model_card(
    output_dir: Path,
    cfg: RunConfig,
    metrics: dict[str, Any],
    command: str,
    pipeline_tag: str,
    folder: Path | None = None,
    usage: str | None = None,
    about: str | None = None,
    adapter: bool = False,
    task: Task | None = None,
    labels: list[str] | None = None,
) -> None:
    """Write a model card (README.md) saying how the model was made and how to use it.

    Args:
        output_dir: where the model will live (named in the card).
        folder: where to write the card now (the staging folder), by default `output_dir`.
        usage: the Python snippet of the "Use" section; default a `pipeline(pipeline_tag)` call.
        about: a paragraph under the title saying what the folder holds (a LoRA adapter, a merged model).
        adapter: the folder holds a peft adapter: the card's metadata names the peft library and the base model.
        task: the task's registry row: the "Use" section also shows its llmtune command (`cli_usage`).
        labels: a classifier's label names in id order, for the definitions of its averaged metrics.
    """
    from llmtune import __version__

    base = cfg.model.name_or_path or f"random init ({cfg.model.from_config.get('model_type')} from config)"
    train_file = cfg.data.train_file
    if cfg.data.hub:
        data = cfg.data.hub.path
    elif isinstance(train_file, str):
        data = Path(train_file).name
    else:  # task: seq2seq's parallel text files
        data = f"{Path(train_file.source).name} / {Path(train_file.target).name}"
    rows = "\n".join(
        f"| {name} | {value:.4f} | {definition} |" if isinstance(value, float) else f"| {name} | {value} | {definition} |"
        for name, value, definition in card_metrics(metrics, labels)
    )
    usage = usage or f'from transformers import pipeline\n\npipe = pipeline("{pipeline_tag}", model={python_string(output_dir)})'
    command_line = cli_usage(task, output_dir) if task is not None else None
    if command_line:
        usage += f"\n```\n\nOr with llmtune:\n\n```bash\n{command_line}"

    # The Hub's metadata for an adapter: the peft library and the base model it applies to.
    library = f"peft\nbase_model: {base}" if adapter else "transformers"
    card = f"""---
library_name: {library}
pipeline_tag: {pipeline_tag}
tags: [llmtune{', lora' if getattr(cfg, 'peft', None) is not None else ''}]
---

# {output_dir.name}
{f"{chr(10)}{about}{chr(10)}" if about else ""}
Trained with `llmtune {command}` (llmtune {__version__}).

- Base model: {base}
- Training data: {data}
- Seed: {cfg.seed}
- Full configuration: `llmtune.yaml` in this folder (re-run with `llmtune {command} llmtune.yaml`).

## Results

Evaluation metrics of the final model (all of them, with the run's speed figures, are in `metrics.json`).

| metric | value | definition |
| --- | --- | --- |
{rows}

## Use

```python
{usage}
```
"""
    write_text_atomically((folder or output_dir) / "README.md", card)


# Trainer's speed figures, left out of the model card (metrics.json keeps them).
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_total_flos")
GENERIC_DEFINITIONS = {
    "loss": "Trainer's evaluation loss: the model's own loss, averaged over the evaluation batches",
    "gen_len": "mean length in tokens of the generated outputs",
}


def card_metrics(metrics: dict[str, Any], labels: list[str] | None = None) -> list[tuple[str, Any, str]]:
    """The model card's results: (name, value, definition) of each eval_/test_ metric and the train loss, no speed figures.

    Definitions come from the run's own `metrics_info` where it reports one (seq2seq), else from the
    definitions `llmtune evaluate` gives the same metrics (classification, language modelling).
    """
    from llmtune.lm import LM_DEFINITIONS

    info = dict(metrics.get("metrics_info") or {})
    if labels and len(labels) > 1:
        from llmtune.evaluation.classification import classification_info

        info = {**classification_info(labels), **info}
    out = []
    for name, value in metrics.items():
        prefix, _, metric = name.partition("_")
        if isinstance(value, (dict, list)) or name.endswith(SPEED_SUFFIXES) or not (prefix in ("eval", "test") or name == "train_loss"):
            continue
        entry = info.get(name) or info.get(f"eval_{metric}") or {}
        definition = entry.get("definition") or LM_DEFINITIONS.get(metric) or GENERIC_DEFINITIONS.get(metric, "")
        if name == "train_loss":
            definition = "mean training loss over every optimizer step of the run"
        elif prefix == "test":
            definition = f"{definition} (test data)" if definition else "on the test data"
        out.append((name, value, definition.replace("|", "/")))
    return out


def python_string(path: str | Path) -> str:
    """`path` as a Python string literal for a model card's snippet: double-quoted, with any quote or backslash escaped."""
    return json.dumps(str(path), ensure_ascii=False)


def cli_usage(task: Task, folder: Path) -> str | None:
    """The llmtune command that uses a trained model of `task` (its registry row's inference command, else evaluate).

    The folder is shell-quoted where it needs it (a space, a quote), so the line pastes as it is.
    """
    model = shlex.quote(str(folder))
    if task.inference == "predict":
        return f"echo 'a sentence to classify' | llmtune predict --model {model} --input -   # JSON lines: label, score, probabilities"
    if task.inference == "generate":
        return f'llmtune generate --model {model} --prompt "Your text here"   # JSON lines: the completion'
    return f"llmtune evaluate --model {model} data.validation_file=texts.txt   # perplexity on your own text"


def finish_run(trainer: Trainer, cfg: RunConfig, metrics: dict[str, Any], task: Task, usage: str | None = None) -> dict[str, Any]:
    """Save the model, tokenizer, resolved config, manifest.json, metrics, model card and training_curves.png, then swap them into place.

    The model card names `task`'s training command and pipeline tag (its registry row).

    Everything is written into the staging folder, which then replaces `training.output_dir` in one
    rename (`swap_into_place`). Only the main process writes and swaps (under torchrun/accelerate every
    rank runs this); the others wait for it.

    Args:
        usage: the model card's "Use" snippet (see `write_model_card`).

    Returns:
        The JSON-safe metrics.
    """
    from llmtune.config import save_config

    peft = getattr(cfg, "peft", None)
    if peft is not None:
        from llmtune import lora

        metrics = {**metrics, **lora.parameter_counts(trainer.model)}
    metrics = clean_metrics(metrics)
    staging = Path(trainer.args.output_dir)
    output_dir = Path(cfg.training["output_dir"])
    # The model card names the folder by its absolute path: a card is read from anywhere, a relative path works only here.
    card_dir = output_dir.resolve()
    # On a PeftModel, Trainer saves the adapter (adapter_config.json, adapter_model.safetensors) and the tokenizer.
    trainer.save_model(str(staging))
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_config(cfg, staging / "llmtune.yaml")
        manifest.write(manifest.run_manifest(trainer) or manifest.for_training(cfg, trainer.args), staging)
        write_text_atomically(staging / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        about = None
        if peft is not None:
            lora.save_model_config(trainer.model, staging)
            about, usage = lora.adapter_card(task, card_dir, cfg.model.name_or_path, peft.merge)
        id2label = getattr(getattr(trainer.model, "config", None), "id2label", None) if task.name == "classification" else None
        labels = [id2label[i] for i in sorted(id2label)] if id2label else None
        card = {"task": task, "labels": labels}
        write_model_card(
            card_dir, cfg, metrics, task.command, task.pipeline_tag, folder=staging, usage=usage, about=about, adapter=peft is not None, **card
        )
        if peft is not None and peft.merge:
            # Last: the merge folds the adapters into the model's layers in place.
            merged = staging / lora.MERGED_DIR
            lora.save_merged(trainer.model, trainer.processing_class, merged)
            about, usage = lora.merged_card(task, card_dir / lora.MERGED_DIR, cfg.model.name_or_path)
            write_model_card(card_dir / lora.MERGED_DIR, cfg, metrics, task.command, task.pipeline_tag, folder=merged, usage=usage, about=about, **card)
        from llmtune.plots import training_curves

        training_curves(trainer.state.log_history, staging / "training_curves.png")
        swap_into_place(staging, output_dir)
        logger.info("saved the run in %s", output_dir)
    trainer.accelerator.wait_for_everyone()
    return metrics
