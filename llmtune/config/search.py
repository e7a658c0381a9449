"""Checks of a training config's `search:` section (`llmtune tune`, `llmtune validate`) beyond its schema.

The schema (`SearchSection`, `ParamSpec`) checks each dimension on its own: known keys, a non-empty range, choices
for a categorical. What needs the rest of the config is checked here: every `search.space` key must be a key of
the config and take every value the search can give it, and `search.metric` must be a metric the run reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmtune.config.loader import RawConfig, apply_overrides, read_yaml
from llmtune.errors import ConfigError, UserError
from llmtune.tasks import registry

# The statistics llmtune.lm.lm_metrics reports for the language-model tasks (eval_ prefixed by Trainer).
LM_METRICS = ("perplexity", "nll_per_token", "token_accuracy")
# Keys a study sets itself, with why they cannot be searched.
NOT_SEARCHED = {
    "seed": "the seed (the sampler is seeded with it, and trials must differ only in their values)",
    "training.output_dir": "training.output_dir (the study puts each trial in <output_dir>/trial-NNN)",
}
# What one seq2seq `metrics:` entry reports (llmtune.tasks.seq2seq.build_compute_metrics).
SEQ2SEQ_REPORTED = {"rouge": ("rouge1", "rouge2", "rougeL", "rougeLsum")}


def reported_metrics(cfg: Any) -> list[str]:
    """The validation metrics a training config's run reports (`eval_*`), the values `search.metric` can name.

    Args:
        cfg: a validated finetune or pretrain-mlm config.

    Returns:
        eval_loss, then the task's own: classification's `metrics:` (f1/precision/recall also as `_weighted` when
        there are more than two labels), seq2seq's (rouge as rouge1/rouge2/rougeL/rougeLsum) and gen_len, or the
        language-model statistics of causal-lm and masked-lm.
    """
    task = registry.task_for_config(cfg)
    names = ["loss"]
    if not task.metrics:
        names += LM_METRICS
    elif task.name == "classification":
        from llmtune.metrics.classification import AVERAGED

        names += cfg.metrics
        names += [f"{m}_weighted" for m in cfg.metrics if m in AVERAGED]
    else:
        names += [reported for m in cfg.metrics for reported in SEQ2SEQ_REPORTED.get(m, (m,))] + ["gen_len"]
    return [f"eval_{name}" for name in names]


def _value_text(value: Any) -> str:
    """An override's value text that YAML reads back as `value` (JSON is YAML; numbers, strings, booleans, null)."""
    return json.dumps(value)


def _resolved(cfg: Any, key: str) -> Any:
    """The value of a dotted config key in a validated config (training keys as TrainingArguments' types)."""
    node: Any = cfg.model_dump(mode="python")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _known_key(schema: Any, key: str) -> bool:
    """Whether a dotted key is a schema field (any depth) or a `training:` key, so an unknown one gets its own message."""
    from pydantic import BaseModel

    from llmtune.config.validate import _section_class

    parts = key.split(".")
    if parts[0] in ("training", "generation"):
        return len(parts) == 2  # checked against TrainingArguments / GenerationConfig by the load
    cls: type[BaseModel] | None = schema
    for depth, part in enumerate(parts):
        field = cls.model_fields.get(part) if cls else None
        if field is None:
            return False
        if depth < len(parts) - 1:
            cls = _section_class(field.annotation)
            if cls is None:
                # A free-form mapping field (model.from_config): any key below it is the user's.
                return "dict" in str(field.annotation)
    return True


def _schema_keys(schema: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a schema's sections (for "did you mean" on a space key)."""
    from llmtune.config.schema import flag_option
    from llmtune.config.validate import _section_class

    keys = []
    for name, field in schema.model_fields.items():
        if flag_option(field) or name == "search":
            continue
        section = _section_class(field.annotation)
        keys += _schema_keys(section, f"{prefix}{name}.") if section is not None else [f"{prefix}{name}"]
    return keys


def search_problems(command: str, path: str | Path, overrides: list[str] | None, cfg: Any) -> list[str]:
    """Check `search:` against the rest of the config: each space key with each of its values, and the metric.

    Every space key is loaded (through `load_config`, as a trial will be) with `key=value` overrides for low, high
    and every choice, `search:` removed, so the values meet the same checks a trial's config does (the schema's,
    TrainingArguments', the model's). A float dimension over a key that takes whole numbers is refused too: the
    load would quietly accept 8.0 for a batch size, and a trial then get 8.37.

    Args:
        command: finetune or pretrain-mlm.
        path: the config file (for line numbers).
        overrides: the command line's overrides.
        cfg: the validated config, with `search` set.

    Returns:
        One problem per bad key (its line, its value and the fix) and for a metric the run does not report.
    """
    from llmtune.config import SCHEMAS, load_config
    from llmtune.config.validate import suggest

    raw = read_yaml(path)
    apply_overrides(raw, list(overrides or []))
    search = cfg.search
    problems: list[str] = []
    schema = SCHEMAS[command]
    for key, spec in search.space.items():
        where = raw.where(("search", "space", key))
        if key.split(".")[0] == "search" or key in NOT_SEARCHED:
            reason = NOT_SEARCHED.get(key, "the search's own settings")
            problems.append(f"{where}: cannot search {reason}; remove it from search.space.")
            continue
        if not _known_key(schema, key):
            hint = suggest(key, _schema_keys(schema)) or " Name a config key as a key.path=value override would (e.g. training.learning_rate, data.max_length)."
            problems.append(f"{where}: '{key}' is not a key of a {command} config.{hint}")
            continue
        for label, value in spec.probes():
            try:
                trial = load_config(command, path, [*(overrides or []), "~search", f"{key}={_value_text(value)}"], on_this_machine=False)
            except ConfigError as exc:
                reasons = "; ".join(p.replace(f"{key} (command-line override): ", "") for p in exc.problems)
                problems.append(f"{where}: {label} = {_value_text(value)} does not fit {key}: {reasons}")
                break
            except UserError as exc:
                problems.append(f"{where}: {label} = {_value_text(value)} does not fit {key}: {exc}")
                break
            resolved = _resolved(trial, key)
            if spec.type == "float" and isinstance(resolved, int) and not isinstance(resolved, bool):
                problems.append(
                    f"{where}: {key} takes whole numbers, but type: float would try values between them; use type: int "
                    f"(or type: categorical with the values to try)."
                )
                break
    metrics = reported_metrics(cfg)
    if search.metric not in metrics:
        weighted = " (the _weighted ones only with more than two labels)" if any(m.endswith("_weighted") for m in metrics) else ""
        problems.append(
            f"{raw.where(('search', 'metric'))}: this run does not report '{search.metric}'.{suggest(search.metric, metrics)} "
            f"It reports: {', '.join(metrics)}{weighted}."
        )
    return problems
