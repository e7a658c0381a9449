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


def test_the_registry_lists_the_four_tasks_of_this_version() -> None:
    assert registry.task_names() == ("classification", "causal-lm", "masked-lm", "seq2seq")
    assert registry.task_names("finetune") == ("classification", "causal-lm", "seq2seq")
    assert registry.training_commands() == ("finetune", "pretrain-mlm")
    assert registry.eval_kinds() == ("classification", "causal-lm", "masked-lm", "generation", "seq2seq")


@pytest.mark.parametrize("task", registry.TASKS, ids=TASK_IDS)
def test_each_task_has_its_schema_module_and_functions(task: registry.Task) -> None:
    assert SCHEMAS[task.command].__name__ == task.schema
    module = task.load()
    for role in ("prepare_data", "collator"):
        assert callable(task.function(role)), role
    assert callable(module.run)
    from transformers import Trainer

    assert issubclass(task.trainer(), Trainer)
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
    # The smoke test loads the output directory with the pipeline the model card names, or, where transformers 5
    # has no such pipeline (text2text-generation), with the task's AutoModelFor... class.
    from transformers.pipelines import SUPPORTED_TASKS

    loader = f'pipeline("{task.pipeline_tag}"' if task.pipeline_tag in SUPPORTED_TASKS else f"{task.auto_class}.from_pretrained("
    assert any(loader in source for _, source in tests), tests


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


def test_task_training_defaults_are_fields_of_the_tasks_training_arguments() -> None:
    import dataclasses

    from transformers import TrainingArguments

    for task in registry.TASKS:
        assert issubclass(task.arguments(), TrainingArguments), task.name
        fields = {f.name for f in dataclasses.fields(task.arguments())}
        assert {key for key, _ in task.training_defaults} <= fields, task.name
    # Seq2SeqTrainer evaluates what the model generates only with Seq2SeqTrainingArguments.predict_with_generate.
    assert dict(registry.task("seq2seq").training_defaults)["predict_with_generate"] is True


def _tiny_classification(tmp_path: Path, **training: object) -> Path:
    from conftest import sentiment_rows, tiny_classification_config, write_config, write_tsv

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(16, seed=1))
    return write_config(tmp_path / "cfg.yaml", tiny_classification_config(train, train, tmp_path / "run", **training))


def test_validation_builds_the_training_arguments_the_trainer_uses(tmp_path: Path) -> None:
    """load_config builds TrainingArguments once (user keys + the task's and the machine's defaults); the Trainer gets that object."""
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification

    from llmtune import runs
    from llmtune.config import load_config

    cfg = load_config("finetune", _tiny_classification(tmp_path, learning_rate=3e-4))
    args = cfg.setup.args
    assert args.train_sampling_strategy == "group_by_length"  # classification's registry default
    assert args.learning_rate == 3e-4 and args.report_to == []  # the user's key; llmtune's report_to: none
    assert args.output_dir == str(runs.staging_dir(tmp_path / "run"))
    rows = Dataset.from_dict({"input_ids": [[1, 2, 3]] * 4, "labels": [0, 1, 0, 1]})
    model = BertForSequenceClassification(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))
    trainer = runs.make_trainer(cfg, model, None, {"train": rows, "validation": rows}, None)
    assert trainer.args is args


def test_a_conflict_with_a_task_default_fails_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TrainingArguments' own checks see llmtune's defaults at validation time, not first at run time."""
    import dataclasses

    from llmtune.config import ConfigError, load_config

    # A task default (load_best_model_at_end) that contradicts the user's strategies only once merged with them.
    row = dataclasses.replace(registry.task("classification"), training_defaults=(("load_best_model_at_end", True),))
    monkeypatch.setattr(registry, "TASKS", (row, *registry.TASKS[1:]))
    path = _tiny_classification(tmp_path, eval_strategy="epoch", save_strategy="steps")
    with pytest.raises(ConfigError) as caught:
        load_config("finetune", path)
    assert "transformers.TrainingArguments rejects these settings" in str(caught.value)
    assert "load_best_model_at_end" in str(caught.value)
    monkeypatch.undo()
    assert load_config("finetune", path).setup.args.load_best_model_at_end is False
