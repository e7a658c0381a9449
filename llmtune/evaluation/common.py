"""What every kind of `llmtune evaluate` shares: the context it gets and how the data split is loaded.

Each kind of evaluation is a module of this package, listed in the task registry
(`llmtune.tasks.registry.EVALUATIONS`), with `metric_names(model_config) -> list[str]` (known before any
data is loaded, so a gate on an unknown metric fails at once) and `evaluate(ctx) -> dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune import data as data_lib
from llmtune.errors import DataError, UserError

if TYPE_CHECKING:
    from datasets import DatasetDict

    from llmtune.config.schema import EvalDataSection, EvaluateConfig

logger = logging.getLogger(__name__)

PREFIX = "eval_"


@dataclass
class Context:
    """What every kind of evaluation gets: the config, the resolved data section and seed, the model's config."""

    cfg: EvaluateConfig
    data: EvalDataSection
    seed: int
    model_config: Any
    output_dir: Path | None


def load_eval_split(data: EvalDataSection, split: str, seed: int, prepare: Callable[[DatasetDict], DatasetDict] | None = None) -> DatasetDict:
    """Load the one split to evaluate on, carving validation out of train the way training did.

    Args:
        data: the data section.
        split: validation, test or train.
        seed: the carve-out seed (training's, to get the same held-out rows).
        prepare: applied before a carve-out (e.g. label encoding, so the split is stratified like training's).

    Returns:
        A DatasetDict holding only `split`.
    """
    carve = data.validation_split is not None
    if data.hub is None:
        wanted = getattr(data, f"{split}_file")
        source = "train" if carve and split in ("train", "validation") else split
        path = data.train_file if source == "train" else wanted
        if path is None:
            also = " or data.validation_split with data.train_file" if split == "validation" else ""
            raise DataError(f"eval.split: no {split} data to evaluate on; set data.{split}_file{also} (or choose another eval.split).")
        files = {"train_file": None, "validation_file": None, "test_file": None, f"{source}_file": path}
        splits = data_lib.load_splits(data.model_copy(update=files))
    else:
        splits = data_lib.load_splits(data)
    if prepare is not None:
        splits = prepare(splits)
    if carve and "train" in splits:
        splits = data_lib.split_validation(splits, data, seed, stratify_by="labels" if "labels" in splits["train"].column_names else None)
    if split not in splits:
        raise DataError(f"eval.split: the data has no '{split}' split (it has {', '.join(splits)}).")
    return type(splits)({split: splits[split]})


def resolve_data(cfg: EvaluateConfig) -> tuple[EvalDataSection, int]:
    """The data section and seed to use: the config's, or those the model was trained with (its llmtune.yaml).

    Raises:
        UserError: no `data:` in the config and no llmtune.yaml (with a data section) in the model directory.
    """
    from llmtune.config import read_yaml
    from llmtune.config.schema import EvalDataSection

    if cfg.data is not None:
        return cfg.data, cfg.seed if cfg.seed is not None else 42
    saved = Path(cfg.model.name_or_path) / "llmtune.yaml"
    if not saved.is_file():
        raise UserError(
            f"data: no data to evaluate on. Add a data: section (e.g. data.validation_file=dev.tsv) or evaluate a model "
            f"directory trained by llmtune ({saved} not found)."
        )
    trained = read_yaml(saved).data
    if not isinstance(trained.get("data"), dict):
        raise UserError(f"data: {saved} has no data section; add data.validation_file=... to the command.")
    logger.info("evaluating on the data the model was trained with (%s)", saved)
    seed = cfg.seed if cfg.seed is not None else int(trained.get("seed", 42))
    return EvalDataSection.model_validate(trained["data"]), seed


def saved_run(cfg: EvaluateConfig) -> dict[str, Any]:
    """The model directory's llmtune.yaml (how llmtune trained it) as a mapping; empty when there is none."""
    from llmtune.config import read_yaml

    saved = Path(cfg.model.name_or_path) / "llmtune.yaml"
    return read_yaml(saved).data if saved.is_file() else {}


def load_model(kind: str, cfg: EvaluateConfig) -> tuple[Any, Any]:
    """The model and tokenizer to evaluate, loaded with the `AutoModelFor...` class of the task whose models `kind` scores."""
    from llmtune.modeling import load_for_inference
    from llmtune.tasks import registry

    task = registry.task(registry.evaluation(kind).model_task)
    return load_for_inference(task.model_class(), cfg.model, cfg.tokenizer)

