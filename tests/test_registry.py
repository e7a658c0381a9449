"""The task registry: every task has a schema, a shipped config, a smoke test, and every list of tasks agrees with it."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

from conftest import REPO
from llmtune.config import infer_command, read_yaml
from llmtune.config.schema import SCHEMAS, EvalSection, FinetuneConfig
from llmtune.tasks import registry

TASK_IDS = [task.name for task in registry.TASKS]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "accelerate")


def _smoke_tests() -> dict[str, list[tuple[str, str]]]:
    """task name -> (file, test function) of every test marked `@pytest.mark.smoke("<task>")` under tests/."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((REPO / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and ast.unparse(decorator.func) == "pytest.mark.smoke"
                    and decorator.args
                    and isinstance(decorator.args[0], ast.Constant)
                ):
                    found.setdefault(decorator.args[0].value, []).append((path.name, ast.get_source_segment(path.read_text(encoding="utf-8"), node)))
    return found


def test_the_registry_lists_the_three_tasks_of_this_version() -> None:
    assert registry.task_names() == ("classification", "causal-lm", "masked-lm")
    assert registry.task_names("finetune") == ("classification", "causal-lm")
    assert registry.training_commands() == ("finetune", "pretrain-mlm")
    assert registry.eval_kinds() == ("classification", "causal-lm", "masked-lm", "generation")


@pytest.mark.parametrize("task", registry.TASKS, ids=TASK_IDS)
def test_each_task_has_its_schema_module_and_functions(task: registry.Task) -> None:
    assert SCHEMAS[task.command].__name__ == task.schema
    module = task.load()
    for role in ("prepare_data", "collator"):
        assert callable(task.function(role)), role
    assert callable(module.run)
    assert list(inspect.signature(module.run).parameters) == ["cfg"]  # run(cfg) -> dict, the CLI's one call
    assert module.TASK is task  # the module runs under its own row (model class, model card tag)
    assert registry.task_of(task.command, FinetuneConfig.model_construct(task=task.name)) is task
    assert task.eval_kind in registry.eval_kinds()
    assert task.inference in (None, "predict", "generate")
    assert set(task.default_metrics) <= set(task.metrics)


@pytest.mark.parametrize("task", registry.TASKS, ids=TASK_IDS)
def test_each_task_has_a_shipped_config(task: registry.Task) -> None:
    def runs(path: Path) -> bool:
        data = read_yaml(path).data
        command = infer_command(data)
        return command == task.command and (command != "finetune" or data.get("task", FinetuneConfig.model_fields["task"].default) == task.name)

    assert [p for p in CONFIGS if runs(p)], f"no config under configs/ trains task {task.name}"


@pytest.mark.parametrize("task", registry.TASKS, ids=TASK_IDS)
def test_each_task_has_an_end_to_end_smoke_test_using_its_pipeline_tag(task: registry.Task) -> None:
    tests = _smoke_tests().get(task.name)
    assert tests, f'no test is marked @pytest.mark.smoke("{task.name}")'
    # The smoke test loads the output directory with the pipeline the model card names.
    assert any(f'pipeline("{task.pipeline_tag}"' in source for _, source in tests), tests


def test_every_smoke_marker_names_a_registered_task() -> None:
    assert set(_smoke_tests()) <= set(registry.task_names())


def test_schema_literals_come_from_the_registry() -> None:
    assert typing.get_args(FinetuneConfig.model_fields["task"].annotation) == registry.task_names("finetune")
    assert typing.get_args(EvalSection.model_fields["kind"].annotation) == ("auto", *registry.eval_kinds())
    assert FinetuneConfig.model_fields["metrics"].default == list(registry.task("classification").default_metrics)
    assert set(registry.training_commands()) <= set(SCHEMAS)


@pytest.mark.parametrize("task", registry.TASKS, ids=TASK_IDS)
def test_architecture_suffixes_give_the_tasks_evaluation_kind(task: registry.Task) -> None:
    from types import SimpleNamespace

    from llmtune.modeling import architecture_kind

    for ending in task.architectures:
        assert architecture_kind(SimpleNamespace(architectures=[f"Some{ending}"])) == task.eval_kind
    assert architecture_kind(SimpleNamespace(architectures=["SomeForTokenClassification"])) is None


@pytest.mark.parametrize("task", registry.TASKS, ids=TASK_IDS)
def test_auto_class_and_head_mapping_agree(task: registry.Task) -> None:
    """The mapping the model checks read holds exactly the model types the AutoModelFor... class builds."""
    from transformers import AutoConfig

    cls = task.model_class()
    assert cls.__name__ == task.auto_class
    tiny = {"bert": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37, "vocab_size": 99},
            "gpt2": {"n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 99}}
    for model_type, fields in tiny.items():
        config = AutoConfig.for_model(model_type, **fields)
        if model_type in task.model_types():
            assert type(cls.from_config(config)).__name__.endswith(task.architectures)
        else:
            with pytest.raises(ValueError):
                cls.from_config(config)


def test_evaluation_kinds_score_a_registered_tasks_models() -> None:
    from types import SimpleNamespace

    from llmtune.evaluation.common import PREFIX

    for row in registry.EVALUATIONS:
        assert row.model_task in registry.task_names()
        module = row.load()
        assert callable(module.evaluate)
        names = module.metric_names(SimpleNamespace(num_labels=3))
        assert names and all(name.startswith(PREFIX) for name in names), names
    automatic = {row.kind for row in registry.EVALUATIONS if row.automatic}
    assert automatic == {task.eval_kind for task in registry.TASKS}


def test_inference_commands_find_their_task() -> None:
    assert registry.by_inference("predict").name == "classification"
    assert registry.by_inference("generate").name == "causal-lm"


def test_importing_the_registry_imports_no_heavy_library() -> None:
    import subprocess
    import sys

    code = "import sys, llmtune.tasks.registry; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'pydantic', 'datasets'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
