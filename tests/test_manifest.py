"""manifest.json: what a run was made with (versions, device, data hashes, command line, seed), in every output dir.

And the `--resume` check that reads it back: a config that cannot continue the run is refused, one that
only changes logging or saving continues and says what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import invoke, run_cli, sentiment_rows, stdout_json, tiny_classification_config, write_config, write_tsv

SECRET_ENV = {"HF_TOKEN": "hf_envSecretThatMustNotBeSaved42", "LLMTUNE_TEST_MARKER": "marker-value-from-the-environment-77"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny classification run, checkpointing every 3 steps (6 steps in all), with secrets in the environment."""
    tmp = tmp_path_factory.mktemp("manifest")
    train = write_tsv(tmp / "train.tsv", sentiment_rows(96, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(32, seed=2))
    out = tmp / "run"
    config = write_config(tmp / "cfg.yaml", tiny_classification_config(train, dev, out, save_strategy="steps", save_steps=3))
    args = ["finetune", str(config), "seed=7"]
    saved = {key: os.environ.get(key) for key in SECRET_ENV}
    os.environ.update(SECRET_ENV)
    try:
        proc = run_cli(*args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    stdout_json(proc)
    return {"out": out, "config": config, "train": train, "dev": dev, "args": args, "tmp": tmp}


def read_manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))


def test_manifest_records_versions_device_seed_and_command(run: dict) -> None:
    from llmtune import __version__

    manifest = read_manifest(run["out"])
    versions = manifest["versions"]
    assert versions["llmtune"] == __version__
    for name in ("torch", "transformers", "tokenizers", "datasets", "accelerate", "evaluate", "numpy"):
        assert versions[name] == version(name), name
    assert versions["python"].count(".") == 2
    assert manifest["device"]["type"] == "cpu" and manifest["device"]["name"]
    assert manifest["dtype"] == "fp32"
    assert manifest["seed"] == 7  # the override, not the file's 0
    assert manifest["world_size"] == 1
    started = datetime.fromisoformat(manifest["started_at"])
    assert started.tzinfo is not None
    command = manifest["command"]
    assert command["argv"][1:] == run["args"]
    assert Path(command["argv"][0]).name == "__main__.py"  # `python -m llmtune`
    assert command["shell"] == shlex.join(command["argv"])
    assert command["process_argv"][-len(run["args"]) - 2 :] == ["-m", "llmtune", *run["args"]]
    assert Path(command["cwd"]).is_dir()


def test_manifest_hashes_each_data_file(run: dict) -> None:
    data = {source["key"]: source for source in read_manifest(run["out"])["data"]}
    assert set(data) == {"data.train_file", "data.validation_file"}
    for key, path in (("data.train_file", run["train"]), ("data.validation_file", run["dev"])):
        assert data[key]["path"] == str(path.resolve())
        assert data[key]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert data[key]["bytes"] == path.stat().st_size


def test_manifest_holds_no_environment_values_or_tokens(run: dict) -> None:
    text = (run["out"] / "manifest.json").read_text(encoding="utf-8")
    for value in SECRET_ENV.values():
        assert value not in text
    assert "environ" not in text.lower() and "HF_TOKEN" not in text


def test_every_checkpoint_holds_the_config_and_the_manifest(run: dict) -> None:
    checkpoints = sorted(run["out"].glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-3", "checkpoint-6"]
    final = read_manifest(run["out"])
    for checkpoint in checkpoints:
        assert read_manifest(checkpoint) == final  # built once, when training started
        assert (checkpoint / "llmtune.yaml").read_bytes() == (run["out"] / "llmtune.yaml").read_bytes()
    assert not list(run["out"].rglob(".*.tmp")), "a temporary file was left behind"


def test_evaluate_output_dir_gets_a_manifest(run: dict, tmp_path: Path) -> None:
    result = invoke("evaluate", "--model", str(run["out"]), "--output-dir", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "eval")
    assert manifest["model"] == str(run["out"])
    assert manifest["seed"] == 7  # the training seed, read from the model's llmtune.yaml
    assert manifest["dtype"] == "fp32" and manifest["device"]["type"] == "cpu"
    [source] = manifest["data"]
    assert source["key"] == "data.validation_file"
    assert source["sha256"] == hashlib.sha256(run["dev"].read_bytes()).hexdigest()


# --- --resume against the checkpoint's llmtune.yaml ----------------------------------------------------


@pytest.fixture()
def copied_run(run: dict, tmp_path: Path) -> dict:
    """A private copy of the run (the resume tests change it)."""
    out = tmp_path / "run"
    shutil.copytree(run["out"], out)
    config = write_config(
        tmp_path / "cfg.yaml",
        tiny_classification_config(run["train"], run["dev"], out, save_strategy="steps", save_steps=3),
    )
    return {**run, "out": out, "config": config}


def test_resume_with_a_different_batch_size_is_refused_naming_the_key(copied_run: dict) -> None:
    out = copied_run["out"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = invoke("finetune", str(copied_run["config"]), "seed=7", "training.per_device_train_batch_size=8", "--resume")
    assert result.exit_code == 2, result.stderr[-3000:]
    message = result.stderr
    assert "training.per_device_train_batch_size: 16 in the run, 8 now" in message
    assert str(out / "checkpoint-6" / "llmtune.yaml") in message
    assert "start a new run" in message and "Traceback" not in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_names_every_breaking_difference(copied_run: dict) -> None:
    result = invoke(
        "finetune", str(copied_run["config"]), "seed=8", "data.max_length=16", "model.from_config.hidden_size=64",
        "training.gradient_accumulation_steps=2", "--resume",
    )
    assert result.exit_code == 2
    for part in (
        "seed: 7 in the run, 8 now",
        "data.max_length: 32 in the run, 16 now",
        "model.from_config.hidden_size: 32 in the run, 64 now",
        "training.gradient_accumulation_steps: 1 in the run, 2 now",
    ):
        assert part in result.stderr, result.stderr


def test_resume_refuses_a_data_file_whose_content_changed(copied_run: dict) -> None:
    checkpoint = copied_run["out"] / "checkpoint-6"
    manifest = read_manifest(checkpoint)
    manifest["data"][0]["sha256"] = "0" * 64  # as if train.tsv had been edited since
    (checkpoint / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = invoke("finetune", str(copied_run["config"]), "seed=7", "--resume")
    assert result.exit_code == 2
    assert "data.train_file (content): \"sha256 000000000000\" in the run" in result.stderr


def test_resume_with_only_a_logging_change_continues_and_lists_it(copied_run: dict) -> None:
    out = copied_run["out"]
    shutil.rmtree(out / "checkpoint-6")  # continue from step 3 of 6
    proc = run_cli("finetune", str(copied_run["config"]), "seed=7", "training.logging_steps=1", "--resume")
    metrics = stdout_json(proc)
    assert "training.logging_steps changed from 2.0 to 1.0" in proc.stderr
    assert "resuming from" in proc.stderr and str(out / "checkpoint-3") in proc.stderr
    assert metrics["train_epoch"] == 1.0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry][-3:] == [4, 5, 6]  # logged every step after the resume
    assert read_manifest(out)["resumed_from"] == str(out / "checkpoint-3")
