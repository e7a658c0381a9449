"""Repeatable runs: the reproducibility manifest (manifest.json) and the `--resume` config check.

Every output directory (and every checkpoint-N/ of a training run) gets a `manifest.json`: the llmtune
and package versions, the device and dtype, the sha256 of each data file, the command line, the seed,
the world size and the start time. Environment variables are never recorded (tokens live there).

`--resume` compares the config it is given with the `llmtune.yaml` saved in the checkpoint it resumes
and refuses differences that break continuation (see `HARMLESS`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.errors import UserError
from llmtune.files import write_text_atomically

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainingArguments

    from llmtune.config.schema import DataSection, RunConfig

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "llmtune.yaml"
PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "evaluate", "numpy", "peft")
DATA_FILE_KEYS = ("train_file", "validation_file", "test_file")

# Config keys a resumed run may change: they decide what is logged, evaluated, saved or where, never
# which examples are seen in which order or how the weights are updated. Everything else (model,
# tokenizer, data, seed, batch sizes, optimizer and schedule, precision, task, mlm) must match: a
# resume then continues the same run, bit for bit. The length (EXTENDING) is the one exception.
HARMLESS_TRAINING = {
    # output and logging
    "output_dir", "overwrite_output_dir", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step",
    "logging_nan_inf_filter", "log_level", "log_level_replica", "log_on_each_node", "disable_tqdm", "report_to",
    "run_name", "project", "trackio_space_id", "include_num_input_tokens_seen", "include_tokens_per_second",
    # evaluation cadence and evaluation-only settings
    "eval_strategy", "eval_steps", "eval_delay", "per_device_eval_batch_size", "eval_accumulation_steps",
    "eval_do_concat_batches", "eval_on_start", "batch_eval_metrics", "prediction_loss_only", "include_for_metrics",
    # checkpoint cadence
    "save_strategy", "save_steps", "save_total_limit", "save_on_each_node", "save_only_model",
    # the Hub
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision",
    # data loading workers (the sampler, not the workers, decides the order)
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_persistent_workers", "dataloader_pin_memory",
}
HARMLESS = {f"training.{key}" for key in HARMLESS_TRAINING} | {"metrics"}
# Allowed so a finished run can be trained further (`--resume training.num_train_epochs=4`), with a
# warning: the learning-rate schedule is laid out again over the new length, so the steps already done
# followed another schedule than an uninterrupted run of the new length would have.
EXTENDING = {"training.num_train_epochs", "training.max_steps"}


# --- the manifest -----------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """The Python version and the installed versions of the packages a run depends on (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from llmtune import __version__

    versions: dict[str, str | None] = {"llmtune": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so an edited file is hashed again; the cache makes the resume check
    # and the manifest of one run read a big corpus only once.
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    return _sha256(str(resolved), stat.st_size, stat.st_mtime_ns)


def data_sources(data: DataSection | None, keys: tuple[str, ...] = DATA_FILE_KEYS) -> list[dict[str, Any]]:
    """What a run read its data from: each local file with its sha256, or the Hub data set with its revision.

    Args:
        data: the `data:` section (None: no data, e.g. evaluate without a data section).
        keys: the data.*_file keys the command read.
    """
    if data is None:
        return []
    if data.hub is not None:
        # revision null = the Hub's default branch at the time of the run, which can move: pin one to repeat a run.
        return [{"hub": data.hub.path, "name": data.hub.name, "revision": data.hub.revision}]
    sources = []
    for key in keys:
        path = getattr(data, key, None)
        # task: seq2seq's parallel text files are a {source, target} pair: each side is a file of its own.
        named = [(f"data.{key}.{side}", getattr(path, side)) for side in ("source", "target")] if hasattr(path, "source") else [(f"data.{key}", path)]
        for name, file in named:
            if file:
                resolved = Path(file).expanduser().resolve()
                sources.append({"key": name, "path": str(resolved), "bytes": resolved.stat().st_size, "sha256": file_sha256(resolved)})
    return sources


def _redact(argv: list[str]) -> list[str]:
    """Hide the value of any `...token=VALUE` override (hub_token): secrets are never written."""
    out = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        out.append(f"{key}=<redacted>" if sep and key.lower().endswith("token") else arg)
    return out


def command_line() -> dict[str, Any]:
    """The llmtune process's command line (sys.argv), as a list and as one shell-quoted string.

    Also the interpreter's full command line (sys.orig_argv: `python -m llmtune ...` or the console
    script) and the working directory, which relative paths on the command line are relative to.
    """
    argv = _redact([str(arg) for arg in sys.argv])
    process = _redact([str(arg) for arg in getattr(sys, "orig_argv", sys.argv)])
    return {"argv": argv, "shell": shlex.join(argv), "process_argv": process, "cwd": os.getcwd()}


def training_device(args: TrainingArguments) -> tuple[dict[str, Any], str]:
    """The device and precision a Trainer trains with: ({type, name}, fp32/bf16/fp16)."""
    device = args.device
    dtype = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return device_info(device), dtype


def device_info(device: Any) -> dict[str, Any]:
    """A torch device as {type, name}: the GPU's name for cuda, the processor's for cpu."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {"type": device.type, "name": name}


def build(
    seed: int | None,
    data: DataSection | None,
    device: dict[str, Any],
    dtype: str,
    world_size: int = 1,
    data_keys: tuple[str, ...] = DATA_FILE_KEYS,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest of a run, started now.

    Args:
        seed: the run's seed.
        data: the `data:` section whose files are hashed.
        device: from `device_info`.
        dtype: fp32, bf16 or fp16 (or the model's dtype, for evaluation).
        world_size: the number of processes.
        data_keys: the data.*_file keys the command read.
        extra: more fields (e.g. resumed_from).
    """
    return {
        "versions": package_versions(),
        "command": command_line(),
        "seed": seed,
        "world_size": world_size,
        "device": device,
        "dtype": dtype,
        "data": data_sources(data, data_keys),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def for_training(
    cfg: RunConfig, args: TrainingArguments, resumed_from: str | None = None, precision: dict[str, str] | None = None
) -> dict[str, Any]:
    """The manifest of a training run (its seed is the one TrainingArguments got).

    Args:
        precision: how the precision was chosen (`hardware.Plan.record()`: resolved, requested, reason).
    """
    device, dtype = training_device(args)
    extra: dict[str, Any] = {"resumed_from": resumed_from} if resumed_from else {}
    if precision is not None:
        extra["precision"] = precision
    return build(args.seed, cfg.data, device, dtype, world_size=args.world_size, **extra)


def recorded_precision(checkpoint: str | Path) -> str | None:
    """The precision (fp32, bf16 or fp16) a checkpoint's run trained with, from its manifest.json (None: no manifest)."""
    try:
        recorded = json.loads((Path(checkpoint) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dtype = recorded.get("dtype") if isinstance(recorded, dict) else None
    return dtype if dtype in ("fp32", "bf16", "fp16") else None


def write(manifest: dict[str, Any], directory: str | Path) -> Path:
    """Write `manifest.json` into `directory` atomically (temporary file + os.replace)."""
    path = Path(directory) / MANIFEST_NAME
    write_text_atomically(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


# --- checkpoints ------------------------------------------------------------------------------------


def run_recorder(cfg: RunConfig, manifest: dict[str, Any]) -> TrainerCallback:
    """A Trainer callback that writes llmtune.yaml and manifest.json into each checkpoint-N/ as it is saved.

    So `--resume` can check its config against the run's wherever the checkpoint lives. Only the main
    process writes. On a resume it also applies this config's logging/eval/save steps, which Trainer
    would otherwise take from the checkpoint's trainer_state.json (the resume check allows changing them).
    """
    from transformers import TrainerCallback

    from llmtune.config import save_config

    class RunRecorder(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            state.compute_steps(args, state.max_steps)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not folder.is_dir():  # rotated away already (save_total_limit)
                return
            save_config(cfg, folder / CONFIG_NAME)
            write(manifest, folder)

    recorder = RunRecorder()
    recorder.manifest = manifest
    return recorder


def run_manifest(trainer: Any) -> dict[str, Any] | None:
    """The manifest a trainer's run recorder holds (built once, when training started)."""
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "manifest"):
            return callback.manifest
    return None


# --- the --resume check -----------------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _training_defaults() -> dict[str, Any]:
    """TrainingArguments' (and llmtune's extra keys') defaults, so `not set` and `set to the default` compare equal."""
    from transformers import TrainingArguments

    from llmtune.config.validate import TRAINING_EXTRAS_DEFAULTS

    defaults = {f"training.{key}": value for key, value in TRAINING_EXTRAS_DEFAULTS.items()}
    for field in dataclasses.fields(TrainingArguments):
        if field.default is not dataclasses.MISSING:
            defaults[f"training.{field.name}"] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[f"training.{field.name}"] = field.default_factory()
    return defaults


def _same(a: Any, b: Any) -> bool:
    # YAML and pydantic may hand back 1 and 1.0, or a tuple and a list, for the same setting.
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every dotted key whose value differs; absent training keys count as their default."""
    old, new = _flatten(saved), _flatten(current)
    defaults = _training_defaults()
    missing = object()
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, defaults.get(key, missing)), new.get(key, defaults.get(key, missing))
        if (a is missing and b is None) or (b is missing and a is None):
            continue  # an optional section added since the run was saved (search:, peft:): absent means null
        if not _same(a, b):
            diffs.append((key, None if a is missing else a, None if b is missing else b))
    return diffs


def _show(key: str, value: Any) -> str:
    if value is None:
        return "not set"
    if key.lower().endswith("token"):  # hub_token: a secret is never printed
        return "<redacted>"
    return json.dumps(value, ensure_ascii=False, default=str)


def current_world_size() -> int:
    """The number of processes of this launch, read before any Trainer exists."""
    from llmtune.modeling import launch_world_size

    return launch_world_size()


def check_resume(cfg: RunConfig, checkpoint: str | Path) -> None:
    """Refuse to resume `checkpoint` with a config that cannot continue its run; list harmless differences on stderr.

    Compared: the config against the checkpoint's llmtune.yaml (every key; training keys left out count
    as their TrainingArguments default), the data files' sha256 against its manifest.json, and the
    number of processes (the global batch is per-device batch x processes).

    Raises:
        UserError: naming each differing key with the run's value and this config's, and the fix.
    """
    from llmtune.config import read_yaml

    folder = Path(checkpoint)
    saved_config = folder / CONFIG_NAME
    if not saved_config.is_file():
        logger.warning(
            "--resume: %s has no %s (written by an older llmtune?), so this config cannot be checked against the run's.",
            folder, CONFIG_NAME,
        )
        return
    diffs = config_differences(read_yaml(saved_config).data, cfg.model_dump(mode="json"))
    saved_manifest = folder / MANIFEST_NAME
    if saved_manifest.is_file():
        recorded = json.loads(saved_manifest.read_text(encoding="utf-8"))
        if recorded.get("world_size") is not None and recorded["world_size"] != current_world_size():
            diffs.append(("number of processes (world size)", recorded["world_size"], current_world_size()))
        changed_paths = {key for key, _, _ in diffs}
        for source in recorded.get("data", []):
            key, path = source.get("key"), source.get("path")
            if key and key not in changed_paths and path and Path(path).is_file() and file_sha256(path) != source.get("sha256"):
                diffs.append((f"{key} (content)", f"sha256 {source['sha256'][:12]}", f"sha256 {file_sha256(path)[:12]}"))
    breaking = [d for d in diffs if d[0] not in HARMLESS | EXTENDING]
    allowed = [d for d in diffs if d[0] in HARMLESS]
    extended = [d for d in diffs if d[0] in EXTENDING]
    if breaking:
        lines = "\n".join(f"  - {key}: {_show(key, a)} in the run, {_show(key, b)} now" for key, a, b in breaking)
        raise UserError(
            f"--resume: this config cannot continue the run in {folder}; it differs from {saved_config} in:\n{lines}\n"
            f"Resume with the run's settings (its config is {saved_config}), or start a new run "
            "(--overwrite, or another training.output_dir)."
        )
    check_resumed_precision(cfg, folder)
    for key, a, b in allowed:
        logger.warning("--resume: %s changed from %s to %s (allowed: it does not change the training itself)", key, _show(key, a), _show(key, b))
    for key, a, b in extended:
        logger.warning(
            "--resume: %s changed from %s to %s: the run's length changes, and with it the learning-rate schedule from here on; "
            "the result is not what an uninterrupted run with %s would give.",
            key, _show(key, a), _show(key, b), _show(key, b),
        )


def check_resumed_precision(cfg: RunConfig, checkpoint: str | Path) -> None:
    """Say (or refuse) when `precision: auto` resolves differently on the machine a run is resumed on.

    Under auto the machine decides, so the same config may resume a bf16 GPU run on a CPU: that is not a
    config change, and the run continues in this machine's precision with a warning (the weights and
    the optimizer state are fp32 in every case). An fp16 run is the exception: its checkpoint holds the
    loss scaler's state (scaler.pt), which Trainer can only load into another fp16 run.

    Raises:
        UserError: an fp16 run with loss-scaler state resumed where fp16 is not available.
    """
    from llmtune import hardware

    folder = Path(checkpoint)
    recorded = recorded_precision(folder)
    if recorded is None:
        return
    plan = hardware.plan(cfg.training, hardware.detect(use_cpu=cfg.training.get("use_cpu") is True), resumed=recorded)
    if plan.precision == recorded:
        return
    if recorded == "fp16" and (folder / "scaler.pt").is_file():  # transformers.trainer.SCALER_NAME
        raise UserError(
            f"--resume: the run in {folder} trained in fp16 (training.precision: auto on a GPU without bf16), and its "
            f"checkpoint holds fp16 loss-scaler state (scaler.pt) that {plan.precision} training on this machine cannot "
            "continue. Resume it on a CUDA GPU, or start a new run (--overwrite, or another training.output_dir)."
        )
    logger.warning("--resume: the run trained in %s; this machine continues it in %s (%s).", recorded, plan.precision, plan.reason)


def for_evaluation(cfg: Any, data: DataSection | None, seed: int, model_config: Any) -> dict[str, Any]:
    """The manifest of `llmtune evaluate`: the evaluated split's data file, the inference device and the model's dtype."""
    from llmtune.modeling import device

    split = cfg.eval.split
    # The file load_eval_split reads: train when validation is carved out of it, else the split's own file.
    carved = data is not None and data.validation_split is not None and split in ("train", "validation")
    key = "train_file" if carved else f"{split}_file"
    # from_pretrained loads in the dtype saved in config.json (dtype="auto"), float32 when none is saved.
    dtype = str(getattr(model_config, "dtype", None) or "float32").replace("torch.", "")
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)
    return build(seed, data, device_info(device()), dtype, world_size=1, data_keys=(key,), model=cfg.model.name_or_path)
