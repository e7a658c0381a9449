"""Config loading, overrides, path resolution and validation errors (messages and exit codes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REPO, write_config
from llmtune.cli import app
from llmtune.config import load_config
from llmtune.errors import ConfigError, UserError

runner = CliRunner()

GOOD = """\
seed: 7
model:
  name_or_path: bert-base-uncased
data:
  train_file: data/train.tsv
  validation_file: data/dev.tsv
  text_column: sentence
training:
  output_dir: runs/x
  learning_rate: 3e-5
  num_train_epochs: 2
"""


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "good.yaml"
    path.parent.mkdir()
    path.write_text(GOOD)
    return path


def problems_of(path: Path, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config("finetune", path, list(overrides))
    return info.value.problems


def test_good_config_loads_with_defaults_and_typed_values(good: Path) -> None:
    cfg = load_config("finetune", good)
    assert cfg.seed == 7
    assert cfg.task == "classification"
    assert cfg.metrics == ["accuracy", "f1"]
    assert cfg.data.max_length == 128
    # `3e-5` is a string to plain YAML 1.1; llmtune reads it as the float users mean.
    assert cfg.training["learning_rate"] == pytest.approx(3e-5)
    assert isinstance(cfg.training["learning_rate"], float)


def test_relative_file_paths_resolve_against_the_config_folder(good: Path) -> None:
    cfg = load_config("finetune", good)
    assert Path(cfg.data.train_file) == good.parent / "data" / "train.tsv"
    # A hub id is left alone (no such folder next to the config).
    assert cfg.model.name_or_path == "bert-base-uncased"
    # Outputs stay relative to the working directory.
    assert cfg.training["output_dir"] == "runs/x"


def test_local_model_dir_next_to_config_resolves(good: Path) -> None:
    (good.parent / "bert-base-uncased").mkdir()
    # A model directory's config.json is read at load time (the model checks), so give it one.
    (good.parent / "bert-base-uncased" / "config.json").write_text('{"model_type": "bert"}')
    cfg = load_config("finetune", good)
    assert Path(cfg.model.name_or_path) == good.parent / "bert-base-uncased"


def test_overrides_are_yaml_scalars_and_applied_before_validation(good: Path) -> None:
    cfg = load_config(
        "finetune",
        good,
        ["training.learning_rate=1e-4", "data.max_train_samples=500", "data.text_pair_column=null", "metrics=[accuracy, recall]", "data.train_file=other.tsv"],
    )
    assert cfg.training["learning_rate"] == pytest.approx(1e-4)
    assert cfg.data.max_train_samples == 500
    assert cfg.metrics == ["accuracy", "recall"]
    # Command-line paths are the user's own, relative to where they run the command.
    assert cfg.data.train_file == "other.tsv"


def test_all_problems_are_reported_together_with_paths_lines_and_hints(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "seed: abc\n"
        "model:\n  name_or_path: x\n"
        "data:\n  train_file: t.tsv\n  text_colum: sentence\n"
        "training:\n  output_dir: out\n  learning_rat: 0.1\n  evaluation_strategy: epoch\n  num_train_epochs: lots\n"
        "metrix: [accuracy]\n"
    )
    problems = "\n".join(problems_of(path, "data.max_length=-1"))
    assert "seed (line 1): Input should be a valid integer" in problems
    assert "data.text_colum (line 6): unknown key. Did you mean 'text_column'?" in problems
    assert "metrix (line 12): unknown key. Did you mean 'metrics'?" in problems
    assert "data.max_length (command-line override): Input should be greater than 0" in problems
    assert "training.learning_rat (line 9): unknown key: not a transformers.TrainingArguments field. Did you mean 'learning_rate'?" in problems
    assert "training.evaluation_strategy (line 10)" in problems and "use eval_strategy" in problems
    assert "training.num_train_epochs (line 11): Input should be a valid number" in problems
    assert len(problems.splitlines()) == 7


def test_missing_required_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", {"model": {"name_or_path": "x"}, "training": {"num_train_epochs": 1}})
    problems = "\n".join(problems_of(path))
    assert "data (line" not in problems  # data is absent entirely: reported without a line
    assert "data: required key is missing; add it." in problems
    assert "training.output_dir is required" in problems


def test_section_level_rules(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        {"model": {"name_or_path": "x", "from_config": {"model_type": "bert"}}, "data": {"train_file": "t.csv"}, "training": {"output_dir": "o"}},
    )
    assert any("set exactly one of model.name_or_path" in p for p in problems_of(path))


def test_training_arguments_own_checks_are_reported(good: Path) -> None:
    problems = problems_of(good, "training.eval_strategy=sometimes")
    assert any(p.startswith("training") and "sometimes" in p for p in problems)


FROM_SCRATCH = GOOD.replace(
    "  name_or_path: bert-base-uncased\n",
    "  from_config: {model_type: bert, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}\n"
    "tokenizer:\n  train: {type: wordpiece, vocab_size: 200}\n",
)


def test_tilde_override_removes_a_key_before_validation(tmp_path: Path) -> None:
    path = tmp_path / "scratch.yaml"
    path.write_text(FROM_SCRATCH)
    assert load_config("finetune", path).model.from_config["hidden_size"] == 32
    # The switch from a from-scratch config to a pretrained start (and its tokenizer).
    cfg = load_config("finetune", path, ["~model.from_config", "~tokenizer.train", "model.name_or_path=bert-base-uncased"])
    assert cfg.model.from_config is None and cfg.model.name_or_path == "bert-base-uncased"
    assert cfg.tokenizer.train is None
    # Without the removal both are set, which the schema refuses: the removal is what made it valid.
    assert any("set exactly one of model.name_or_path" in p for p in problems_of(path, "model.name_or_path=bert-base-uncased"))
    # A removed key takes the schema default; overrides apply in order (set, then remove; remove, then set).
    cfg = load_config("finetune", path, ["~data.text_column", "training.learning_rate=1", "~training.learning_rate"])
    assert cfg.data.text_column == "text" and "learning_rate" not in cfg.training
    cfg = load_config("finetune", path, ["~training", "training.output_dir=o"])
    assert cfg.training == {"output_dir": "o"}
    # A removed section is gone, its file lines with it: a required key under it is reported as missing.
    problems = problems_of(path, "~training")
    assert "training: required key is missing; add it." in problems and not any("line" in p for p in problems)


def test_tilde_override_errors_are_collected(tmp_path: Path) -> None:
    path = tmp_path / "scratch.yaml"
    path.write_text(FROM_SCRATCH)
    problems = problems_of(path, "~model.from_confg", "~modl.name", "~seed.x", "~model.from_config=1", "~", "~data..x")
    assert problems == [
        "override '~model.from_confg': nothing to remove, model has no key 'from_confg'. Did you mean 'from_config'?",
        "override '~modl.name': nothing to remove, the config has no top-level key 'modl'. Did you mean 'model'?",
        "override '~seed.x': nothing to remove, seed is a value (int), not a section.",
        "override '~model.from_config=1': ~ removes a key and takes no value; write ~model.from_config to remove it, "
        "or model.from_config=VALUE to set it",
        "override '~': expected ~key.path (e.g. ~model.from_config) to remove a key",
        "override '~data..x': expected ~key.path (e.g. ~model.from_config) to remove a key",
    ]
    # Removing a key twice: the second finds nothing (and lists what is there when nothing is close).
    twice = problems_of(path, "model.name_or_path=x", "~model.from_config", "~model.from_config")
    assert twice == ["override '~model.from_config': nothing to remove, model has no key 'from_config'. Keys there: name_or_path."]


def test_tilde_override_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "scratch.yaml"
    path.write_text(FROM_SCRATCH)
    # Typer takes a leading ~ as a plain argument: no `--` needed, before or after other overrides.
    result = runner.invoke(app, ["validate", str(path), "~model.from_config", "model.name_or_path=bert-base-uncased", "~tokenizer.train"])
    assert result.exit_code == 0, result.stderr
    import json

    config = json.loads(result.stdout)["config"]
    assert config["model"]["from_config"] is None and config["model"]["name_or_path"] == "bert-base-uncased"
    assert config["tokenizer"]["train"] is None
    assert "~key.path removes a key" in " ".join(runner.invoke(app, ["finetune", "--help"]).stdout.split())


def test_bad_override_syntax(good: Path) -> None:
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config("finetune", good, ["training.learning_rate"])


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\nmodel:\n  name_or_path: [x\n")
    with pytest.raises(UserError, match=r"broken.yaml:\d+:\d+: invalid YAML"):
        load_config("finetune", path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="top level of a config must be a mapping"):
        load_config("finetune", path)


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        (None, [], "config file not found"),
        ("seed: 1\nmodel: {name_or_path: x}\ndata: {train_file: t.tsv, text_colum: s}\ntraining: {output_dir: o}\n", [], "Did you mean 'text_column'?"),
        ("a: [\n", [], "invalid YAML"),
        (GOOD, ["training.learning_rate"], "expected key.path=value"),
    ],
    ids=["missing-file", "unknown-key", "bad-yaml", "bad-override"],
)
def test_cli_reports_user_errors_with_exit_code_2_and_no_traceback(tmp_path: Path, content: str | None, args: list[str], expected: str) -> None:
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    for command in ("validate", "finetune"):
        result = runner.invoke(app, [command, str(path), *args])
        assert result.exit_code == 2, result.output
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_validate_prints_resolved_config_as_json(good: Path) -> None:
    result = runner.invoke(app, ["validate", str(good), "training.num_train_epochs=5"])
    assert result.exit_code == 0, result.output
    import json

    payload = json.loads(result.stdout)
    assert payload["command"] == "finetune"
    assert payload["config"]["training"]["num_train_epochs"] == 5
    assert payload["config"]["data"]["max_length"] == 128


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from conftest import run_cli

    proc = run_cli("validate", str(tmp_path / "missing.yaml"), "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_version_and_help() -> None:
    from llmtune import __version__

    assert runner.invoke(app, ["--version"]).stdout.strip() == f"llmtune {__version__}"
    result = runner.invoke(app, [])
    assert "finetune" in result.output and "validate" in result.output


def test_importing_the_cli_imports_no_heavy_library() -> None:
    from conftest import REPO
    import subprocess
    import sys

    code = "import sys, llmtune.cli; heavy = [m for m in ('torch', 'transformers', 'datasets', 'evaluate') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def test_yaml_1_2_scalars(good: Path) -> None:
    cfg = load_config("finetune", good, ["training.save_strategy=no", "training.bf16=false", "data.text_column=on"])
    assert cfg.training["save_strategy"] == "no"
    assert cfg.training["bf16"] is False
    assert cfg.data.text_column == "on"


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_commands_with_optional_config_need_a_config_or_a_model(command: str) -> None:
    result = runner.invoke(app, [command, "generation.max_new_tokens=5"])
    assert result.exit_code == 2
    assert f"{command} needs a CONFIG file or --model DIR" in result.stderr


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "accelerate" and "training:" in p.read_text()),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_a_saved_llmtune_yaml_loads_again(path: Path, tmp_path: Path) -> None:
    """The resolved config a run saves (every key written, defaults included) is itself a valid config of the command."""
    from llmtune.config import infer_command, read_yaml, save_config

    command = infer_command(read_yaml(path).data)
    cfg = load_config(command, path, check_model=False, on_this_machine=False)
    save_config(cfg, tmp_path / "llmtune.yaml")
    again = load_config(command, tmp_path / "llmtune.yaml", check_model=False, on_this_machine=False)
    assert again.model_dump(mode="json") == cfg.model_dump(mode="json")
