"""`llmtune evaluate`: score a trained model on a data set, with CI gates on the metrics.

The kind of evaluation (`eval.kind`, or the model's architecture) picks a row of the task registry's
`EVALUATIONS`, whose module (under `llmtune.evaluation`) names the metrics it produces (known before any
data is loaded, so a gate on an unknown metric fails at once) and computes them. A new kind of
evaluation is one more module and one more row.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.errors import GateFailure, UserError
from llmtune.evaluation.common import PREFIX, Context, resolve_data
from llmtune.files import write_text_atomically
from llmtune.runs import check_writable, clean_metrics
from llmtune.tasks import registry

if TYPE_CHECKING:
    from llmtune.config.schema import EvaluateConfig

logger = logging.getLogger(__name__)

# Config sections that only one kind of evaluation reads (a warning says so when another kind runs).
SECTION_KINDS = {"mlm": "masked-lm", "generation": "generation", "stop": "generation"}


@dataclass
class Gate:
    """`--fail-under METRIC=VALUE` (op "under") or `--fail-over METRIC=VALUE` (op "over")."""

    metric: str
    op: str
    threshold: float

    @property
    def flag(self) -> str:
        return f"--fail-{self.op}"


# ---------------------------------------------------------------------------------------------------
# Gates and the command


def parse_gates(fail_under: list[str], fail_over: list[str]) -> list[Gate]:
    """Parse `METRIC=VALUE` gate options.

    Raises:
        UserError: an option is not METRIC=NUMBER.
    """
    gates = []
    for op, items in (("under", fail_under), ("over", fail_over)):
        for item in items:
            metric, sep, value = item.partition("=")
            try:
                threshold = float(value)
            except ValueError:
                threshold = None
            if not sep or not metric.strip() or threshold is None:
                raise UserError(f"--fail-{op} {item!r}: expected METRIC=NUMBER, e.g. --fail-{op} eval_accuracy=0.8.")
            gates.append(Gate(metric.strip(), op, threshold))
    return gates


def _resolve_gates(gates: list[Gate], names: list[str], kind: str, left_out: list[str] | None = None) -> list[Gate]:
    """Check every gate names a metric this kind of evaluation reports (`accuracy` = `eval_accuracy`).

    `left_out`: metrics of the kind that the config's `metrics:` does not choose (a gate on one says so).
    """
    resolved, unknown, unchosen = [], [], []
    for gate in gates:
        name = gate.metric if gate.metric in names else PREFIX + gate.metric
        if name not in names:
            unknown.append(f"{gate.flag} {gate.metric}")
            if name in (left_out or []):
                unchosen.append(gate.metric)
        resolved.append(Gate(name, gate.op, gate.threshold))
    if unknown:
        hint = f" metrics: leaves out {', '.join(unchosen)}; add it there or drop the gate." if unchosen else ""
        raise UserError(f"unknown metric in {'; '.join(unknown)}: a {kind} evaluation reports {', '.join(names)}.{hint}")
    return resolved


def chosen_metrics(cfg: EvaluateConfig, kind: str, model_config: Any, evaluation: Any) -> list[str]:
    """The eval_* names this run reports: the kind's, narrowed to `metrics:` where the config sets it.

    Raises:
        UserError: `metrics:` names a metric this kind does not report, or the kind has fixed metrics.
    """
    if cfg.metrics is None:
        return evaluation.metric_names(model_config)
    accepted = registry.evaluation(kind).accepted_metrics
    wrong = [name for name in cfg.metrics if name not in accepted]
    if not accepted:
        fixed = ", ".join(evaluation.metric_names(model_config))
        raise UserError(f"metrics: a {kind} evaluation has fixed metrics ({fixed}); remove metrics: (or ~metrics on the command line).")
    if wrong:
        raise UserError(
            f"metrics: {', '.join(wrong)} is not reported by a {kind} evaluation; choose among {', '.join(accepted)} "
            "(or set eval.kind to the kind that reports it)."
        )
    return evaluation.metric_names(model_config, cfg.metrics)


def check_gates(result: dict[str, Any], gates: list[Gate]) -> None:
    """Compare the metrics against their gates (after they were printed).

    Raises:
        GateFailure: one line per missed gate (exit code 3).
    """
    failed = []
    for gate in gates:
        name = gate.metric if gate.metric in result else PREFIX + gate.metric
        value = result.get(name)
        if not isinstance(value, (int, float)):
            failed.append(f"{name} has no value (got {value!r}); required by {gate.flag} {gate.threshold:g}")
        elif (value < gate.threshold) if gate.op == "under" else (value > gate.threshold):
            relation = "below" if gate.op == "under" else "above"
            failed.append(f"{name} = {value:.6g} is {relation} {gate.threshold:g} ({gate.flag})")
    if failed:
        raise GateFailure(f"{len(failed)} of {len(gates)} gates failed:\n" + "\n".join(failed))


def detect_kind(cfg: EvaluateConfig, model_config: Any) -> str:
    """eval.kind, or the kind the model's architecture implies."""
    from llmtune.modeling import architecture_kind

    kind = cfg.eval.kind if cfg.eval.kind != "auto" else architecture_kind(model_config)
    if kind is None:
        found = ", ".join(getattr(model_config, "architectures", None) or []) or "none in config.json"
        raise UserError(f"eval.kind: cannot tell the kind of evaluation from the model's architectures ({found}); set eval.kind to one of {', '.join(registry.eval_kinds())}.")
    if kind not in registry.eval_kinds():
        raise UserError(f"eval.kind: '{kind}' evaluation is not available in this version of llmtune; available: {', '.join(registry.eval_kinds())}.")
    return kind


def gates(cfg: EvaluateConfig) -> list[Gate]:
    """The `--fail-under/--fail-over` gates of the config (`cfg.fail_under`, `cfg.fail_over`).

    Raises:
        UserError: an option is not METRIC=NUMBER.
    """
    return parse_gates(cfg.fail_under, cfg.fail_over)


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate a trained model without training it.

    Args:
        cfg: the validated evaluate config; the names of its gates (`fail_under`, `fail_over`) are checked
            before evaluating.

    Returns:
        kind, model, split, the eval_* metrics, metrics_info (definition and parameters of each metric) and
        what the kind adds (per-class report, confusion matrix, perplexity definition, files written).
        Written to output_dir/metrics.json when output_dir is set. Gates are checked by `check_gates`.

    Raises:
        UserError: unknown gate metric, unreachable model, bad data.
    """
    from transformers import AutoConfig, set_seed

    from llmtune import manifest
    from llmtune.modeling import from_pretrained

    requested = gates(cfg)
    if cfg.output_dir:
        check_writable(cfg.output_dir, "--output-dir", "dir")
    model_config = from_pretrained(
        AutoConfig, "model.name_or_path", cfg.model.name_or_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    kind = detect_kind(cfg, model_config)
    for key, used_by in SECTION_KINDS.items():
        if key in cfg.model_fields_set and kind != used_by:
            logger.warning("%s: ignored, it applies to eval.kind %s and this is a %s evaluation", key, used_by, kind)
    evaluation = registry.evaluation(kind).load()
    every = evaluation.metric_names(model_config)
    names = chosen_metrics(cfg, kind, model_config, evaluation)
    _resolve_gates(requested, names, kind, left_out=[name for name in every if name not in names])
    data, seed = resolve_data(cfg)
    set_seed(seed)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else None
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    measured = evaluation.evaluate(Context(cfg, data, seed, model_config, output_dir))
    # Metrics `metrics:` left out are computed with the rest (cheap beside the forward passes) but not reported.
    measured = {k: v for k, v in measured.items() if k in names or k not in every}
    if "metrics_info" in measured:
        measured["metrics_info"] = {k: v for k, v in measured["metrics_info"].items() if k in names or k not in every}
    missing = [name for name in names if name not in measured]
    if missing:
        raise RuntimeError(f"{kind} evaluation did not produce {missing}")
    result = {"kind": kind, "model": cfg.model.name_or_path, "split": cfg.eval.split, **clean_metrics({k: measured[k] for k in names})}
    result.update({k: v for k, v in measured.items() if k not in result})
    if output_dir is not None:
        result.setdefault("files", []).insert(0, str(output_dir / "metrics.json"))
        write_text_atomically(output_dir / "metrics.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        manifest.write(manifest.for_evaluation(cfg, data, seed, model_config), output_dir)
    return result
